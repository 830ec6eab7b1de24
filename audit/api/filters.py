"""Filters of the audit collection: the audit page's own filter set."""

import django_filters

from api.filters import MAX_ID
from audit.filters import AuditEventFilter


class AuditApiFilter(AuditEventFilter):
    """audit/filters.py's AuditEventFilter: q, actor, action, host, change, since, until."""

    change = django_filters.NumberFilter(
        field_name="change_id", label="Change", min_value=1, max_value=MAX_ID
    )

