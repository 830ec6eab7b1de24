from django.db.models import Count, Q, Sum
from django.http import HttpResponsePermanentRedirect
from django.shortcuts import render
from django.templatetags.static import static
from django.views.decorators.http import require_GET

from hosts.filters import KEY_PENDING
from hosts.models import Hypervisor, Nic

from .htmx import render_page
from .roles import record_denied, require_permission, url_object_model, user_roles

STATUS = Hypervisor.Status


def fleet_summary() -> dict:
    """The dashboard's figures in two aggregate queries, whatever the fleet size: the host rows
    (which keep their NIC figures) and the NICs per driver."""
    status_counts = {f"status_{value}": Count("pk", filter=Q(status=value)) for value in STATUS.values}
    hosts = Hypervisor.objects.aggregate(
        total=Count("pk"),
        iommu_on=Count("pk", filter=Q(iommu_active=True)),
        iommu_off=Count("pk", filter=Q(iommu_active=False)),
        drifted=Count("pk", filter=Q(drifted=True)),
        key_pending=Count("pk", filter=KEY_PENDING),
        key_mismatch=Count("pk", filter=Q(status=STATUS.HOST_KEY_MISMATCH)),
        discovery_failed=Count("pk", filter=Q(last_discovery_ok=False)),
        sriov_nic_total=Sum("sriov_nics"),
        sriov_hosts=Count("pk", filter=Q(sriov_nics__gt=0)),
        vfs_configured_total=Sum("vfs_configured"),
        vfs_capacity_total=Sum("vfs_capacity"),
        **status_counts,
    )
    drivers = list(
        Nic.objects.filter(present=True).exclude(driver="").order_by().values("driver")
        .annotate(nics=Count("pk"), sriov=Count("pk", filter=Q(sriov_totalvfs__gt=0)),
                  hosts=Count("host", distinct=True))
        .order_by("-nics", "driver")
    )
    statuses = [
        {"value": value, "label": label, "count": hosts[f"status_{value}"]}
        for value, label in STATUS.choices
    ]
    configured, capacity = hosts["vfs_configured_total"] or 0, hosts["vfs_capacity_total"] or 0
    return {
        **hosts, "sriov_nics": hosts["sriov_nic_total"] or 0, "vfs_configured": configured, "vfs_capacity": capacity,
        "vfs_percent": round(100 * configured / capacity) if capacity else 0,
        "statuses": statuses, "drivers": drivers,
    }


@require_permission("view_fleet")
def dashboard(request):
    return render_page(request, "console/dashboard.html", {"fleet": fleet_summary()})


# --------------------------------------------------------------------------------------------
# Error pages (console/urls.py handler403 / handler404): the site layout, the reason, one log line
# --------------------------------------------------------------------------------------------

def permission_denied(request, exception=None):
    """403 from a role check or a service's rule (e.g. approving one's own change): audited as
    `access.denied`, logged as one line with the reason (Django would log a traceback)."""
    reason = str(exception) if exception is not None and str(exception) else ""
    record_denied(request, reason)
    response = render(request, "403.html", {"reason": reason, "user_roles": user_roles(request.user)}, status=403)
    response._has_been_logged = True  # record_denied logged it; Django's log_response skips it
    return response


def _missing_object(request) -> str:
    """'There is no change #12' when the URL names an object (from console.roles.URL_OBJECTS)."""
    match = getattr(request, "resolver_match", None)
    model = url_object_model(match)
    if model is None:
        return ""
    what = f"{model._meta.verbose_name} #{match.kwargs['pk']}"
    return f"There is no {what}: it may have been deleted, or the link is wrong."


def page_not_found(request, exception=None):
    return render(request, "404.html", {"reason": _missing_object(request)}, status=404)


@require_GET
def favicon(request):
    """Browsers ask for /favicon.ico on every site (the admin pages do not link ours)."""
    return HttpResponsePermanentRedirect(static("console/favicon.svg"))
