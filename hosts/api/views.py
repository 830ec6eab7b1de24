"""Inventory in the API: hypervisors, NICs, VFs, credentials (hosts.services and friends decide)."""

from django.db import transaction
from django.db.models import Count, Prefetch
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from api.exceptions import error_response
from api.viewsets import READ, ConsoleViewSet
from console.dispatch import BROKER_DOWN
from hosts import credentials as credential_services
from hosts import hostkeys, importers
from hosts import services as host_services
from hosts.filters import annotated_hosts, with_vf_usage
from hosts.models import Credential, LibvirtNetwork, Nic, VirtualFunction

from . import serializers as s
from .filters import HostApiFilter, LibvirtNetworkFilter, NicFilter, VfFilter

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
        return annotated_hosts().select_related("credential", "host_key_accepted_by").prefetch_related("intents")

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
        with transaction.atomic():
            ticket = host_services.request_discovery(host, request.user)
        host.refresh_from_db(fields=["discovery_requested_at"])
        if ticket is None:
            detail = "A discovery of this hypervisor is already queued or running; poll it."
        else:
            detail = "Discovery queued; poll the hypervisor until last_discovery_at changes."
        code = status.HTTP_202_ACCEPTED
        if ticket is not None and ticket.delayed:
            detail = BROKER_DOWN
            code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Response(
            {"host": host.pk, "discovery_requested_at": host.discovery_requested_at, "detail": detail}, status=code
        )

    @extend_schema(
        operation_id="hypervisors_discover_all",
        summary="Discover every hypervisor now (asynchronous)",
        request=None,
        responses={202: s.DiscoveryRequestSerializer},
    )
    @action(detail=False, methods=["post"], url_path="discover")
    def discover_all(self, request):
        with transaction.atomic():
            ticket = host_services.request_fleet_discovery(request.user)
        if ticket.delayed:
            return Response({"detail": BROKER_DOWN}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response(
            {"detail": "Discovery of the whole fleet queued (hosts with a discovery already pending are left out)."},
            status=status.HTTP_202_ACCEPTED,
        )

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
        queryset = with_vf_usage(Nic.objects.select_related("host"))
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


class LibvirtNetworkViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ConsoleViewSet):
    """The hosts' libvirt networks as discovered; `vf_pool` marks those that hand out VFs of a PF."""

    serializer_class = s.LibvirtNetworkSerializer
    filterset_class = LibvirtNetworkFilter
    action_permissions = {"list": READ, "retrieve": READ}

    def get_queryset(self):
        return LibvirtNetwork.objects.select_related("host")


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


