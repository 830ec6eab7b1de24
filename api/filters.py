"""Filters of the API collections: the UI's own filter sets where they exist (hosts/filters.py,
audit/filters.py), so a query means the same on a page and in a script; small ones for the rest.

The API pages by cursor on the id, so the host list's `sort` filter is left out here.
"""

import django_filters
from django.db.models import Exists, OuterRef, Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from audit.filters import AuditEventFilter
from changes.filters import ChangeFilter as UiChangeFilter
from changes.models import HostRun, PlanItem, Rollout, Step
from hosts.filters import YES_NO, HostFilterSet
from hosts.models import Nic, VirtualFunction

MAX_ID = 2**63 - 1


def id_filter(field_name, label=None):
    return django_filters.NumberFilter(
        field_name=field_name, min_value=1, max_value=MAX_ID, label=label or field_name
    )


class HostApiFilter(HostFilterSet):
    """hosts/filters.py's HostFilterSet: q, label, status, driver, sriov, iommu, drifted, key."""

    # Same filtering; the annotations only tell the schema these take a name (a string).
    @extend_schema_field(OpenApiTypes.STR)
    def filter_label(self, queryset, name, value):
        return super().filter_label(queryset, name, value)

    @extend_schema_field(OpenApiTypes.STR)
    def filter_driver(self, queryset, name, value):
        return super().filter_driver(queryset, name, value)


HostApiFilter.base_filters.pop("sort", None)


class AuditApiFilter(AuditEventFilter):
    """audit/filters.py's AuditEventFilter: q, actor, action, host, change, since, until."""

    change = django_filters.NumberFilter(
        field_name="change_id", label="Change", min_value=1, max_value=MAX_ID
    )


class NicFilter(django_filters.FilterSet):
    host = id_filter("host_id", "Host id")
    host_name = django_filters.CharFilter(field_name="host__name", max_length=63)
    name = django_filters.CharFilter(field_name="name", max_length=15)
    driver = django_filters.CharFilter(field_name="driver", max_length=50)
    pci_address = django_filters.CharFilter(field_name="pci_address", max_length=12)
    sriov = django_filters.ChoiceFilter(choices=YES_NO, method="filter_sriov", label="SR-IOV capable")
    present = django_filters.BooleanFilter(field_name="present")

    class Meta:
        model = Nic
        fields = []

    def filter_sriov(self, queryset, name, value):
        capable = Q(sriov_totalvfs__gt=0)
        return queryset.filter(capable) if value == "yes" else queryset.exclude(capable)


class VfFilter(django_filters.FilterSet):
    nic = id_filter("nic_id", "NIC id")
    host = id_filter("nic__host_id", "Host id")
    present = django_filters.BooleanFilter(field_name="present")
    in_use = django_filters.BooleanFilter(method="filter_in_use", label="Used by a guest")

    class Meta:
        model = VirtualFunction
        fields = []

    def filter_in_use(self, queryset, name, value):
        return queryset.exclude(guest="") if value else queryset.filter(guest="")


class ChangeFilter(UiChangeFilter):
    """changes/filters.py's ChangeFilter: state (repeatable), requested_by, q; plus host. The
    requester is given by user id (as the page's select) or by user name."""

    requested_by = django_filters.CharFilter(method="filter_requested_by", max_length=150,
                                             label="Requester (user id or name)")
    q = django_filters.CharFilter(method="search", max_length=200, label="Search title and reason")
    host = django_filters.NumberFilter(method="filter_host", min_value=1, max_value=MAX_ID,
                                       label="Targets this host id")

    class Meta(UiChangeFilter.Meta):
        fields = []

    def filter_host(self, queryset, name, value):
        return queryset.filter(Exists(PlanItem.objects.filter(change=OuterRef("pk"), host_id=int(value))))

    def filter_requested_by(self, queryset, name, value):
        value = value.strip()
        if value.isdigit():
            return queryset.filter(requested_by_id=int(value))
        return queryset.filter(requested_by__username=value) if value else queryset


class RolloutFilter(django_filters.FilterSet):
    change = id_filter("change_id", "Change id")
    state = django_filters.MultipleChoiceFilter(choices=Rollout.State.choices)

    class Meta:
        model = Rollout
        fields = []


class HostRunFilter(django_filters.FilterSet):
    rollout = id_filter("rollout_id", "Rollout id")
    change = id_filter("rollout__change_id", "Change id")
    host = id_filter("host_id", "Host id")
    state = django_filters.MultipleChoiceFilter(choices=HostRun.State.choices)

    class Meta:
        model = HostRun
        fields = []


class StepFilter(django_filters.FilterSet):
    host_run = id_filter("host_run_id", "Host run id")
    rollout = id_filter("host_run__rollout_id", "Rollout id")
    change = id_filter("host_run__rollout__change_id", "Change id")
    host = id_filter("host_run__host_id", "Host id")
    ok = django_filters.BooleanFilter(field_name="ok")
    kind = django_filters.ChoiceFilter(choices=Step.Kind.choices)

    class Meta:
        model = Step
        fields = []
