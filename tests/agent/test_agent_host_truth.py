"""The agent sees a real hypervisor as it is (CLI, real System, fake trees; Python 3.6 and current):
guests through macvtap, libvirt networks and autostart; kernels older than 3.8; the PF's own link;
other boot configuration; PFs without a network interface; firmware IOMMU; passthrough ids."""

# ruff: noqa: UP031  (printf-style kept on purpose: it mirrors the Python 3.6 agent and shell snippets)

import os

import pytest

from tests import fakesys

UDEV = "etc/udev/rules.d/70-sriov-console.rules"
MODPROBE = "etc/modprobe.d/sriov-console.conf"
ENO49 = "0000:04:00.0"


@pytest.fixture
def dl360(tmp_path):
    return fakesys.dl360_gen9(tmp_path / "host")


@pytest.fixture
def cli(cli_factory, dl360):
    return cli_factory(dl360)


def set_args(count, pf="eno49", pci=ENO49, **extra):
    return dict({"pf": pf, "pci_address": pci, "count": count}, **extra)


def udev_text(*lines):
    header = ("# Managed by SR-IOV Console. Do not edit: this file is rewritten by the console.\n"
              "# One line per physical function (keyed by PCI address): its VF count, restored at boot.\n")
    return header + "".join(line + "\n" for line in lines)


def rule(pci, count):
    return 'ACTION=="add", SUBSYSTEM=="net", KERNELS=="%s", ATTR{device/sriov_numvfs}="%d"' % (pci, count)


def owned(host, pf="eno49", count=4, pci=ENO49):
    host.add_vfs(pf, count)
    host.write(UDEV, udev_text(rule(pci, count)))


def nic(inventory, name):
    return next(n for n in inventory["nics"] if n["name"] == name)


# -- 1. guests the kernel does not stop for -------------------------------------------------------


def test_macvtap_guest_on_a_vf_blocks_the_shrink_that_removes_it(cli, dl360):
    owned(dl360)
    dl360.program_virsh(devices={"vm-mac": fakesys.macvtap_xml("eno49v3")})
    before = dl360.snapshot()
    doc = cli("set_vfs", set_args(3), expect="vfs_in_use")
    assert doc["error"]["details"]["guests"] == ["vm-mac"]
    assert doc["error"]["details"]["vfs"][0]["used_via"] == [
        {"guest": "vm-mac", "via": "macvtap eno49v3 (passthrough)"}]
    assert dl360.snapshot() == before
    inv = cli("inventory", expect="ok")["result"]
    assert inv["guests"][0]["vf_pci"] == [dl360.vf_pci("eno49", 3)]
    assert [vf["used_by"] for vf in nic(inv, "eno49")["vfs"]] == [[], [], [], ["vm-mac"]]


def test_guest_on_a_libvirt_hostdev_network_holds_one_of_its_vfs(cli, dl360):
    owned(dl360, count=2)
    pool = ("<network connections='1'><name>sriov</name><forward mode='hostdev' managed='yes'>"
            "<pf dev='eno49'/></forward></network>")
    dl360.program_virsh(devices={"vm-net": fakesys.network_interface_xml("sriov")}, networks={"sriov": pool})
    doc = cli("set_vfs", set_args(0), expect="vfs_in_use")
    assert doc["error"]["details"]["guests"] == ["vm-net"]
    assert "network sriov" in doc["error"]["details"]["vfs"][0]["used_via"][0]["via"]
    inv = cli("inventory", expect="ok")["result"]
    assert inv["libvirt_networks"][0]["vf_pci"] == [dl360.vf_pci("eno49", 0), dl360.vf_pci("eno49", 1)]


def test_a_network_that_cannot_be_read_fails_closed(cli, dl360):
    owned(dl360, count=2)
    dl360.program_virsh(devices={"vm-net": fakesys.network_interface_xml("gone")})
    doc = cli("set_vfs", set_args(0), expect="guest_check_failed")
    assert "net-dumpxml gone" in doc["error"]["message"]


def test_stopped_guest_that_starts_at_boot_is_named_and_blocks_unless_allowed(cli, dl360):
    owned(dl360)
    dl360.program_virsh(stopped={"vm-boot": fakesys.hostdev_xml([dl360.vf_pci("eno49", 2)])})
    inv = cli("inventory", expect="ok")["result"]
    assert [g["name"] for g in inv["defined_guests"]] == ["vm-boot"] and inv["guests"] == []
    assert nic(inv, "eno49")["vfs"][2]["reserved_by"] == ["vm-boot"]
    doc = cli("set_vfs", set_args(2), expect="autostart_guests")
    assert doc["error"]["details"]["guests"] == ["vm-boot"] and "vm-boot" in doc["error"]["message"]
    assert dl360.read(UDEV) == udev_text(rule(ENO49, 4))
    doc = cli("set_vfs", set_args(2, allow_autostart_impact=True, wait_seconds=0), expect="vf_timeout")
    assert dl360.read(UDEV) == udev_text(rule(ENO49, 2))  # it went ahead (the fake tree keeps the links)
    cli("set_vfs", set_args(3), expect="vf_timeout")  # VF 2 stays: nothing to say


# -- 2. kernels older than 3.8 --------------------------------------------------------------------


def test_in_tree_igb_takes_one_max_vfs_for_every_port(cli_factory, tmp_path):
    host = fakesys.legacy_el6(tmp_path / "el6", igb_parm=fakesys.IN_TREE_IGB_PARM)
    cli = cli_factory(host)
    assert nic(cli("inventory", expect="ok")["result"], "eth0")["max_vfs_param"]["type"] == "uint"
    before = host.snapshot()
    doc = cli("set_vfs", set_args(4, pf="eth1", pci="0000:04:00.1"), expect="max_vfs_applies_to_all_ports")
    assert "0000:04:00.0" in doc["error"]["message"] and "apply_to_all_ports" in doc["error"]["message"]
    assert host.snapshot() == before
    res = cli("set_vfs", set_args(4, pf="eth1", pci="0000:04:00.1", apply_to_all_ports=True), expect="ok")["result"]
    assert host.read(MODPROBE).splitlines()[-1] == "options igb max_vfs=4"  # never a list: igb would not load
    assert res["max_vfs"]["form"] == "single" and res["max_vfs"]["applies_to_all_ports"] is True
    assert res["max_vfs"]["ports"] == {"0000:04:00.0": 4, "0000:04:00.1": 4}
    assert res["persisted"] is True and res["reboot_required"] is True
    # both ports now get 4: a request for 4 on the other port has nothing left to do
    assert cli("set_vfs", set_args(4, pf="eth0", pci="0000:04:00.0"), expect="ok")["result"]["actions"] == []


def test_legacy_initramfs_is_rebuilt_when_the_driver_loads_from_it(cli_factory, tmp_path):
    host = fakesys.legacy_el6(tmp_path / "el6")
    host.program_recorder("dracut")
    host.program("lsinitrd", "#!%s\necho usr/lib/modules/2.6.32/kernel/drivers/net/igb/igb.ko\n" % fakesys.SH)
    res = cli_factory(host)("set_vfs", set_args(2, pf="eth0", pci="0000:04:00.0"), expect="ok")["result"]
    kernel = "2.6.32-754.el6.x86_64"
    assert host.calls("dracut") == [["-f", "/boot/initramfs-%s.img" % kernel, kernel]]
    assert res["initramfs"]["contains_driver"] is True and res["initramfs"]["regenerated"] is True
    assert "rebuilt the initramfs" in res["actions"][-1]


def test_legacy_without_a_readable_parameter_type_writes_nothing(cli_factory, tmp_path):
    host = fakesys.legacy_el6(tmp_path / "el6")
    os.unlink(host.bin / "modinfo")
    before = host.snapshot()
    doc = cli_factory(host)("set_vfs", set_args(2, pf="eth0", pci="0000:04:00.0"), expect="max_vfs_type_unknown")
    assert "keeps igb from loading" in doc["error"]["message"]
    assert host.snapshot() == before


# -- 4. the PF's own link -------------------------------------------------------------------------


def test_pf_carrying_the_ssh_connection_is_refused_unless_allowed(cli, dl360):
    dl360.set_network({"eno49": ["10.1.0.5/24"], "eno1": ["10.2.0.5/24"]},
                      {"default": "eno49", "10.9.0.2": "eno49"}, ssh_connection="10.9.0.2 50100 10.1.0.5 22")
    inv = cli("inventory", expect="ok")["result"]
    assert inv["ssh_connection"]["known"] is True and inv["ssh_connection"]["devices"] == ["eno49"]
    link = nic(inv, "eno49")["link"]
    assert link["management"] is True and link["default_route"] is True
    assert link["addresses"] == [{"dev": "eno49", "address": "10.1.0.5/24"}]
    assert link["link_drop_seconds"] == 3 and link["link_drops_on_vf_change"] is True
    assert nic(inv, "eno50")["link"]["management"] is False and nic(inv, "eno1")["link"]["addresses"]
    before = dl360.snapshot()
    doc = cli("set_vfs", set_args(2), expect="management_link")
    message = doc["error"]["message"]
    assert "carries the SSH connection" in message and "allow_management_link" in message
    assert dl360.snapshot() == before
    cli("set_vfs", set_args(2, allow_management_link=True, wait_seconds=0), expect="vf_timeout")
    assert dl360.read("sys/class/net/eno49/device/sriov_numvfs") == "2\n"


def test_bonded_and_bridged_pf_reports_its_stack(cli, dl360):
    dl360.enslave("eno49", "bond0", "bond")
    dl360.enslave("bond0", "br0", "bridge")
    dl360.set_network({"br0": ["192.168.50.10/24"]}, {"default": "eno1"})
    link = nic(cli("inventory", expect="ok")["result"], "eno49")["link"]
    assert link["master"] == {"name": "bond0", "kind": "bond"}
    assert link["stacked"] == [{"name": "bond0", "kind": "bond"}, {"name": "br0", "kind": "bridge"}]
    assert link["addresses"] == [{"dev": "br0", "address": "192.168.50.10/24"}]
    assert link["default_route"] is False and link["management"] is None  # not over SSH here


# -- 5. other boot configuration ------------------------------------------------------------------


def test_foreign_udev_rule_is_reported_and_persisted_is_never_claimed_over_it(cli, dl360):
    dl360.write("etc/udev/rules.d/igb.rules",
                'ACTION=="add", SUBSYSTEM=="net", ENV{ID_NET_DRIVER}=="igb", ATTR{device/sriov_numvfs}="7"\n')
    inv = cli("inventory", expect="ok")["result"]
    for name in ("eno49", "eno50", "eno51", "eno52"):
        other = nic(inv, name)["other_config"]
        assert [(o["kind"], o["path"], o["count"]) for o in other] == [("udev", "/etc/udev/rules.d/igb.rules", 7)]
    assert nic(inv, "eno1").get("other_config") is None  # tg3: no SR-IOV
    before = dl360.snapshot()
    doc = cli("set_vfs", set_args(4), expect="other_boot_config")
    assert "/etc/udev/rules.d/igb.rules:1" in doc["error"]["message"] and "take_over" in doc["error"]["message"]
    assert dl360.snapshot() == before
    res = cli("set_vfs", set_args(4, take_over=True, wait_seconds=0), expect="vf_timeout")["error"]["details"]
    assert any(a.startswith("disabled /etc/udev/rules.d/igb.rules:1") for a in res["actions"])
    assert dl360.read("etc/udev/rules.d/igb.rules.sriov-console.bak").startswith('ACTION=="add"')
    assert dl360.read("etc/udev/rules.d/igb.rules").startswith("# Disabled by SR-IOV Console")
    # the rule's other PFs keep the 7 VFs it gave them at boot, now in the console's file
    assert dl360.read(UDEV) == udev_text(rule(ENO49, 4), rule("0000:04:00.1", 7), rule("0000:04:00.2", 7),
                                         rule("0000:04:00.3", 7))


def test_networkmanager_total_vfs_is_reported_and_taken_over(cli, dl360):
    path = "etc/NetworkManager/system-connections/eno49.nmconnection"
    dl360.write(path, "[connection]\nid=eno49\ntype=ethernet\ninterface-name=eno49\n\n[sriov]\ntotal-vfs=4\n", 0o600)
    dl360.program_recorder("nmcli")
    other = nic(cli("inventory", expect="ok")["result"], "eno49")["other_config"]
    assert [(o["kind"], o["count"], o["line"]) for o in other] == [("networkmanager", 4, 7)]
    cli("set_vfs", set_args(2), expect="other_boot_config")
    cli("set_vfs", set_args(4, persist=False, wait_seconds=0), expect="vf_timeout")  # not persisted: no conflict
    dl360.write("sys/class/net/eno49/device/sriov_numvfs", "0\n")
    doc = cli("set_vfs", set_args(2, take_over=True, wait_seconds=0), expect="vf_timeout")
    assert "# Disabled by SR-IOV Console" in dl360.read(path) and "[connection]\n" in dl360.read(path)
    assert os.stat(dl360.root / path).st_mode & 0o777 == 0o600
    assert os.stat(dl360.root / (path + ".sriov-console.bak")).st_mode & 0o777 == 0o600  # it may hold secrets
    assert dl360.calls("nmcli") == [["connection", "reload"]]
    assert "nmcli connection reload" in doc["error"]["details"]["actions"][-3]


def test_networkmanager_vf_settings_are_not_taken_over_silently(cli, dl360):
    dl360.write("etc/NetworkManager/system-connections/eno49.nmconnection",
                "[connection]\ninterface-name=eno49\n[sriov]\ntotal-vfs=4\nvf.0=mac=00:11:22:33:44:55\n", 0o600)
    before = dl360.snapshot()
    doc = cli("set_vfs", set_args(2, take_over=True), expect="other_boot_config_unsupported")
    assert "vf.0" in doc["error"]["message"]
    assert dl360.snapshot() == before


def test_netplan_systemd_and_rc_local_sources_are_found(cli, dl360):
    dl360.write("etc/netplan/50-sriov.yaml", "network:\n  version: 2\n  ethernets:\n    eno50:\n"
                "      virtual-function-count: 3\n    eno51:\n      dhcp4: false\n    vf0:\n      link: eno51\n")
    dl360.write("etc/systemd/system/sriov.service", "[Service]\nType=oneshot\n"
                "ExecStart=/bin/sh -c 'echo 5 > /sys/class/net/eno52/device/sriov_numvfs'\n")
    dl360.write("etc/systemd/system/multi-user.target.wants/sriov.service", "")
    dl360.write("etc/rc.local", "#!/bin/sh\necho 6 > /sys/bus/pci/devices/0000:04:00.0/sriov_numvfs\n", 0o755)
    inv = cli("inventory", expect="ok")["result"]
    found = {(o["kind"], o["pci_addresses"][0], o["count"], o["active"]) for o in inv["other_vf_config"]}
    assert found == {("netplan", "0000:04:00.1", 3, True), ("netplan", "0000:04:00.2", 1, True),
                     ("systemd", "0000:04:00.3", 5, True), ("rc.local", ENO49, 6, True)}
    dl360.program_recorder("systemctl")
    doc = cli("set_vfs", set_args(5, pf="eno52", pci="0000:04:00.3", wait_seconds=0), expect="vf_timeout")
    assert dl360.calls("systemctl") == []  # same count: no conflict
    dl360.write("sys/class/net/eno52/device/sriov_numvfs", "0\n")
    doc = cli("set_vfs", set_args(2, pf="eno52", pci="0000:04:00.3", take_over=True, wait_seconds=0),
              expect="vf_timeout")
    assert dl360.calls("systemctl") == [["disable", "sriov.service"]]
    assert any("systemctl disable sriov.service" in a for a in doc["error"]["details"]["actions"])
    cli("set_vfs", set_args(2, pf="eno51", pci="0000:04:00.2", take_over=True), expect="other_boot_config_unsupported")


# -- 6. PFs without a network interface -----------------------------------------------------------


def test_pfs_without_a_netdev_are_listed_and_refused_clearly(cli, dl360):
    dl360.add_pf_without_netdev("0000:81:00.0", "0000:80:01.0", "8086", "1572", driver="vfio-pci", totalvfs=64)
    dl360.add_pf_without_netdev("0000:81:00.1", "0000:80:01.0", "8086", "1572", driver=None, totalvfs=64)
    dl360.unbind("eno52")
    inv = cli("inventory", expect="ok")["result"]
    states = {p["pci_address"]: p["state"] for p in inv["sriov_pfs"]}
    assert states == {ENO49: "netdev", "0000:04:00.1": "netdev", "0000:04:00.2": "netdev",
                      "0000:04:00.3": "no_driver", "0000:81:00.0": "vfio", "0000:81:00.1": "no_driver"}
    assert inv["pfs_without_netdev"] == ["0000:04:00.3", "0000:81:00.0", "0000:81:00.1"]
    assert "eno52" not in [n["name"] for n in inv["nics"]]
    cli("set_vfs", set_args(2, pf=None, pci="0000:81:00.0"), expect="pf_bound_to_vfio")
    doc = cli("set_vfs", set_args(2, pf=None, pci="0000:81:00.1"), expect="pf_no_driver")
    assert "Bind it to its network driver" in doc["error"]["message"]
    cli("set_vfs", set_args(2, pf="eno52", pci="0000:04:00.3"), expect="pf_no_driver")  # not no_such_pf


def test_pf_with_another_driver_is_set_by_its_pci_address(cli, dl360):
    dl360.add_pf_without_netdev("0000:3d:00.0", "0000:3c:00.0", "8086", "37c8", driver="c6xx", totalvfs=16)
    doc = cli("set_vfs", set_args(4, pf=None, pci="0000:3d:00.0", wait_seconds=0), expect="vf_timeout")
    assert dl360.read("sys/bus/pci/devices/0000:3d:00.0/sriov_numvfs") == "4\n"
    assert doc["error"]["details"]["actions"][0] == "persisted 4 VFs for 0000:3d:00.0 in " + "/" + UDEV


def test_sriov_totalvfs_zero_is_not_capable_now_with_the_reason(cli, dl360):
    dl360.write("sys/class/net/eno50/device/sriov_totalvfs", "0\n")
    eno50 = nic(cli("inventory", expect="ok")["result"], "eno50")
    assert eno50["sriov_capable"] is False and eno50["sriov_capability"] is True
    assert "BIOS" in eno50["sriov_not_capable_reason"]
    doc = cli("set_vfs", set_args(1, pf="eno50", pci="0000:04:00.1"), expect="not_capable_now")
    assert "firmware" in doc["error"]["message"]


# -- 8. kernel-argument facts ---------------------------------------------------------------------


def test_firmware_iommu_tables(cli_factory, tmp_path):
    host = fakesys.dl360_gen9(tmp_path / "a")
    assert cli_factory(host)("inventory", expect="ok")["result"]["iommu"]["firmware"]["present"] is None
    host.write("sys/firmware/acpi/tables/APIC", "")
    firmware = cli_factory(host)("inventory", expect="ok")["result"]["iommu"]["firmware"]
    assert firmware["present"] is False and firmware["table"] is None  # VT-d off in the BIOS
    host.set_acpi_tables(("DMAR",))
    firmware = cli_factory(host)("inventory", expect="ok")["result"]["iommu"]["firmware"]
    assert firmware == {"acpi_tables_readable": True, "dmar": True, "ivrs": False, "table": "DMAR", "present": True}


def test_vfio_pci_ids_of_a_pf_the_host_uses_are_refused(cli, dl360):
    before = dl360.snapshot()
    doc = cli("kernel_args", {"add": ["intel_iommu=on", "vfio-pci.ids=8086:1521"]}, expect="vfio_ids_match_host_pf")
    assert "eno49" in doc["error"]["message"] and "8086:1520" in doc["error"]["message"]
    assert doc["error"]["details"]["vf_ids"] == ["8086:1520"]
    assert dl360.snapshot() == before
    dl360.program_update_grub()
    cli("kernel_args", {"add": ["vfio-pci.ids=8086:1520"]}, expect="ok")  # the VF id is fine


def test_bls_arguments_reach_kernels_installed_later(cli, dl360):
    dl360.set_grub(fakesys.DL360_GRUB + "GRUB_ENABLE_BLSCFG=true\n")
    dl360.write("usr/lib/kernel/install.d/20-grub.install", "read -r -d '' -a BOOT_OPTIONS < /etc/kernel/cmdline\n")
    dl360.write("boot/loader/entries/abc-5.14.0.conf", "title RHEL\nlinux /vmlinuz-5.14.0\n"
                "options root=/dev/mapper/rhel-root ro crashkernel=auto\n")
    dl360.program("grubby", "#!%s\n[ \"$1\" = --default-kernel ] && echo /boot/vmlinuz-5.14.0\nexit 0\n" % fakesys.SH)
    env = "# GRUB Environment Block\nkernelopts=root=/dev/mapper/rhel-root ro crashkernel=auto\n"
    dl360.write("fake/grubenv", env)
    dl360.program("grub2-editenv", """#!%s
if [ "$2" = list ]; then
  while read -r l; do case "$l" in "#"*) ;; *) echo "$l" ;; esac; done < "$FAKE_ROOT/fake/grubenv"; exit 0
fi
if [ "$2" = set ]; then printf '# GRUB Environment Block\\n%%s\\n' "$3" > "$FAKE_ROOT/fake/grubenv"; exit 0; fi
exit 1
""" % fakesys.SH)
    res = cli("kernel_args", {"add": ["intel_iommu=on", "iommu=pt"]}, expect="ok")["result"]
    expected = "root=/dev/mapper/rhel-root ro crashkernel=auto intel_iommu=on iommu=pt"
    assert dl360.read("etc/kernel/cmdline") == expected + "\n"
    assert dl360.read("fake/grubenv").endswith("kernelopts=root=/dev/mapper/rhel-root ro crashkernel=auto "
                                               "intel_iommu=on iommu=pt\n")
    assert res["later_kernels"]["kernel_cmdline_changed"] and res["later_kernels"]["kernelopts_changed"]
    again = cli("kernel_args", {"add": ["intel_iommu=on", "iommu=pt"]}, expect="ok")["result"]
    assert again["actions"] == []
