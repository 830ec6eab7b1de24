"""Changes in the API: the same services and four-eyes rules as the pages (changes.services, changes.approvals)."""

from django.db.models import Prefetch
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from api.pagination import NewestFirstCursorPagination
from api.viewsets import READ, ConsoleViewSet
from changes import approvals as change_approvals
from changes import retries as change_retries
from changes import services as change_services
from changes.filters import annotated_changes
from changes.models import Approval, HostRun, PlanItem, Rollout, Step

from . import serializers as s
from .filters import ChangeFilter, HostRunFilter, RolloutFilter, StepFilter

# ---------------------------------------------------------------------------------------------
# Changes
# ---------------------------------------------------------------------------------------------


class ChangeViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ConsoleViewSet):
    """Change requests. State changes go through changes.services / changes.approvals only:
    the four-eyes rule, the plan-hash binding and the state machine are enforced there."""

    filterset_class = ChangeFilter
    pagination_class = NewestFirstCursorPagination
    action_permissions = {
        "list": READ,
        "retrieve": READ,
        "plan": READ,
        "create": "operate",
        "partial_update": "operate",
        "preview": "operate",
        "submit": "operate",
        "cancel": "operate",
        "retry": "operate",
        "approve": "approve",
        "reject": "approve",
    }
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        queryset = annotated_changes()
        if self.action == "retrieve":
            queryset = queryset.prefetch_related(
                Prefetch("plan_items", queryset=PlanItem.objects.select_related("host").order_by("order")),
                Prefetch("approvals", queryset=Approval.objects.select_related("user")),
                Prefetch("rollouts", queryset=Rollout.objects.order_by("attempt")),
            )
        return queryset

    def get_serializer_class(self):
        return s.ChangeDetailSerializer if self.action == "retrieve" else s.ChangeSerializer

    def _detail(self, change_id, status_code=status.HTTP_200_OK):
        self.action = "retrieve"
        change = self.get_queryset().get(pk=change_id)
        return Response(
            s.ChangeDetailSerializer(change, context=self.get_serializer_context()).data, status=status_code
        )

    @extend_schema(
        summary="Request a change (a draft with its plan)",
        request=s.ChangeInputSerializer,
        responses={201: s.ChangeDetailSerializer},
    )
    def create(self, request):
        data = s.ChangeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        change = change_services.create_change(data.service_data(), request.user, request=request)
        return self._detail(change.pk, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Edit a draft or submitted change (a submitted one goes back to draft)",
        request=s.ChangeInputSerializer,
        responses=s.ChangeDetailSerializer,
    )
    def partial_update(self, request, pk=None):
        change = self.get_object()
        current = {
            "title": change.title,
            "reason": change.reason,
            "targets": change.targets,
            "operations": change.operations,
        }
        given = request.data if isinstance(request.data, dict) else {}
        merged = {**current, **given}
        if "policy" not in given:
            merged["policy"] = s.ChangeSerializer().get_policy(change)
        data = s.ChangeInputSerializer(data=merged)
        data.is_valid(raise_exception=True)
        change_services.update_change(change.pk, data.service_data(), request.user, request=request)
        return self._detail(change.pk)

    @extend_schema(
        summary="Validate and plan without saving (the wizard's preview)",
        request=s.ChangeInputSerializer,
        responses=s.PlanSerializer,
    )
    @action(detail=False, methods=["post"])
    def preview(self, request):
        data = s.ChangeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        _clean, plan = change_services.preview_plan(data.service_data())
        items = [
            {
                "id": 0,
                "order": p.order,
                "host": p.host.pk,
                "host_name": p.host.name,
                "before": p.plan.before,
                "after": p.plan.after,
                "actions": p.plan.actions,
                "errors": p.plan.errors,
                "warnings": p.plan.warnings,
                "item_hash": p.item_hash,
            }
            for p in plan.hosts
        ]
        return Response(
            {
                "change": 0,
                "plan_hash": plan.hash,
                "plan_computed_at": timezone.now(),
                "blocked": plan.blocked,
                "message": "; ".join(plan.errors),
                "items": items,
            }
        )

    @extend_schema(
        summary="The plan: per host before, after, actions, errors, warnings; and its hash",
        responses=s.PlanSerializer,
    )
    @action(detail=True, methods=["get"])
    def plan(self, request, pk=None):
        change = self.get_object()
        items = change.plan_items.select_related("host").order_by("order")
        return Response(
            {
                "change": change.pk,
                "plan_hash": change.plan_hash,
                "plan_computed_at": change.plan_computed_at,
                "blocked": change.plan_blocked,
                "message": change.state_message,
                "items": s.PlanItemSerializer(items, many=True).data,
            }
        )

    @extend_schema(
        summary="Submit for approval (re-plans; refused when the plan is blocked)",
        request=None,
        responses=s.ChangeDetailSerializer,
    )
    @action(detail=True, methods=["post"])
    def submit(self, request, pk=None):
        change = self.get_object()
        change_services.submit_change(change.pk, request.user, request=request)
        return self._detail(change.pk)

    @extend_schema(
        summary="Approve (not your own change; binds to approval_hash)",
        request=s.VoteSerializer,
        responses=s.ChangeDetailSerializer,
    )
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        return self._vote(request, s.VoteSerializer, change_approvals.approve)

    @extend_schema(
        summary="Reject with a comment (not your own change)",
        request=s.RejectSerializer,
        responses=s.ChangeDetailSerializer,
    )
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        return self._vote(request, s.RejectSerializer, change_approvals.reject)

    def _vote(self, request, serializer_class, decide):
        """The same service as the web page decides: the four-eyes rules are in one place."""
        change = self.get_object()
        data = serializer_class(data=request.data)
        data.is_valid(raise_exception=True)
        decide(
            change.pk,
            request.user,
            comment=data.validated_data["comment"],
            plan_hash=data.validated_data.get("plan_hash"),
            approval_hash=data.validated_data["approval_hash"],
            request=request,
        )
        return self._detail(change.pk)

    @extend_schema(
        summary="Cancel (pending hosts stop; running ones finish their step; not a rollback)",
        request=s.CancelSerializer,
        responses=s.ChangeDetailSerializer,
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        change = self.get_object()
        data = s.CancelSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        change_services.cancel_change(
            change.pk, request.user, reason=data.validated_data["reason"], request=request
        )
        return self._detail(change.pk)

    @extend_schema(
        summary="Retry the failed hosts of a finished change (same approved plan)",
        request=None,
        responses={201: s.RolloutDetailSerializer},
    )
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        change = self.get_object()
        rollout = change_retries.retry_change(change.pk, request.user, request=request)
        rollout = (
            Rollout.objects.select_related("created_by")
            .prefetch_related(
                Prefetch("host_runs", queryset=HostRun.objects.select_related("host", "rollout"))
            )
            .get(pk=rollout.pk)
        )
        return Response(s.RolloutDetailSerializer(rollout).data, status=status.HTTP_201_CREATED)


class RolloutViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ConsoleViewSet):
    filterset_class = RolloutFilter
    action_permissions = {"list": READ, "retrieve": READ}

    def get_queryset(self):
        runs = HostRun.objects.only("id", "rollout_id", "state")
        if self.action == "retrieve":
            runs = HostRun.objects.select_related("host", "rollout")
        return Rollout.objects.select_related("created_by").prefetch_related(
            Prefetch("host_runs", queryset=runs)
        )

    def get_serializer_class(self):
        return s.RolloutDetailSerializer if self.action == "retrieve" else s.RolloutSerializer


class HostRunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ConsoleViewSet):
    """Per-host execution; the detail carries the steps with their transcripts."""

    filterset_class = HostRunFilter
    action_permissions = {"list": READ, "retrieve": READ}

    def get_queryset(self):
        queryset = HostRun.objects.select_related("host", "rollout")
        if self.action == "retrieve":
            queryset = queryset.prefetch_related(Prefetch("steps", queryset=Step.objects.order_by("seq")))
        return queryset

    def get_serializer_class(self):
        return s.HostRunDetailSerializer if self.action == "retrieve" else s.HostRunSerializer


class StepViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ConsoleViewSet):
    """Each agent call: request, command, stdout, stderr, exit status, duration, agent sha256, result."""

    serializer_class = s.StepSerializer
    filterset_class = StepFilter
    action_permissions = {"list": READ, "retrieve": READ}

    def get_queryset(self):
        return Step.objects.all()


