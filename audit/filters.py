"""Filters of the audit page and the export (the same FilterSet, so an export is what the page shows)."""

import datetime

import django_filters
from django import forms
from django.apps import apps
from django.db import connection
from django.db.models import BooleanField, Q
from django.db.models.expressions import RawSQL
from django.urls import reverse_lazy

from .models import AuditEvent

# One text expression searched by `q`. On PostgreSQL a pg_trgm GIN index on exactly this expression
# (migration 0002) serves the LIKE; on SQLite it is a scan bounded by the keyset page.
SEARCH_SQL = {
    "postgresql": "upper(object_repr || ' ' || actor_name || ' ' || host_name || ' ' || data::text) "
    "LIKE upper(%s)",
    "sqlite": "upper(object_repr || ' ' || actor_name || ' ' || host_name || ' ' || data) "
    "LIKE upper(%s) ESCAPE '\\'",
}


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


MAX_ID = 2**63 - 1  # a bigint: larger numbers would be a database error, not "no match"


class IdFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField


def _utc_midnight(day):
    return datetime.datetime.combine(day, datetime.time.min, tzinfo=datetime.UTC)


class DateInput(forms.DateInput):
    input_type = "date"


class AuditEventFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(label="Search", method="search", max_length=200)
    actor = django_filters.CharFilter(
        field_name="actor_name", lookup_expr="startswith", label="Actor", max_length=150,
        help_text="A user name or its beginning.",
    )
    action = django_filters.CharFilter(
        field_name="action",
        lookup_expr="startswith",
        label="Action",
        max_length=100,
        help_text="A name or a prefix such as change.",
    )
    host = django_filters.CharFilter(
        label="Host", method="filter_host", max_length=63,
        help_text="A host name; suggestions as you type.",
        # htmx fills the <datalist> with matching names while typing (audit.views.host_names).
        widget=forms.TextInput(attrs={
            "list": "audit-host-names", "autocomplete": "off", "placeholder": "host name",
            "hx-get": reverse_lazy("audit:host_names"), "hx-trigger": "input changed delay:200ms",
            "hx-target": "#audit-host-names", "hx-swap": "innerHTML", "hx-push-url": "false",
            "hx-sync": "this:queue last",  # never abort one: htmx logs an aborted request as an error
        }),
    )
    change = IdFilter(field_name="change_id", label="Change", min_value=1, max_value=MAX_ID)
    since = django_filters.DateFilter(label="From", method="filter_since", widget=DateInput)
    until = django_filters.DateFilter(label="To (inclusive)", method="filter_until", widget=DateInput)

    class Meta:
        model = AuditEvent
        fields = []

    def search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        sql = SEARCH_SQL[connection.vendor]
        return queryset.filter(RawSQL(sql, [_like_pattern(value)], output_field=BooleanField()))

    def filter_host(self, queryset, name, value):
        """A host name: its events under that name, and those of the host that has it now (renamed
        since). All digits is also read as a host id (links and bookmarks of earlier versions)."""
        value = value.strip()
        if not value:
            return queryset
        hypervisors = apps.get_model("hosts", "Hypervisor").objects.filter(name=value).values("pk")
        match = Q(host_name=value) | Q(host_id__in=hypervisors)
        if value.isdigit():
            match |= Q(host_id=int(value)) if int(value) <= MAX_ID else Q()
        return queryset.filter(match)

    # Dates are whole UTC days (the console's time zone).
    def filter_since(self, queryset, name, value):
        return queryset.filter(created_at__gte=_utc_midnight(value))

    def filter_until(self, queryset, name, value):
        return queryset.filter(created_at__lt=_utc_midnight(value + datetime.timedelta(days=1)))

    def used(self) -> dict:
        """The filters in effect (for the export's own audit event and the page's links)."""
        if not self.is_bound or not self.is_valid():
            return {}
        return {k: str(v) for k, v in self.form.cleaned_data.items() if v not in (None, "")}
