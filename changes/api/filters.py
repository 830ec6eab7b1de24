"""Filters of the change collections."""

import django_filters
from django.db.models import Exists, OuterRef

from api.filters import MAX_ID, id_filter
from changes.filters import ChangeFilter as UiChangeFilter
from changes.models import HostRun, PlanItem, Rollout, Step


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
