"""/metrics in the Prometheus text format, for a bearer token or an allowed address."""

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from console.middleware import client_ip

from .collectors import DatabaseCollector, ProcessFilesCollector


def _allowed(request) -> bool:
    token = settings.METRICS_TOKEN
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if token and header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip().encode(), token.encode()):
        return True
    address = client_ip(request)
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in network for network in settings.METRICS_ALLOWED_NETWORKS)


@require_GET
def metrics(request):
    """Public URL, own access rule: no session; a token (METRICS_TOKEN) or an allowed address."""
    if not _allowed(request):
        response = HttpResponse("metrics need a bearer token or an allowed address\n", status=403,
                                content_type="text/plain")
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    registry.register(ProcessFilesCollector(settings.METRICS_COLLECT_DIR))
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
