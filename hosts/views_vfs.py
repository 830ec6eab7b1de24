"""The fleet-wide VF usage page: every present VF by host, PF and guest, filterable, and the free
VFs per PF. A constant number of queries per page whatever the fleet size (paged rows, with their
host and NIC joined; the per-PF counts aggregated by the database)."""

from django.core.paginator import Paginator
from django.urls import reverse
from django.views.decorators.http import require_GET

from console.htmx import render_page, wants_partial
from console.roles import require_permission

from .filters import VfUsageFilterSet, free_per_pf, usage_vfs
from .models import VirtualFunction

VFS_PER_PAGE = 100
PFS_PER_PAGE = 50


def usage_context(request) -> tuple[dict, int]:
    params = request.GET
    filterset = VfUsageFilterSet(params or None, queryset=usage_vfs())
    status = 200
    rows = filterset.qs if not filterset.is_bound or filterset.is_valid() else VirtualFunction.objects.none()
    if filterset.is_bound and not filterset.is_valid():
        status = 400
    page = Paginator(rows, VFS_PER_PAGE).get_page(params.get("page"))
    pfs = Paginator(free_per_pf(params) if status == 200 else [], PFS_PER_PAGE).get_page(params.get("pf_page"))
    query = params.copy()
    for key in ("page", "pf_page"):
        query.pop(key, None)
    return {
        "filter": filterset, "form": filterset.form, "page": page, "vfs": list(page.object_list),
        "pfs": pfs, "query": query.urlencode(), "is_partial": wants_partial(request),
        "usage_url": reverse("hosts:vf_usage"),
    }, status


@require_GET
@require_permission("view_fleet")
def vf_usage(request):
    context, status = usage_context(request)
    return render_page(request, "hosts/vf_usage.html", context, partial="hosts/_vf_usage.html", status=status)
