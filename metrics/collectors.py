"""What /metrics exposes: fleet gauges read from the database at scrape time (a fixed number of
queries whatever the fleet size), and the counters/histograms every process wrote (multi-process
files under METRICS_COLLECT_DIR, merged)."""

from pathlib import Path

from django.db.models import Count, Max, Q, Sum
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from audit.models import AuditEvent
from changes.models import ChangeRequest, HostRun, Rollout
from hosts.models import Hypervisor, Nic, VirtualFunction


def _by(queryset, field: str) -> dict:
    return {row[field]: row["n"] for row in queryset.order_by().values(field).annotate(n=Count("pk"))}


class DatabaseCollector:
    """Gauges computed from the database at scrape time."""

    def collect(self):
        hosts = Hypervisor.objects.aggregate(
            iommu=Count("pk", filter=Q(iommu_active=True)), drifted=Count("pk", filter=Q(drifted=True)),
        )
        status = _by(Hypervisor.objects.all(), "status")
        family = GaugeMetricFamily("sriov_console_hosts", "Registered hypervisors by status", labels=["status"])
        for value in Hypervisor.Status.values:
            family.add_metric([value], status.get(value, 0))
        yield family
        yield GaugeMetricFamily("sriov_console_hosts_iommu_ready", "Hosts whose IOMMU is active",
                                value=hosts["iommu"])
        yield GaugeMetricFamily("sriov_console_hosts_drifted", "Hosts that drifted from what the console applied",
                                value=hosts["drifted"])
        nics = Nic.objects.filter(present=True, sriov_totalvfs__isnull=False).aggregate(
            configured=Sum("sriov_numvfs"), capacity=Sum("sriov_totalvfs"))
        yield GaugeMetricFamily("sriov_console_vfs_configured", "VFs configured (sriov_numvfs) on present PFs",
                                value=nics["configured"] or 0)
        yield GaugeMetricFamily("sriov_console_vfs_capacity", "VFs the present PFs could have (sriov_totalvfs)",
                                value=nics["capacity"] or 0)
        in_use = VirtualFunction.objects.filter(present=True).exclude(guest="").count()
        yield GaugeMetricFamily("sriov_console_vfs_in_use", "VFs held by a guest", value=in_use)
        yield from self._changes()
        chain = AuditEvent.objects.aggregate(length=Max("id"))["length"] or 0
        yield GaugeMetricFamily("sriov_console_audit_chain_length", "Events in the audit hash chain", value=chain)

    def _changes(self):
        states = _by(ChangeRequest.objects.all(), "state")
        family = GaugeMetricFamily("sriov_console_changes", "Change requests by state", labels=["state"])
        for value in ChangeRequest.State.values:
            family.add_metric([value], states.get(value, 0))
        yield family
        running = Rollout.objects.filter(state=Rollout.State.RUNNING).count()
        yield GaugeMetricFamily("sriov_console_rollouts_running", "Rollouts running now", value=running)
        runs = _by(HostRun.objects.all(), "state")
        family = GaugeMetricFamily("sriov_console_host_runs", "Host runs by state (outcome once finished)",
                                   labels=["state"])
        for value in HostRun.State.values:
            family.add_metric([value], runs.get(value, 0))
        yield family


class ProcessFilesCollector:
    """The counters and histograms of every process, from their multi-process files.

    Each service writes under its own PROMETHEUS_MULTIPROC_DIR (wiped when it starts); the web
    reads them all below METRICS_COLLECT_DIR, so a worker's discovery counts show up here.
    """

    def __init__(self, root: str):
        self.root = Path(root)

    def collect(self):
        files = sorted(str(p) for p in self.root.rglob("*.db")) if self.root.is_dir() else []
        return MultiProcessCollector.merge(files, accumulate=True)
