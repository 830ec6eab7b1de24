import ipaddress
import re
import uuid
from contextvars import ContextVar

from django.conf import settings

# The current request's id and client address, for audit events recorded deep in services.
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)
current_client_ip: ContextVar[str | None] = ContextVar("current_client_ip", default=None)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9-]{8,64}$")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def client_ip(request) -> str | None:
    """REMOTE_ADDR, or the proxy's X-Forwarded-For when the proxy is trusted (HTTPS deployments).

    The *last* entry is the one our proxy added; earlier entries come from the client and can be
    forged (which would let a client dodge login throttling by address and lie in the audit).
    """
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None):
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        candidate = forwarded.split(",")[-1].strip()
        if candidate and _is_ip(candidate):  # garbage would break inet columns (audit, lockout)
            return candidate
    return request.META.get("REMOTE_ADDR")


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        request.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        id_token = current_request_id.set(request.request_id)
        ip_token = current_client_ip.set(client_ip(request))
        try:
            response = self.get_response(request)
        finally:
            current_request_id.reset(id_token)
            current_client_ip.reset(ip_token)
        response["X-Request-ID"] = request.request_id
        return response


class ContentSecurityPolicyMiddleware:
    """No inline script anywhere: htmx is a static file and configured by attributes."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response
