"""The change list's filters: state and requester."""

import django_filters
from django.contrib.auth import get_user_model
from django.db.models import Count, F, Q

from .models import Approval, ChangeRequest


class ChangeFilter(django_filters.FilterSet):
    state = django_filters.MultipleChoiceFilter(choices=ChangeRequest.State.choices)
    requested_by = django_filters.ModelChoiceFilter(
        queryset=get_user_model().objects.filter(changes__isnull=False).distinct().order_by("username"),
        label="Requester",
    )
    q = django_filters.CharFilter(method="search", label="Search")

    class Meta:
        model = ChangeRequest
        fields = ["state", "requested_by"]

    def search(self, queryset, name, value):
        return queryset.filter(Q(title__icontains=value) | Q(reason__icontains=value))


def annotated_changes():
    """Changes with the per-row figures the list shows (one query whatever the rows)."""
    return ChangeRequest.objects.select_related("requested_by").annotate(
        host_count=Count("plan_items", distinct=True),
        approvals_in=Count(
            "approvals__user",
            distinct=True,
            filter=Q(approvals__decision=Approval.Decision.APPROVE)
            & Q(approvals__plan_hash=F("plan_hash"))
            & Q(approvals__submission=F("submission")),
        ),
    )
