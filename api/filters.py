"""What the API's filter sets share. Each app's filters are in its api/filters.py; they reuse the
UI's filter sets where those exist, so a query means the same on a page and in a script. The API
pages by cursor on the id, so the host list's `sort` filter is left out."""

import django_filters

MAX_ID = 2**63 - 1




def id_filter(field_name, label=None):
    return django_filters.NumberFilter(
        field_name=field_name, min_value=1, max_value=MAX_ID, label=label or field_name
    )


