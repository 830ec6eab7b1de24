"""Counters and histograms that processes increment (web workers, Celery workers).

prometheus-client's multi-process mode: every process writes its values to files under
PROMETHEUS_MULTIPROC_DIR (set by console/settings.py before this module is imported), and
/metrics adds them up (metrics/collectors.py). No Django models here, so any layer may call in.
"""

from prometheus_client import Counter, Histogram

DISCOVERY_DURATION = Histogram(
    "sriov_console_discovery_duration_seconds",
    "Time of one host's inventory call over SSH, by outcome (ok or failed)",
    ["outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, float("inf")),
)
SSH_ERRORS = Counter(
    "sriov_console_ssh_errors",
    "Failed SSH calls of discovery, by kind (unreachable, timeout, auth_failed, host_key_mismatch...)",
    ["kind"],
)


def observe_discovery(result) -> None:
    """Count one discovery result (a remote.AgentResult). Never raises: metrics must not break discovery."""
    try:
        ok = result.kind == "ok"
        DISCOVERY_DURATION.labels("ok" if ok else "failed").observe(max(float(result.duration or 0.0), 0.0))
        if not ok:
            SSH_ERRORS.labels(str(result.kind)[:40]).inc()
    except Exception:  # noqa: BLE001 - a metrics file problem is not a discovery problem
        pass
