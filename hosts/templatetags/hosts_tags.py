"""Small display helpers of the host pages."""

from django import template

register = template.Library()

STATUS_CLASSES = {
    "reachable": "ok",
    "unknown": "",
    "host_key_pending": "warn",
    "unreachable": "bad",
    "auth_failed": "bad",
    "host_key_mismatch": "bad",
    "error": "bad",
}


@register.filter
def status_class(status: str) -> str:
    """The badge class of a host status: ok / warn / bad, or none for 'unknown'."""
    return STATUS_CLASSES.get(status, "")


@register.filter
def yes_no_unknown(value) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


@register.simple_tag(takes_context=True)
def sort_url(context, key: str) -> str:
    """The list URL sorted by `key` (toggling direction when already sorted by it), page reset."""
    request = context["request"]
    params = request.GET.copy()
    current = params.get("sort") or "name"
    params["sort"] = f"-{key}" if current == key else key
    params.pop("page", None)
    return f"{request.path}?{params.urlencode()}"


@register.simple_tag(takes_context=True)
def aria_sort(context, key: str) -> str:
    current = context["request"].GET.get("sort") or "name"
    if current == key:
        return "ascending"
    if current == f"-{key}":
        return "descending"
    return "none"
