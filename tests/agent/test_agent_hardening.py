"""Review findings on the agent, through the CLI on both interpreters (3.6 and current)."""

# ruff: noqa: UP031  (printf-style kept on purpose: it mirrors the Python 3.6 agent)

import fcntl
import json
import os

import pytest

from tests import fakesys


@pytest.fixture
def dl360(tmp_path):
    return fakesys.dl360_gen9(tmp_path / "h")


@pytest.fixture
def cli(cli_factory, dl360):
    return cli_factory(dl360)


@pytest.mark.parametrize("field,item", [("add", "root=/dev/sdb1"), ("remove", "ro"), ("add", "init=/bin/sh"),
                                        ("remove", "rd.lvm.lv"), ("add", "crashkernel=256M"),
                                        ("remove", "systemd.unit=rescue.target"), ("add", "BOOT_IMAGE=/x")])
def test_protected_boot_args_are_refused(cli, dl360, field, item):
    before = dl360.snapshot()
    doc = cli("kernel_args", {field: [item]}, expect="bad_request")
    assert item in doc["error"]["message"] and "protected" in doc["error"]["message"]
    assert doc["error"]["details"]["field"] == field
    assert dl360.snapshot() == before


def test_removing_an_arg_from_grub_cmdline_linux_is_refused(cli, dl360):
    dl360.program_update_grub()
    dl360.set_grub('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX="intel_iommu=on"\n')
    before = dl360.snapshot()
    doc = cli("kernel_args", {"remove": ["intel_iommu"]}, expect="unsupported_config")
    assert "GRUB_CMDLINE_LINUX" in doc["error"]["message"]
    assert doc["error"]["details"]["tokens"] == ["intel_iommu=on"]
    assert dl360.snapshot() == before


@pytest.mark.parametrize("text", [
    'if [ -e /etc/foo ]; then\n  GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nfi\n',
    'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\ncase "$x" in a) GRUB_CMDLINE_LINUX_DEFAULT="b" ;; esac\n',
    'setup() { GRUB_CMDLINE_LINUX_DEFAULT="x"; }\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n',
])
def test_shell_control_flow_is_refused(cli, dl360, text):
    dl360.program_update_grub()
    dl360.set_grub(text)
    before = dl360.snapshot()
    doc = cli("kernel_args", {"add": ["iommu=pt"]}, expect="unsupported_config")
    assert "control flow" in doc["error"]["message"]
    assert dl360.snapshot() == before


def test_grub_file_and_backup_keep_their_mode(cli, dl360):
    dl360.program_update_grub()
    dl360.write("etc/default/grub", fakesys.DL360_GRUB, mode=0o600)
    cli("kernel_args", {"add": ["iommu=pt"]}, expect="ok")
    assert os.stat(dl360.root / "etc/default/grub").st_mode & 0o777 == 0o600


def test_bls_host_prefers_grubby(cli, dl360):
    dl360.set_grub(fakesys.DL360_GRUB + "GRUB_ENABLE_BLSCFG=true\n")
    dl360.program_recorder("grub2-mkconfig")
    dl360.program_recorder("grubby")
    res = cli("kernel_args", {"add": ["iommu=pt"], "remove": ["splash"]}, expect="ok")["result"]
    assert res["grub_tool"] == "grubby"
    # --help: whether this grubby knows --no-etc-grub-update (this one does not)
    assert dl360.calls("grubby") == [["--help"], ["--update-kernel=ALL", "--args=iommu=pt", "--remove-args=splash"]]
    assert dl360.calls("grub2-mkconfig") == []
    assert "iommu=pt" in dl360.read("etc/default/grub")  # future kernels get it too


def test_reboot_refuses_when_the_host_already_rebooted(cli, dl360):
    doc = cli("reboot", {"expected_boot_id": "00000000-0000-0000-0000-000000000000"}, expect="boot_id_changed")
    assert doc["error"]["details"]["boot_id"] == "11111111-2222-3333-4444-555555555555"
    assert dl360.calls("systemd-run") == []
    cli("reboot", {"expected_boot_id": "11111111-2222-3333-4444-555555555555"}, expect="ok")


def test_second_reboot_schedule_does_not_stack(cli, dl360):
    dl360.program_recorder("systemd-run", rc=1, stderr="Failed to start transient timer unit: Unit "
                                                       "sriov-console-reboot.timer already exists.")
    dl360.program_recorder("sh")
    cli("reboot", {}, expect="reboot_already_scheduled")
    assert dl360.calls("sh") == []  # no fallback "sleep 2; reboot" on top


def test_reboot_refuses_guests_by_default(cli, dl360):
    dl360.program_virsh({"vm-db01": []})
    cli("reboot", {}, expect="guests_running")


def test_busy_when_another_run_holds_the_host_lock(dl360):
    from tests.agent.conftest import load_agent

    agent = load_agent()
    agent.run_payload.__globals__["LOCK_TIMEOUT"] = 0.5  # 30 s in production
    (dl360.root / "run").mkdir()
    fd = os.open(str(dl360.root / "run/sriov-console.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    request = json.dumps({"op": "set_vfs", "args": {"pf": "eno49", "pci_address": "0000:04:00.0", "count": 1}})
    try:
        status, out, _err = agent.run_payload(request.encode(), agent.System(str(dl360.root)))
        doc = json.loads(out)
        assert status == 1 and doc["error"]["code"] == "busy", doc
        assert doc["error"]["details"]["lock"] == "sriov-console.lock"
    finally:
        os.close(fd)
    assert dl360.read("sys/class/net/eno49/device/sriov_numvfs") == "0\n"
    # released: the next run gets the lock (and fails later, on the fake tree, for its own reasons)
    _status, out, _err = agent.run_payload(request.encode(), agent.System(str(dl360.root)))
    assert json.loads(out)["error"]["code"] != "busy"


def test_non_ascii_guest_name_under_the_c_locale(cli, dl360):
    dl360.program_virsh({"vm-caf\u00e9": [dl360.vf_pci("eno49", 0)]})
    dl360.add_vfs("eno49", 2)
    dl360.write("etc/udev/rules.d/70-sriov-console.rules",
                'ACTION=="add", SUBSYSTEM=="net", KERNELS=="0000:04:00.0", ATTR{device/sriov_numvfs}="2"\n')
    doc = cli("set_vfs", {"pf": "eno49", "pci_address": "0000:04:00.0", "count": 0}, expect="vfs_in_use")
    assert doc["error"]["details"]["guests"] == ["vm-caf\u00e9"]
