"""Rollouts on hosts as they are: a real Celery worker, simfleet scenario hosts over real SSH. The
flags the plan allows reach the agent; what the agent refuses or half-applies is said on the host
run and its step, in the agent's words."""

import pytest
from django.urls import reverse

from changes.models import Step
from hosts.models import Nic
from tests.conftest import ensure_role_groups, register_sim_hosts

from .kargs_helpers import REBOOT_IF_NEEDED, make_fleet
from .test_rollout_integration import approved, finished, runs, set_vfs

pytestmark = pytest.mark.slow

ENO49 = "0000:04:00.0"
HOSTS = [
    {"profile": "dl360g9", "name": "t-partial"},
    {"profile": "dl360g9", "name": "t-autostart"},
    {"profile": "dl360g9-mgmt-on-pf", "name": "t-mgmt"},
    {"profile": "dl360g9-foreign-udev", "name": "t-udev"},
    {"profile": "legacy-intree", "name": "t-intree"},
]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sim = make_fleet(tmp_path_factory, HOSTS, "simfleet-truth")  # quick reboots
    yield sim
    sim.stop()


@pytest.fixture(autouse=True)
def _roles(transactional_db):
    ensure_role_groups()


def action_step(run):
    return run.steps.get(kind=Step.Kind.ACTION)


def test_a_partial_enable_is_reported_as_partial_and_only_what_exists_is_persisted(
        celery_worker, fleet, operator, approver, client_for):
    sim = fleet.host("t-partial")
    (host,) = register_sim_hosts(fleet, [sim])
    sim.inject("partial_enable", max=2)
    change = approved([host], operator, approver, ops=[set_vfs("eno49", 4)])
    rollout = finished(change)
    (run,) = runs(rollout)
    assert run.state == "failed" and change.state == "failed"
    assert run.message.startswith("eno49: partially applied — partial_enable: eno49 (0000:04:00.0): 4 VFs were "
                                  "asked for, the driver enabled only 2 (2 missing)"), run.message
    step = action_step(run)
    assert not step.ok and step.error_code == "partial_enable" and "The missing 2 are not persisted" in step.message
    assert sim.true_state()["numvfs"][ENO49] == 2
    nic = Nic.objects.get(host=host, pci_address=ENO49)  # re-read after the failure
    assert (nic.sriov_numvfs, nic.persisted_numvfs) == (2, 2)
    page = client_for(operator).get(reverse("changes:detail", args=[change.pk])).content.decode()
    assert "partially applied — partial_enable" in page


def test_an_agent_refusal_is_the_host_runs_message_in_the_agents_words(celery_worker, fleet, operator, approver):
    sim = fleet.host("t-autostart")
    (host,) = register_sim_hosts(fleet, [sim])
    assert approved([host], operator, approver, ops=[set_vfs("eno49", 3)]).state  # 0 -> 3 VFs
    rollout = finished(host.host_runs.get().rollout.change)
    assert rollout.state == "succeeded"
    vf2 = next(v["pci"] for v in sim.true_state()["vfs"][ENO49] if v["index"] == 2)
    # defined after the last discovery: the plan cannot know it, the agent does
    sim.add_guest("vm-late", [vf2], running=False, autostart=True)
    change = approved([host], operator, approver, ops=[set_vfs("eno49", 1)])
    (run,) = runs(finished(change))
    assert run.state == "failed"
    assert run.message.startswith("eno49: autostart_guests: eno49 (0000:04:00.0): this change removes VFs that "
                                  "guests starting at boot use: vm-late"), run.message
    assert sim.true_state()["numvfs"][ENO49] == 3
    assert Nic.objects.get(host=host, pci_address=ENO49).host.defined_guests[0]["name"] == "vm-late"


def test_the_management_link_flag_reaches_the_agent_only_when_the_change_allows_it(
        celery_worker, fleet, operator, approver):
    sim = fleet.host("t-mgmt")
    (host,) = register_sim_hosts(fleet, [sim])
    change = approved([host], operator, approver, ops=[set_vfs("eno49", 2, allow_management_link=True)])
    (run,) = runs(finished(change))
    assert run.state == "succeeded", run.message
    args = action_step(run).request["args"]
    assert args["allow_management_link"] is True
    assert sim.true_state()["numvfs"][ENO49] == 2


def test_take_over_disables_the_other_udev_rule_and_the_count_is_persisted(celery_worker, fleet, operator, approver):
    sim = fleet.host("t-udev")
    (host,) = register_sim_hosts(fleet, [sim])
    eno49 = Nic.objects.get(host=host, pci_address=ENO49)
    assert eno49.other_config and eno49.other_config[0]["active"]
    change = approved([host], operator, approver, ops=[set_vfs("eno49", 3, take_over=True)])
    (run,) = runs(finished(change))
    assert run.state == "succeeded", run.message
    result = action_step(run).result
    assert result["persisted"] is True
    assert [d["path"] for d in result["disabled_other_config"]] == ["/etc/udev/rules.d/igb.rules"]
    eno49.refresh_from_db()
    assert eno49.persisted and eno49.persisted_numvfs == 3 and not eno49.persisted_conflict
    assert not [i for i in eno49.other_config if i.get("active")]


def test_one_max_vfs_for_every_port_goes_to_every_port_and_comes_back_after_the_reboot(
        celery_worker, fleet, operator, approver):
    sim = fleet.host("t-intree")
    (host,) = register_sim_hosts(fleet, [sim])
    change = approved([host], operator, approver, ops=[set_vfs("eth1", 3, apply_to_all_ports=True),
                                                       REBOOT_IF_NEEDED])
    (run,) = runs(finished(change))
    assert run.state == "succeeded", run.message
    set_step = run.steps.get(operation="set_vfs")
    assert set_step.request["args"]["apply_to_all_ports"] is True
    assert set_step.result["max_vfs"]["value"] == "3" and set_step.result["max_vfs"]["applies_to_all_ports"]
    assert sorted(sim.true_state()["numvfs"].values()) == [3, 3, 3, 3]  # verified after the boot
