"""REST API views (/api/v1/). Thin: type checks in serializers, every write through the services
the web views call (hosts.services, hosts.credentials, hosts.hostkeys, changes.services,
changes.approvals), every permission from console/roles.py via api.permissions.ConsolePermission.

Each view declares the console permission of each of its actions (`action_permissions`).
"""

from django.db.models import Count, Prefetch
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from audit.models import AuditEvent
from audit.services import record
from changes import approvals as change_approvals
from changes import services as change_services
from changes.filters import annotated_changes
from changes.models import Approval, HostRun, PlanItem, Rollout, Step
from console.roles import PERMISSIONS, has_permission, user_roles
from hosts import credentials as credential_services
from hosts import hostkeys, importers
from hosts import services as host_services
from hosts.filters import annotated_hosts
from hosts.models import Credential, Nic, VirtualFunction

from . import serializers as s
from .authentication import BearerTokenAuthentication
from .exceptions import error_response
from .filters import (
    AuditApiFilter,
    ChangeFilter,
    HostApiFilter,
    HostRunFilter,
    NicFilter,
    RolloutFilter,
    StepFilter,
    VfFilter,
)
from .models import ApiToken
from .pagination import NewestFirstCursorPagination
from .permissions import DeclaredPermissionMixin
from .tokens import create_token, revoke_token

READ = "view_fleet"


class ConsoleViewSet(DeclaredPermissionMixin, viewsets.GenericViewSet):
    action_permissions: dict[str, str] = {}


class ConsoleAPIView(DeclaredPermissionMixin, APIView):
    method_permissions: dict[str, str] = {}


# ---------------------------------------------------------------------------------------------
# Root and the current user
# ---------------------------------------------------------------------------------------------


class ApiRootView(ConsoleAPIView):
    """The collections of the API."""

    method_permissions = {"GET": READ}
    name = "SR-IOV Console API"

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, format=None):
        names = [
            "hypervisor",
            "nic",
            "vf",
            "credential",
            "change",
            "rollout",
            "hostrun",
            "step",
            "auditevent",
            "token",
        ]
        links = {name: reverse(f"api:{name}-list", request=request) for name in names}
        links["me"] = reverse("api:me", request=request)
        links["schema"] = reverse("api:schema", request=request)
        links["docs"] = reverse("api:docs", request=request)
        return Response(links)


class MeView(ConsoleAPIView):
    """Who the request is authenticated as, with roles and permissions (check a token with it)."""

    method_permissions = {"GET": READ}

    @extend_schema(responses=s.MeSerializer)
    def get(self, request):
        user = request.user
        by = "token" if isinstance(request.successful_authenticator, BearerTokenAuthentication) else "session"
        return Response(
            s.MeSerializer(
                {
                    "username": user.get_username(),
                    "roles": user_roles(user),
                    "permissions": [code for code in PERMISSIONS if has_permission(user, code)],
                    "authenticated_by": by,
                }
            ).data
        )


# ---------------------------------------------------------------------------------------------
# Inventory
# ---------------------------------------------------------------------------------------------


def _host_response(host_id, request, status_code=status.HTTP_200_OK):
    host = annotated_hosts().select_related("credential", "host_key_accepted_by").get(pk=host_id)
    return Response(s.HostSerializer(host, context={"request": request}).data, status=status_code)


@extend_schema_view(
    list=extend_schema(summary="List hypervisors (filters as on the hosts page)"),
    retrieve=extend_schema(summary="One hypervisor with its observed facts"),
)
class HypervisorViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ConsoleViewSet):
    serializer_class = s.HostSerializer
    filterset_class = HostApiFilter
    action_permissions = {
        "list": READ,
        "retrieve": READ,
        "create": "operate",
        "partial_update": "operate",
        "import_hosts": "operate",
        "discover": "operate",
        "discover_all": "operate",
        "host_key": "administer",
        "accept_host_key": "administer",
        "destroy": "operate",
    }
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return annotated_hosts().select_related("credential", "host_key_accepted_by")

    @extend_schema(
        summary="Register a hypervisor", request=s.HostInputSerializer, responses={201: s.HostSerializer}
    )
    def create(self, request):
        data = s.HostInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        host = host_services.create_host(dict(data.validated_data), request.user, request=request)
        return _host_response(host.pk, request, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Change a hypervisor's registration",
        request=s.HostInputSerializer,
        responses=s.HostSerializer,
    )
    def partial_update(self, request, pk=None):
        host = self.get_object()
        data = s.HostInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        host_services.update_host(host, dict(data.validated_data), request.user, request=request)
        return _host_response(host.pk, request)

    @extend_schema(
        summary="Remove a hypervisor from the inventory (409 while a change names it)", responses={204: None}
    )
    def destroy(self, request, pk=None):
        host_services.delete_host(self.get_object(), request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Import hypervisors (CSV, Ansible INI/YAML, or rows); all or nothing",
        request=s.HostImportSerializer,
        responses={201: s.ImportResultSerializer, 200: s.ImportResultSerializer},
    )
    @action(detail=False, methods=["post"], url_path="import")
    def import_hosts(self, request):
        data = s.HostImportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        opts = data.validated_data
        if "text" in opts:
            fmt = opts.get("format") or importers.guess_format("", opts["text"])
            try:
                rows = importers.parse(opts["text"], fmt)
            except importers.ParseError as exc:
                return error_response("invalid", str(exc), 400, {"text": [str(exc)]})
            source = f"api ({fmt})"
        else:
            rows = []
            row_errors = {}
            for number, row in enumerate(opts["rows"], start=1):
                row_input = s.HostInputSerializer(data=row, partial=True)
                if not row_input.is_valid():
                    for field, messages in row_input.errors.items():
                        row_errors[f"rows.{number - 1}.{field}"] = [str(m) for m in messages]
                    continue
                unknown = set(row) - set(s.HostInputSerializer().fields)
                if unknown:
                    row_errors[f"rows.{number - 1}"] = [
                        f"Unknown fields: {', '.join(sorted(map(str, unknown)))}."
                    ]
                    continue
                rows.append({**row_input.validated_data, "line": number})
            if row_errors:
                return error_response(
                    "invalid", "Some rows are invalid; nothing was imported.", 400, row_errors
                )
            source = "api"
        report = host_services.import_hosts(
            rows,
            request.user,
            opts.get("default_credential") or None,
            update_existing=opts["update_existing"],
            source=source,
            request=request,
            dry_run=opts["dry_run"],
        )
        if report.errors:
            details = [
                {"line": e.line, "host": e.host, "field": e.field, "message": e.message}
                for e in report.errors
            ]
            fields = {}
            for e in report.errors:
                fields.setdefault(f"line {e.line}" if e.line else "rows", []).append(str(e))
            return error_response("invalid", report.summary(), 400, fields, rows=details)
        body = s.ImportResultSerializer(
            {
                "dry_run": report.dry_run,
                "created": [h.name for h in report.created],
                "updated": [h.name for h in report.updated],
                "unchanged": [h.name for h in report.unchanged],
                "summary": report.summary(),
            }
        ).data
        return Response(body, status=status.HTTP_200_OK if report.dry_run else status.HTTP_201_CREATED)

    @extend_schema(
        summary="Discover this hypervisor now (asynchronous)",
        request=None,
        responses={202: s.DiscoveryRequestSerializer},
    )
    @action(detail=True, methods=["post"])
    def discover(self, request, pk=None):
        host = self.get_object()
        host_services.request_discovery(host, request.user)
        return Response(
            {
                "host": host.pk,
                "discovery_requested_at": host.discovery_requested_at,
                "detail": "Discovery queued; poll the hypervisor until last_discovery_at changes.",
            },
            status=status.HTTP_202_ACCEPTED,
        )

    @extend_schema(
        operation_id="hypervisors_discover_all",
        summary="Discover every hypervisor now (asynchronous)",
        request=None,
        responses={202: s.DiscoveryRequestSerializer},
    )
    @action(detail=False, methods=["post"], url_path="discover")
    def discover_all(self, request):
        host_services.request_fleet_discovery(request.user)
        return Response({"detail": "Discovery of the whole fleet queued."}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(summary="The pinned and the pending SSH host key", responses=s.HostKeySerializer)
    @action(detail=True, methods=["get"], url_path="host-key")
    def host_key(self, request, pk=None):
        return Response(s.HostKeySerializer(self.get_object()).data)

    @extend_schema(
        summary="Accept the pending SSH host key (first key, or the new key after a mismatch)",
        request=s.AcceptHostKeySerializer,
        responses=s.HostKeySerializer,
    )
    @action(detail=True, methods=["post"], url_path="host-key/accept")
    def accept_host_key(self, request, pk=None):
        host = self.get_object()
        data = s.AcceptHostKeySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        host = hostkeys.accept_host_key(
            host,
            request.user,
            data.validated_data["reason"],
            fingerprint=data.validated_data.get("fingerprint"),
        )
        return Response(s.HostKeySerializer(host).data)


class NicViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ConsoleViewSet):
    """Physical functions (NICs) as discovered; the VFs are in the detail and under /vfs/."""

    filterset_class = NicFilter
    action_permissions = {"list": READ, "retrieve": READ}

    def get_queryset(self):
        queryset = Nic.objects.select_related("host")
        if self.action == "retrieve":
            queryset = queryset.prefetch_related(
                Prefetch("vfs", queryset=VirtualFunction.objects.select_related("nic__host").order_by("index"))
            )
        return queryset

    def get_serializer_class(self):
        return s.NicDetailSerializer if self.action == "retrieve" else s.NicSerializer


class VfViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ConsoleViewSet):
    serializer_class = s.VfSerializer
    filterset_class = VfFilter
    action_permissions = {"list": READ, "retrieve": READ}

    def get_queryset(self):
        return VirtualFunction.objects.select_related("nic__host")


class CredentialViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ConsoleViewSet):
    """SSH credentials. The private key goes in (create, rotate) and never comes out."""

    serializer_class = s.CredentialSerializer
    pagination_class = None
    filterset_class = None
    action_permissions = {
        "list": "administer",
        "retrieve": "administer",
        "create": "administer",
        "partial_update": "administer",
        "destroy": "administer",
        "rotate": "administer",
    }
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return Credential.objects.annotate(host_count=Count("hosts")).order_by("name")

    def _respond(self, credential, status_code=status.HTTP_200_OK):
        credential = self.get_queryset().get(pk=credential.pk)
        return Response(s.CredentialSerializer(credential).data, status=status_code)

    @extend_schema(
        summary="Add a credential (the private key is stored encrypted, never returned)",
        request=s.CredentialCreateSerializer,
        responses={201: s.CredentialSerializer},
    )
    def create(self, request):
        data = s.CredentialCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        credential = credential_services.create_credential(
            v["name"], v["private_key"], v["username"], actor=request.user
        )
        return self._respond(credential, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Rename a credential or change its SSH user",
        request=s.CredentialUpdateSerializer,
        responses=s.CredentialSerializer,
    )
    def partial_update(self, request, pk=None):
        credential = self.get_object()
        data = s.CredentialUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        credential_services.update_credential(
            credential,
            name=data.validated_data.get("name", credential.name),
            username=data.validated_data.get("username", credential.username),
            actor=request.user,
        )
        return self._respond(credential)

    @extend_schema(
        summary="Rotate: replace the key pair",
        request=s.CredentialRotateSerializer,
        responses=s.CredentialSerializer,
    )
    @action(detail=True, methods=["post"])
    def rotate(self, request, pk=None):
        credential = self.get_object()
        data = s.CredentialRotateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        credential_services.replace_key_pair(
            credential, data.validated_data["private_key"], actor=request.user
        )
        return self._respond(credential)

    @extend_schema(summary="Delete an unused credential (409 while hosts use it)", responses={204: None})
    def destroy(self, request, pk=None):
        credential_services.delete_credential(self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


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
        rollout = change_services.retry_change(change.pk, request.user, request=request)
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


# ---------------------------------------------------------------------------------------------
# Audit
# ---------------------------------------------------------------------------------------------


class IgnoreFormatNegotiation(DefaultContentNegotiation):
    """The export's `format` parameter picks CSV or JSON Lines, not a DRF renderer."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return (renderers[0], renderers[0].media_type)


EXPORT_PARAMETERS = [
    OpenApiParameter("format", str, enum=["csv", "jsonl"], default="csv", description="csv or jsonl"),
]


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ConsoleViewSet):
    """The append-only audit trail, newest first (filters as on the audit page)."""

    serializer_class = s.AuditEventSerializer
    filterset_class = AuditApiFilter
    pagination_class = NewestFirstCursorPagination
    action_permissions = {"list": "audit", "retrieve": "audit", "export": "audit"}

    def get_queryset(self):
        return AuditEvent.objects.all()

    @extend_schema(
        summary="Stream the filtered events, oldest first, as CSV or JSON Lines (audited)",
        parameters=EXPORT_PARAMETERS,
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR),
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.STR),
        },
    )
    @action(
        detail=False,
        methods=["get"],
        content_negotiation_class=IgnoreFormatNegotiation,
        pagination_class=None,
    )
    def export(self, request):
        from audit import views as audit_views  # the audit app's streaming writers

        fmt = request.query_params.get("format", "csv")
        if fmt not in ("csv", "jsonl"):
            return error_response("invalid", "format must be csv or jsonl", 400, {"format": ["csv or jsonl"]})
        filterset = AuditApiFilter(request.query_params, queryset=AuditEvent.objects.all(), request=request)
        if not filterset.is_valid():
            fields = {k: [str(m) for m in v] for k, v in filterset.errors.items()}
            return error_response("invalid", "Some filters are invalid; see fields.", 400, fields)
        record(
            "audit.exported",
            actor=request.user,
            request=request,
            data={"format": fmt, "filter": filterset.used(), "via": "api"},
        )
        rows = filterset.qs.order_by("id").values_list(*audit_views.EXPORT_FIELDS).iterator(chunk_size=2000)
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        if fmt == "csv":
            response = StreamingHttpResponse(
                audit_views._csv_rows(rows), content_type="text/csv; charset=utf-8"
            )
        else:
            response = StreamingHttpResponse(
                audit_views._jsonl_rows(rows), content_type="application/x-ndjson; charset=utf-8"
            )
        response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
        return response


# ---------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------


class TokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ConsoleViewSet):
    """Your own API tokens. Create (shown once; only from a logged-in browser session), list,
    revoke (DELETE). Tokens of others are not visible."""

    serializer_class = s.ApiTokenSerializer
    filterset_class = None
    action_permissions = {"list": READ, "retrieve": READ, "create": READ, "destroy": READ}
    http_method_names = ["get", "post", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return ApiToken.objects.none()
        return ApiToken.objects.filter(user=self.request.user).select_related("user")

    @extend_schema(
        summary="Create a token (returned once; needs a session, not a token)",
        request=s.ApiTokenCreateSerializer,
        responses={201: s.ApiTokenCreatedSerializer},
    )
    def create(self, request):
        if isinstance(request.successful_authenticator, BearerTokenAuthentication):
            return error_response(
                "permission_denied",
                "Tokens are created from a logged-in browser session (/api/tokens/), not with another token.",
                403,
            )
        data = s.ApiTokenCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        token, text = create_token(
            request.user,
            data.validated_data["name"],
            expires_at=data.validated_data["expires_at"],
            request=request,
        )
        body = s.ApiTokenCreatedSerializer(token, context={"token_text": text}).data
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Revoke a token (it stops working at once)", responses={204: None})
    def destroy(self, request, pk=None):
        revoke_token(self.get_object(), request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)
