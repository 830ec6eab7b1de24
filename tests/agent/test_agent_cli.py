"""The agent's CLI with the real System against fake host trees, under Python 3.11+ and 3.6."""

# ruff: noqa: UP031  (printf-style kept on purpose: it mirrors the Python 3.6 agent and shell snippets)

import json
import subprocess
import sys

import pytest

from tests import fakesys
from tests.fakesys import AGENT_PATH as AGENT

UDEV = "etc/udev/rules.d/70-sriov-console.rules"
MODPROBE = "etc/modprobe.d/sriov-console.conf"
NUMVFS49 = "sys/class/net/eno49/device/sriov_numvfs"


@pytest.fixture
def dl360(tmp_path):
    return fakesys.dl360_gen9(tmp_path / "host")


@pytest.fixture
def cli(cli_factory, dl360):
    return cli_factory(dl360)


def udev_text(*lines):
    header = ("# Managed by SR-IOV Console. Do not edit: this file is rewritten by the console.\n"
              "# One line per physical function (keyed by PCI address): its VF count, restored at boot.\n")
    return header + "".join(line + "\n" for line in lines)


def rule(pci, count):
    return 'ACTION=="add", SUBSYSTEM=="net", KERNELS=="%s", ATTR{device/sriov_numvfs}="%d"' % (pci, count)


# ------------------------------------------------------------------------------------ inventory


def test_dl360_inventory(cli, dl360):
    dl360.add_vfs("eno49", 2)
    dl360.write(UDEV, udev_text(rule("0000:04:00.0", 2)))
    doc = cli("inventory", expect="ok")
    assert doc["_exit"] == 0 and doc["op"] == "inventory" and doc["request_id"] == "cli"
    res = doc["result"]
    assert res["hostname"] == "dl360-gen9"
    assert res["machine_id"] == "0123456789abcdef0123456789abcdef"
    assert res["boot_id"] == "11111111-2222-3333-4444-555555555555"
    assert res["kernel_release"] == "5.4.0-42-generic" and res["legacy_kernel"] is False
    assert res["os"] == {"id": "ubuntu", "version_id": "20.04", "pretty_name": "Ubuntu 20.04.6 LTS"}
    assert res["cpu_vendor"] == "intel"
    assert res["cmdline"].endswith("ro quiet splash")
    assert res["grub"]["cmdline_linux_default"] == "quiet splash"
    assert res["grub"]["cmdline_linux_default_source"] == "/etc/default/grub"
    assert res["grub"]["cmdline_linux"] == ""
    assert res["grub_tool"] == "update-grub"
    assert res["iommu"]["active"] is False
    assert res["virsh"] is True and res["guests"] == []

    nics = {n["name"]: n for n in res["nics"]}
    assert sorted(nics) == ["eno1", "eno2", "eno3", "eno4", "eno49", "eno49v0", "eno49v1",
                            "eno50", "eno51", "eno52"]  # lo has no device link
    for i in range(4):
        tg3 = nics["eno%d" % (i + 1)]
        assert tg3["pci_address"] == "0000:02:00.%d" % i
        assert (tg3["vendor_id"], tg3["device_id"], tg3["driver"]) == ("14e4", "1657", "tg3")
        assert tg3["sriov_capable"] is False
        assert tg3["sriov_totalvfs"] is None and tg3["sriov_numvfs"] is None
        assert tg3["driver_version"] == "3.137"
        assert tg3["mac"] == fakesys.TG3_MACS[i]
    assert nics["eno1"]["operstate"] == "up" and nics["eno1"]["speed"] == 1000
    assert nics["eno2"]["operstate"] == "down" and nics["eno2"]["speed"] is None
    for i in range(4):
        igb = nics["eno%d" % (49 + i)]
        assert igb["pci_address"] == igb["bus_info"] == "0000:04:00.%d" % i
        assert (igb["vendor_id"], igb["device_id"], igb["driver"]) == ("8086", "1521", "igb")
        assert igb["driver_version"] == "5.6.0-k"
        assert igb["firmware_version"] == "1.61, 0x80000daa, 1.949.0"
        assert igb["sriov_capable"] is True and igb["sriov_totalvfs"] == 7
        assert igb["is_vf"] is False and igb["mtu"] == 1500
        assert igb["mac"] == fakesys.I350_MACS[i]
    eno49 = nics["eno49"]
    assert eno49["sriov_numvfs"] == 2 and eno49["managed"] is True and eno49["persisted_count"] == 2
    assert nics["eno50"]["managed"] is False and nics["eno50"]["persisted_count"] is None
    # without iproute2 the PF driver's VF settings are unknown (null), and nothing is persisted
    unknown = {"admin_mac": None, "vlan": None, "qos": None, "spoofchk": None, "trust": None, "link_state": None,
               "max_tx_rate": None, "min_tx_rate": None, "driver_override": None, "persisted_settings": None,
               "persisted_driver": None}
    assert eno49["vfs"] == [
        dict({"index": 0, "pci_address": "0000:04:10.0", "netdev": "eno49v0", "driver": "igbvf",
              "mac": "00:00:00:00:00:00", "used_by": [], "used_via": [], "reserved_by": []}, **unknown),
        dict({"index": 1, "pci_address": "0000:04:10.4", "netdev": "eno49v1", "driver": "igbvf",
              "mac": "00:00:00:00:00:00", "used_by": [], "used_via": [], "reserved_by": []}, **unknown),
    ]
    assert eno49["vf_settings_known"] is False and eno49["numa_node"] is None
    vf = nics["eno49v1"]
    assert vf["is_vf"] is True and vf["physfn"] == "0000:04:00.0" and vf["driver"] == "igbvf"
    assert vf["device_id"] == "1520" and vf["sriov_capable"] is False


def test_inventory_grub_d_override_iommu_amd_and_guests(cli_factory, tmp_path):
    host = fakesys.dl360_gen9(tmp_path / "h", iommu=True)
    host.set_basics(cpu_vendor="AuthenticAMD")
    host.set_grub(fakesys.DL360_GRUB, {
        "50-cloudimg-settings.cfg": '# cloud-img\nGRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0"\n',
        "40-force-partuuid.cfg": 'GRUB_FORCE_PARTUUID=abc\n',
        "README": 'GRUB_CMDLINE_LINUX_DEFAULT="ignored"\n'})
    host.add_vfs("eno50", 3)
    host.program_virsh({"web-1": [host.vf_pci("eno50", 1)], "db-1": []})
    res = cli_factory(host)("inventory", expect="ok")["result"]
    assert res["cpu_vendor"] == "amd"
    assert res["iommu"]["active"] is True and res["iommu"]["groups"] == 8
    assert res["grub"]["cmdline_linux_default"] == "console=tty1 console=ttyS0"
    assert res["grub"]["cmdline_linux_default_source"] == "/etc/default/grub.d/50-cloudimg-settings.cfg"
    assert res["grub"]["files"] == ["/etc/default/grub", "/etc/default/grub.d/40-force-partuuid.cfg",
                                    "/etc/default/grub.d/50-cloudimg-settings.cfg"]
    assert {g["name"]: g["hostdev_pci"] for g in res["guests"]} == {"web-1": ["0000:04:10.5"], "db-1": []}
    eno50 = [n for n in res["nics"] if n["name"] == "eno50"][0]
    assert [vf["used_by"] for vf in eno50["vfs"]] == [[], ["web-1"], []]


def test_inventory_without_optional_programs(cli_factory, tmp_path):
    host = fakesys.dl360_gen9(tmp_path / "h", programs=False)
    res = cli_factory(host)("inventory", expect="ok")["result"]
    assert res["grub_tool"] is None and res["virsh"] is False and res["guests"] == []
    eno49 = [n for n in res["nics"] if n["name"] == "eno49"][0]
    assert eno49["driver_version"] is None and eno49["firmware_version"] is None


# ------------------------------------------------------------------------------------ set_vfs refusals


def set_args(count, pf="eno49", pci="0000:04:00.0", **extra):
    args = {"pf": pf, "pci_address": pci, "count": count}
    args.update(extra)
    return args


def test_exceeds_total_writes_nothing(cli, dl360):
    before = dl360.snapshot()
    doc = cli("set_vfs", set_args(8), expect="exceeds_total")
    assert doc["_exit"] == 1
    assert doc["error"]["details"]["sriov_totalvfs"] == 7
    assert "at most 7" in doc["error"]["message"]
    assert dl360.snapshot() == before


def test_pf_mismatch(cli, dl360):
    before = dl360.snapshot()
    doc = cli("set_vfs", set_args(4, pci="0000:04:00.1"), expect="pf_mismatch")
    assert doc["error"]["details"]["actual_pci_address"] == "0000:04:00.0"
    assert "renamed" in doc["error"]["message"]
    assert dl360.snapshot() == before


def test_not_capable_and_missing(cli, dl360):
    cli("set_vfs", set_args(1, pf="eno1", pci="0000:02:00.0"), expect="not_sriov_capable")
    cli("set_vfs", set_args(1, pf="eno9", pci="0000:09:00.0"), expect="no_such_pf")
    cli("set_vfs", set_args(1, pf=None, pci="0000:09:00.0"), expect="no_such_pf")
    # the PCI function exists under another name: renamed, not missing
    doc = cli("set_vfs", set_args(1, pf="eno9", pci="0000:02:00.0"), expect="pf_mismatch")
    assert doc["error"]["details"]["actual_pf"] == "eno1"
    cli("set_vfs", set_args(1, pf="lo", pci="0000:02:00.0"), expect="not_sriov_capable")
    dl360.add_vfs("eno49", 1)
    cli("set_vfs", set_args(1, pf="eno49v0", pci="0000:04:10.0"), expect="not_sriov_capable")


def test_set_vfs_writes_and_persists_then_times_out_without_a_kernel(cli, dl360):
    # A plain file cannot grow VF links: the real System writes the count and the persistence
    # file, then the bounded wait for VF netdevs honestly fails with vf_timeout.
    doc = cli("set_vfs", set_args(4, wait_seconds=0.3), expect="vf_timeout")
    assert dl360.read(NUMVFS49) == "4\n"
    assert dl360.read(UDEV) == udev_text(rule("0000:04:00.0", 4))
    details = doc["error"]["details"]
    assert details["expected"] == 4 and details["ready"] == 0
    # ownership is recorded BEFORE the sysfs write (a persistence failure cannot orphan it)
    assert details["actions"] == [
        "persisted 4 VFs for 0000:04:00.0 in /etc/udev/rules.d/70-sriov-console.rules",
        "wrote 4 to sriov_numvfs of eno49 (0000:04:00.0) (was 0)",
    ]


def test_equal_count_skips_write_and_ensures_persistence(cli, dl360):
    dl360.add_vfs("eno49", 4)
    dl360.add_vfs("eno51", 2)
    dl360.write(UDEV, udev_text(rule("0000:04:00.2", 2)))
    # eno49's 4 VFs are not the console's: recording them is adopting the PF, which needs take_over
    doc = cli("set_vfs", set_args(4), expect="ok")
    assert doc["result"]["actions"] == [] and doc["result"]["persisted"] is False
    assert doc["result"]["reason"] == "externally_managed"
    doc = cli("set_vfs", set_args(4, take_over=True), expect="ok")
    res = doc["result"]
    assert res["actions"] == ["persisted 4 VFs for 0000:04:00.0 in /etc/udev/rules.d/70-sriov-console.rules"]
    assert res["before"]["sriov_numvfs"] == res["after"]["sriov_numvfs"] == 4
    assert res["before"]["persisted_count"] is None and res["after"]["persisted_count"] == 4
    assert [vf["netdev"] for vf in res["after"]["vfs"]] == ["eno49v0", "eno49v1", "eno49v2", "eno49v3"]
    assert res["persisted"] is True and res["reboot_required"] is False
    # other PFs' lines kept, one line per PF, sorted by PCI address, exact format
    assert dl360.read(UDEV) == udev_text(rule("0000:04:00.0", 4), rule("0000:04:00.2", 2))
    # idempotent: nothing to do the second time
    again = cli("set_vfs", set_args(4), expect="ok")
    assert again["result"]["actions"] == []
    # persist=false leaves the file alone; count 0 removes the line
    dl360.remove_vfs("eno51")
    doc = cli("set_vfs", set_args(0, pf="eno51", pci="0000:04:00.2"), expect="ok")
    assert doc["result"]["actions"] == [
        "removed the persisted VF count of 0000:04:00.2 from /etc/udev/rules.d/70-sriov-console.rules"]
    assert dl360.read(UDEV) == udev_text(rule("0000:04:00.0", 4))


def test_externally_managed(cli, dl360):
    dl360.add_vfs("eno49", 4)
    before = dl360.snapshot()
    doc = cli("set_vfs", set_args(2), expect="externally_managed")
    assert "did not configure" in doc["error"]["message"]
    cli("set_vfs", set_args(0), expect="externally_managed")
    assert dl360.snapshot() == before


@pytest.mark.parametrize("count", [1, 2, 6, 0])
def test_vfs_in_use_by_guests(cli, dl360, count):
    # guest uses VF index 1; count 2 or 6 (non-zero -> non-zero) needs the reset to 0 first,
    # which removes every VF, so all of them count as removed.
    dl360.add_vfs("eno49", 4)
    dl360.write(UDEV, udev_text(rule("0000:04:00.0", 4)))
    dl360.program_virsh({"vm-web": [dl360.vf_pci("eno49", 1), "0000:81:00.0"], "vm-idle": []})
    before = dl360.snapshot()
    doc = cli("set_vfs", set_args(count), expect="vfs_in_use")
    assert doc["error"]["details"]["guests"] == ["vm-web"]
    assert doc["error"]["details"]["vfs"] == [
        {"index": 1, "pci_address": "0000:04:10.4", "used_by": ["vm-web"],
         "used_via": [{"guest": "vm-web", "via": "hostdev"}]}]
    assert "vm-web" in doc["error"]["message"]
    assert dl360.snapshot() == before


def test_decrease_not_touching_used_vf_is_allowed_to_proceed(cli, dl360):
    dl360.add_vfs("eno49", 4)
    dl360.write(UDEV, udev_text(rule("0000:04:00.0", 4)))
    dl360.program_virsh({"vm-web": [dl360.vf_pci("eno49", 0)]})
    # 4 -> 0 would remove VF 0 -> refused; force overrides (then the fake tree cannot drop links)
    cli("set_vfs", set_args(0), expect="vfs_in_use")
    doc = cli("set_vfs", set_args(0, force=True, wait_seconds=0), expect="vf_timeout")
    assert dl360.read(NUMVFS49) == "0\n"
    assert doc["error"]["details"]["surplus"] == 4
    assert dl360.read(UDEV) == udev_text()


# ------------------------------------------------------------------------------------ legacy kernel


def test_legacy_kernel_uses_modprobe_max_vfs(cli_factory, tmp_path):
    host = fakesys.legacy_el6(tmp_path / "el6")
    cli = cli_factory(host)
    inv = cli("inventory", expect="ok")["result"]
    assert inv["legacy_kernel"] is True
    eth0 = [n for n in inv["nics"] if n["name"] == "eth0"][0]
    assert eth0["sriov_capable"] is True and eth0["sriov_totalvfs"] == 7 and eth0["sriov_numvfs"] == 0
    before = host.snapshot()
    cli("set_vfs", set_args(8, pf="eth1", pci="0000:04:00.1"), expect="exceeds_total")
    assert host.snapshot() == before
    res = cli("set_vfs", set_args(4, pf="eth1", pci="0000:04:00.1"), expect="ok")["result"]
    assert res["reboot_required"] is True
    assert res["persistence_file"] == "/etc/modprobe.d/sriov-console.conf"
    assert host.read(MODPROBE).splitlines()[-1] == "options igb max_vfs=0,4"
    assert host.read(MODPROBE).startswith("# Managed by SR-IOV Console.")
    assert not host.exists("sys/class/net/eth1/device/sriov_numvfs")
    assert not host.exists(UDEV)
    assert len(res["actions"]) == 1 and "max_vfs=0,4" in res["actions"][0]
    again = cli("set_vfs", set_args(4, pf="eth1", pci="0000:04:00.1"), expect="ok")["result"]
    assert again["actions"] == [] and again["reboot_required"] is True
    res = cli("set_vfs", set_args(2, pf="eth0", pci="0000:04:00.0"), expect="ok")["result"]
    assert host.read(MODPROBE).splitlines()[-1] == "options igb max_vfs=2,4"
    # after the "reboot" the VFs exist: nothing to do, no reboot needed
    host.add_vfs("eth0", 2)
    host.add_vfs("eth1", 4)
    res = cli("set_vfs", set_args(2, pf="eth0", pci="0000:04:00.0"), expect="ok")["result"]
    assert res["actions"] == [] and res["reboot_required"] is False
    inv = cli("inventory", expect="ok")["result"]
    eth1 = [n for n in inv["nics"] if n["name"] == "eth1"][0]
    assert eth1["managed"] is True and eth1["persisted_count"] == 4 and eth1["sriov_numvfs"] == 4


# ------------------------------------------------------------------------------------ kernel_args


def test_kernel_args_add_preserves_every_other_byte(cli, dl360):
    original = dl360.read("etc/default/grub")
    doc = cli("kernel_args", {"add": ["intel_iommu=on", "iommu=pt"]}, expect="ok")
    res = doc["result"]
    expected = original.replace('DEFAULT="quiet splash"', 'DEFAULT="quiet splash intel_iommu=on iommu=pt"')
    assert dl360.read("etc/default/grub") == expected
    assert dl360.read("etc/default/grub.sriov-console.bak") == original
    assert dl360.read("boot/grub/grub.cfg").split() == [
        "linux", "/boot/vmlinuz", "root=/dev/sda1", "ro", "quiet", "splash", "intel_iommu=on", "iommu=pt"]
    assert res["before"]["grub_cmdline_linux_default"] == "quiet splash"
    assert res["after"]["grub_cmdline_linux_default"] == "quiet splash intel_iommu=on iommu=pt"
    assert res["reboot_required"] is True
    assert res["file"] == "/etc/default/grub" and res["grub_tool_argv"] == ["update-grub"]
    assert res["actions"] == [
        "backed up /etc/default/grub to /etc/default/grub.sriov-console.bak",
        "edited GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub: 'quiet splash' -> "
        "'quiet splash intel_iommu=on iommu=pt'",
        "regenerated the boot configuration: update-grub",
    ]
    # idempotent: no write, no regeneration
    (dl360.root / "boot/grub/grub.cfg").unlink()
    again = cli("kernel_args", {"add": ["intel_iommu=on", "iommu=pt"]}, expect="ok")["result"]
    assert again["actions"] == [] and again["reboot_required"] is True
    assert not dl360.exists("boot/grub/grub.cfg")
    assert dl360.read("etc/default/grub") == expected
    # once booted with it, no reboot is needed
    dl360.write("proc/cmdline", "BOOT_IMAGE=/vmlinuz ro quiet splash intel_iommu=on iommu=pt\n")
    assert cli("kernel_args", {"add": ["iommu=pt"]}, expect="ok")["result"]["reboot_required"] is False


def test_kernel_args_remove_and_replace_keep_quoting(cli, dl360):
    text = ("# header\nGRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT='quiet  splash iommu=soft "
            "intel_iommu=on'   # keep me\nGRUB_CMDLINE_LINUX=\"console=ttyS0\"")  # no trailing newline
    dl360.set_grub(text)
    dl360.write("proc/cmdline", "ro quiet splash iommu=soft intel_iommu=on\n")
    res = cli("kernel_args", {"add": ["iommu=pt"], "remove": ["splash", "intel_iommu"]},
              expect="ok")["result"]
    assert dl360.read("etc/default/grub") == (
        "# header\nGRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT='quiet iommu=pt'   # keep me\n"
        "GRUB_CMDLINE_LINUX=\"console=ttyS0\"")
    assert res["reboot_required"] is True
    assert res["after"]["grub_cmdline_linux_default"] == "quiet iommu=pt"


def test_kernel_args_edits_the_grub_d_file_that_wins(cli, dl360):
    cloud = ('# Cloud Image specific Grub settings for Generic Cloud Images\n'
             '# CLOUD_IMG: This file was created/modified by the Cloud Image build process\n\n'
             '# Set the recordfail timeout\nGRUB_RECORDFAIL_TIMEOUT=0\n\n'
             '# Do not wait on grub prompt\nGRUB_TIMEOUT=0\n\n'
             '# Set the default commandline\n'
             'GRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0"\n\n'
             '# Set the grub console type\nGRUB_TERMINAL=console\n')
    dl360.set_grub(fakesys.DL360_GRUB, {"50-cloudimg-settings.cfg": cloud})
    res = cli("kernel_args", {"add": ["intel_iommu=on"]}, expect="ok")["result"]
    assert dl360.read("etc/default/grub") == fakesys.DL360_GRUB
    assert dl360.read("etc/default/grub.d/50-cloudimg-settings.cfg") == cloud.replace(
        '"console=tty1 console=ttyS0"', '"console=tty1 console=ttyS0 intel_iommu=on"')
    assert dl360.read("etc/default/grub.d/50-cloudimg-settings.cfg.sriov-console.bak") == cloud
    assert res["file"] == "/etc/default/grub.d/50-cloudimg-settings.cfg"
    assert "intel_iommu=on" in dl360.read("boot/grub/grub.cfg").split()
    assert "quiet" not in dl360.read("boot/grub/grub.cfg").split()


def test_update_grub_failure_restores_the_file(cli, dl360):
    dl360.program_update_grub(fail=True)
    original = dl360.read("etc/default/grub")
    doc = cli("kernel_args", {"add": ["intel_iommu=on"]}, expect="grub_tool_failed")
    assert doc["_exit"] == 1
    assert "failed to get canonical path" in doc["error"]["details"]["stderr"]
    assert doc["error"]["details"]["restored"] == ["/etc/default/grub"]
    assert doc["error"]["details"]["exit_status"] == 1
    assert dl360.read("etc/default/grub") == original


def test_grubby_and_grub2_mkconfig_hosts(cli_factory, tmp_path):
    host = fakesys.dl360_gen9(tmp_path / "rhel")
    (host.bin / "update-grub").unlink()
    host.program_recorder("grubby")
    res = cli_factory(host)("kernel_args", {"add": ["intel_iommu=on", "iommu=pt"], "remove": ["quiet"]},
                            expect="ok")["result"]
    assert host.calls("grubby") == [["--update-kernel=ALL", "--args=intel_iommu=on iommu=pt",
                                     "--remove-args=quiet"]]
    assert res["grub_tool"] == "grubby"
    host.program_recorder("grub2-mkconfig")
    host.set_basics(os_release={"ID": "rhel", "VERSION_ID": "8.9", "PRETTY_NAME": "RHEL 8.9"})
    host.write("boot/efi/EFI/redhat/grub.cfg", "menuentry ...\n")
    cli_factory(host)("kernel_args", {"add": ["iommu=soft"]}, expect="ok")
    assert host.calls("grub2-mkconfig") == [["-o", "/boot/efi/EFI/redhat/grub.cfg"]]
    # an EFI stub (RHEL 9) is never overwritten
    host.write("boot/efi/EFI/redhat/grub.cfg", "search --no-floppy --fs-uuid --set=dev abc\n"
                                              "configfile $prefix/grub.cfg\n")
    cli_factory(host)("kernel_args", {"add": ["iommu=pt"]}, expect="ok")
    assert host.calls("grub2-mkconfig")[-1] == ["-o", "/boot/grub2/grub.cfg"]


def test_no_grub_tool(cli_factory, tmp_path):
    host = fakesys.dl360_gen9(tmp_path / "h")
    (host.bin / "update-grub").unlink()
    before = host.snapshot()
    cli_factory(host)("kernel_args", {"add": ["iommu=pt"]}, expect="no_grub_tool")
    assert host.snapshot() == before


# ------------------------------------------------------------------------------------ reboot


def test_reboot_schedules_via_systemd_run(cli, dl360):
    res = cli("reboot", {}, expect="ok")["result"]
    assert res["boot_id"] == "11111111-2222-3333-4444-555555555555"
    assert res["method"] == "systemd-run"
    assert dl360.calls("systemd-run") == [["--unit=sriov-console-reboot", "--on-active=2",
                                           "--timer-property=AccuracySec=100ms", "systemctl", "reboot"]]


# ------------------------------------------------------------------------------------ bad requests


BAD = [
    ("set_vfs", {"pf": "eno49; reboot", "pci_address": "0000:04:00.0", "count": 1}),
    ("set_vfs", {"pf": "../eno49", "pci_address": "0000:04:00.0", "count": 1}),
    ("set_vfs", {"pf": "..", "pci_address": "0000:04:00.0", "count": 1}),
    ("set_vfs", {"pf": "", "pci_address": "0000:04:00.0", "count": 1}),
    ("set_vfs", {"pf": "a234567890123456", "pci_address": "0000:04:00.0", "count": 1}),
    ("set_vfs", {"pf": "eno 49", "pci_address": "0000:04:00.0", "count": 1}),
    ("set_vfs", {"pf": "eno49", "pci_address": "0000:04:00.0A", "count": 1}),
    ("set_vfs", {"pf": "eno49", "pci_address": "0000:04:0.0", "count": 1}),
    ("set_vfs", {"pf": "eno49", "pci_address": "0000:04:00.8", "count": 1}),
    ("set_vfs", {"pf": "eno49", "pci_address": "0000:04:00.0", "count": -1}),
    ("set_vfs", {"pf": "eno49", "pci_address": "0000:04:00.0", "count": True}),
    ("set_vfs", {"pf": "eno49", "pci_address": "0000:04:00.0", "count": "4"}),
    ("set_vfs", {"pf": "eno49", "pci_address": "0000:04:00.0", "count": 1.0}),
    ("set_vfs", {"pf": "eno49", "pci_address": "0000:04:00.0"}),
    ("set_vfs", {"pf": "eno49", "pci_address": "0000:04:00.0", "count": 1, "persist": "yes"}),
    ("set_vfs", {"pf": "eno49", "pci_address": "0000:04:00.0", "count": 1, "bogus": 1}),
    ("kernel_args", {"add": ["intel_iommu=on\" x"]}),
    ("kernel_args", {"add": ["a b"]}),
    ("kernel_args", {"add": ["$(reboot)"]}),
    ("kernel_args", {"add": ["x=`id`"]}),
    ("kernel_args", {"add": ["x=1;reboot"]}),
    ("kernel_args", {"remove": ["'quiet'"]}),
    ("kernel_args", {"add": "intel_iommu=on"}),
    ("kernel_args", {"add": ["iommu=pt"], "remove": ["iommu"]}),
]


@pytest.mark.parametrize("op,args", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_requests_touch_nothing(cli, dl360, op, args):
    before = dl360.snapshot()
    doc = cli(op, args, expect="bad_request")
    assert doc["_exit"] == 2 and doc["ok"] is False and doc["error"]["message"]
    assert dl360.snapshot() == before
    assert dl360.calls("systemd-run") == []


def test_malformed_json_and_unknown_op(cli, dl360):
    doc = cli("set_vfs", raw="{not json", expect="bad_request")
    assert doc["_exit"] == 2
    doc = cli("set_vfs", raw="[1, 2]", expect="bad_request")
    assert doc["_exit"] == 2
    doc = cli("format_disk", {}, expect="unknown_op")
    assert doc["_exit"] == 2 and doc["op"] == "format_disk"


# ------------------------------------------------------------------------------------ bootstrap contract


def test_bootstrap_command_runs_the_agent(python):
    """The exact remote.protocol bootstrap, on this machine's real (read-only) /sys."""
    sys.path.insert(0, str(AGENT.parent.parent))
    try:
        from remote import protocol
    finally:
        sys.path.pop(0)
    source = AGENT.read_bytes()
    for request, status, code in [({"op": "inventory", "args": {}, "request_id": "r-1"}, 0, None),
                                  ({"op": "nope", "args": {}, "request_id": "r-2"}, 2, "unknown_op")]:
        proc = subprocess.run([python, "-c", protocol.BOOTSTRAP],
                              input=protocol.encode_payload(source, request), capture_output=True, timeout=60)
        doc = json.loads(proc.stdout)
        assert proc.returncode == status, proc.stderr
        assert doc["request_id"] == request["request_id"]
        assert doc["agent_version"]
        if code:
            assert doc["error"]["code"] == code
        else:
            assert doc["ok"] is True and isinstance(doc["result"]["nics"], list)
