"""The audit trail in the API: list, one event, and the streamed export (audit.export, as the page)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.negotiation import DefaultContentNegotiation

from api.exceptions import error_response
from api.pagination import NewestFirstCursorPagination
from api.viewsets import ConsoleViewSet
from audit.export import FORMATS, streaming_response
from audit.models import AuditEvent
from audit.services import record

from . import serializers as s
from .filters import AuditApiFilter


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
        fmt = request.query_params.get("format", "csv")
        if fmt not in FORMATS:
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
        return streaming_response(filterset.qs, fmt)
