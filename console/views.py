from django.db.models import Count, Q, Sum

from hosts.filters import KEY_PENDING
from hosts.models import Hypervisor, Nic

from .htmx import render_page
from .roles import require_permission

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
