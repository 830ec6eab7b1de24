"""The agent's reboot guard against running guests and the forced
regeneration of the boot configuration (re-run of an interrupted kernel_args step)."""

# ruff: noqa: UP031  (printf-style kept on purpose: it mirrors the Python 3.6 agent)

import pytest

from tests import fakesys


@pytest.fixture
def dl360(tmp_path):
    return fakesys.dl360_gen9(tmp_path / "h")


@pytest.fixture
def cli(cli_factory, dl360):
    return cli_factory(dl360)


def test_reboot_refuses_when_guests_run_and_asked_to(cli, dl360):
    dl360.program_virsh({"vm-db01": ["0000:04:10.0"], "vm-web01": []})
    doc = cli("reboot", {"refuse_if_guests": True}, expect="guests_running")
    assert doc["_exit"] == 1
    assert doc["error"]["details"]["guests"] == ["vm-db01", "vm-web01"]
    assert "vm-db01, vm-web01" in doc["error"]["message"]
    assert dl360.calls("systemd-run") == []  # nothing scheduled
    # without the guard (the change allows guest impact) the reboot is scheduled
    assert cli("reboot", {"refuse_if_guests": False}, expect="ok")["result"]["method"] == "systemd-run"


def test_reboot_guard_passes_without_guests(cli, dl360):
    dl360.program_virsh({})
    res = cli("reboot", {"refuse_if_guests": True}, expect="ok")["result"]
    assert res["boot_id"] == "11111111-2222-3333-4444-555555555555"
    assert len(dl360.calls("systemd-run")) == 1


def test_reboot_guard_argument_is_validated(cli):
    cli("reboot", {"refuse_if_guests": "yes"}, expect="bad_request")


def test_kernel_args_regenerate_runs_the_tool_even_when_the_file_is_right(cli, dl360):
    dl360.program_update_grub()
    cli("kernel_args", {"add": ["intel_iommu=on"]}, expect="ok")
    # the file is right now, but pretend the generated config was lost (the tool never ran)
    dl360.write("boot/grub/grub.cfg", "")
    again = cli("kernel_args", {"add": ["intel_iommu=on"]}, expect="ok")["result"]
    assert again["files_changed"] == [] and again["grub_tool"] is None
    assert "intel_iommu=on" not in dl360.read("boot/grub/grub.cfg")
    forced = cli("kernel_args", {"add": ["intel_iommu=on"], "regenerate": True}, expect="ok")["result"]
    assert forced["files_changed"] == [] and forced["grub_tool"] == "update-grub"
    assert forced["actions"] == [
        "regenerated the boot configuration: update-grub (requested: the GRUB defaults were already as wanted)"]
    assert "intel_iommu=on" in dl360.read("boot/grub/grub.cfg").split()


def test_kernel_args_regenerate_failure_says_nothing_was_changed(cli, dl360):
    dl360.program_update_grub()
    cli("kernel_args", {"add": ["intel_iommu=on"]}, expect="ok")
    dl360.program_update_grub(fail=True)
    doc = cli("kernel_args", {"add": ["intel_iommu=on"], "regenerate": True}, expect="grub_tool_failed")
    assert doc["error"]["message"].endswith("the GRUB defaults were not changed.")
    assert doc["error"]["details"]["restored"] == []
