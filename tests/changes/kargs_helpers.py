"""Shared helpers of the kernel-args and reboot integration tests: a module-scoped
simfleet with quick reboots, registration + discovery, approval, waiting for the rollout.

The worker subprocess reads the reboot settings from the environment, set here before any worker
starts: a short deadline and a fast poll so that a host that never returns fails in seconds.
"""

import json
import os

import pytest

from changes import approvals, services
from changes.models import Rollout
from hosts.discovery import discover_hosts
from hosts.models import Hypervisor
from simfleet import SimFleet
from tests.conftest import ensure_role_groups, register_sim_hosts
from tests.fakesys import AGENT_PATH

from .conftest import change_data, wait_for

os.environ.setdefault("REBOOT_DEADLINE_SECONDS", "8")
os.environ.setdefault("BOOT_POLL_SECONDS", "0.3")
os.environ.setdefault("BOOT_PROBE_TIMEOUT", "2")

REBOOT_DELAY = 0.3
DOWN_TIME = 0.6


def make_fleet(tmp_path_factory, specs, name):
    return SimFleet(
        tmp_path_factory.mktemp(name),
        hosts=specs,
        base_port=0,
        vf_delay=0.02,
        reboot_delay=REBOOT_DELAY,
        down_time=DOWN_TIME,
    ).start()


@pytest.fixture(autouse=True)
def _roles(transactional_db):
    """transactional_db empties every table after a test, the role groups too: put them back."""
    ensure_role_groups()


def register(fleet, sims):
    return register_sim_hosts(fleet, sims)


def rediscover(hosts):
    outcomes = discover_hosts(Hypervisor.objects.filter(pk__in=[h.pk for h in hosts]).order_by("name"))
    assert [o.kind for o in outcomes] == ["ok"] * len(hosts), outcomes


def create(hosts, operator, ops, **policy):
    return services.create_change(change_data([h.pk for h in hosts], ops=ops, **policy), operator)


def approve(change, operator, approver):
    assert not change.plan_blocked, list(change.plan_items.values_list("errors", flat=True))
    services.submit_change(change.pk, operator)
    change.refresh_from_db()
    approvals.approve(change.pk, approver, comment="ok", approval_hash=approvals.current_approval_hash(change.pk))
    change.refresh_from_db()
    return change


def approved(hosts, operator, approver, ops, **policy):
    return approve(create(hosts, operator, ops, **policy), operator, approver)


def finished(change, timeout=180):
    def check():
        rollout = Rollout.objects.filter(change=change).order_by("-attempt").first()
        return rollout if rollout and rollout.is_finished else None

    rollout = wait_for(check, timeout=timeout, what=f"rollout of change #{change.pk}")
    change.refresh_from_db()
    return rollout


def runs(rollout):
    return list(rollout.host_runs.select_related("host").order_by("order"))


def kinds(run):
    return [(s.kind, s.operation) for s in run.steps.order_by("seq")]


IOMMU = {"op": "kernel_args", "preset": "iommu"}
REBOOT_IF_NEEDED = {"op": "reboot", "when": "if_needed"}
REBOOT_ALWAYS = {"op": "reboot", "when": "always"}


def set_vfs(value, count, **extra):
    return {"op": "set_vfs", "select": {"by": "name", "value": value}, "count": count, **extra}


_AGENT_CODE = None


def agent_call(sim, op, args):
    """Run the agent in-process against a simulated host (setting a host up by hand)."""
    global _AGENT_CODE
    if _AGENT_CODE is None:
        _AGENT_CODE = compile(AGENT_PATH.read_bytes(), "sriov_agent.py", "exec")
    namespace = {"__name__": "sriov_agent"}
    exec(_AGENT_CODE, namespace)
    status, out, _err = namespace["run_payload"](json.dumps({"op": op, "args": args}).encode(), sim.system())
    doc = json.loads(out)
    assert doc["ok"], doc
    return doc["result"]
