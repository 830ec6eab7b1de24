"""The VF operations of the agent on a fake host: vf_config through a fake iproute2 `ip`, vf_driver
through sysfs driver_override / unbind / drivers_probe, libvirt_network through a fake `virsh`, the
PF MTU on set_vfs, the managed VF state and the udev rule that brings it back (apply_persisted).

CLI tests run the agent as a program under Python 3.6 and the current Python (the `python` fixture).
sysfs cannot bind drivers in a plain directory tree, so the vf_driver success paths run the agent
in-process with a System whose writes to those three attributes do what the PCI core does.
"""

# ruff: noqa: UP031  (printf-style kept on purpose: it mirrors the Python 3.6 agent)

import hashlib
import json
import os
import subprocess

import pytest

from tests import fakesys

STATE = "etc/sriov-console/vf-settings.json"
RULES = "etc/udev/rules.d/71-sriov-console-vf.rules"
COPY = "usr/local/libexec/sriov-console/sriov_agent.py"
VF_UNIT = "etc/systemd/system/sriov-console-vf@.service"
BOOT_UNIT = "etc/systemd/system/sriov-console-vf-boot.service"
FULL_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PF = {"pf": "eno49", "pci_address": "0000:04:00.0"}


@pytest.fixture
def dl360(tmp_path):
    host = fakesys.dl360_gen9(tmp_path / "host")
    host.program_ip()
    host.program_recorder("systemctl-calls")
    host.program("systemctl", "#!%s\n\"$FAKE_ROOT/bin/systemctl-calls\" \"$@\"\nW=\"$FAKE_ROOT/etc/systemd/system/"
                              "multi-user.target.wants\"\ncase \"$1\" in enable) /bin/mkdir -p \"$W\"; "
                              ": > \"$W/$2\";; disable) /bin/rm -f \"$W/$2\";; esac\n" % fakesys.SH)
    host.add_vfs("eno49", 4)
    host.write(host.nics["eno49"]["dev_rel"] + "/numa_node", "1\n")
    host.write(host.nics["eno49"]["dev_rel"] + "/local_cpulist", "12-23,36-47\n")
    host.write(host.nics["eno49"]["dev_rel"] + "/sriov_drivers_autoprobe", "1\n")
    host.write(host.nics["eno50"]["dev_rel"] + "/numa_node", "-1\n")
    return host


@pytest.fixture
def cli(cli_factory, dl360):
    return cli_factory(dl360)


def vf_state(host, pf="eno49"):
    path = host.root / "fake/ip" / ("vf-%s.json" % pf)
    return json.loads(path.read_text()) if path.exists() else {}


def stable_mac(machine_id, vf_pci):
    digest = bytearray(hashlib.sha256(("%s:%s" % (machine_id, vf_pci)).encode()).digest()[:6])
    digest[0] = (digest[0] & 0xfc) | 0x02
    return ":".join("%02x" % b for b in digest)


# ------------------------------------------------------------------------------------ inventory


def test_inventory_shows_numa_vf_settings_and_every_libvirt_network(cli, dl360):
    cli("vf_config", dict(PF, vfs=[{"index": 1, "vlan": 100, "qos": 5, "trust": True}], persist=True), expect="ok")
    dl360.program_virsh(
        devices={"vm-pool": fakesys.network_interface_xml("pool49")},
        networks={"pool49": "<network><name>pool49</name><metadata><m:managed xmlns:m='https://sriov-console."
                            "invalid/xmlns/network/1'/></metadata><forward mode='hostdev' managed='yes'>"
                            "<pf dev='eno49'/></forward></network>",
                  "default": "<network><name>default</name><forward mode='nat'/></network>"})
    res = cli("inventory", expect="ok")["result"]
    nics = {n["name"]: n for n in res["nics"]}
    eno49 = nics["eno49"]
    assert (eno49["numa_node"], eno49["local_cpulist"]) == (1, "12-23,36-47")
    assert nics["eno50"]["numa_node"] is None  # -1: the firmware names no node
    assert eno49["vf_settings_known"] is True and eno49["sriov_drivers_autoprobe"] == 1
    vf1 = eno49["vfs"][1]
    assert (vf1["vlan"], vf1["qos"], vf1["trust"], vf1["spoofchk"], vf1["link_state"]) == (100, 5, True, True, "auto")
    assert (vf1["admin_mac"], vf1["max_tx_rate"], vf1["min_tx_rate"]) == ("00:00:00:00:00:00", 0, 0)
    assert vf1["driver"] == "igbvf" and vf1["driver_override"] is None
    assert vf1["persisted_settings"] == {"vlan": 100, "qos": 5, "trust": True}
    assert eno49["vfs"][0]["persisted_settings"] is None and eno49["vfs"][0]["vlan"] == 0
    networks = {n["name"]: n for n in res["libvirt_networks"]}
    assert sorted(networks) == ["default", "pool49"] and res["libvirt_networks_error"] is None
    pool = networks["pool49"]
    assert (pool["vf_pool"], pool["managed"], pool["active"], pool["autostart"]) == (True, True, True, True)
    assert pool["pfs"] == ["eno49"] and pool["guests"] == ["vm-pool"] and len(pool["vf_pci"]) == 4
    assert (networks["default"]["vf_pool"], networks["default"]["managed"]) == (False, False)
    sriov_pf = next(p for p in res["sriov_pfs"] if p["pci_address"] == "0000:04:00.0")
    assert sriov_pf["numa_node"] == 1 and sriov_pf["vfs"][1]["vlan"] == 100


# ------------------------------------------------------------------------------------ vf_config


def test_vf_config_applies_verifies_persists_and_is_idempotent(cli, dl360):
    request = dict(PF, vfs=[{"index": 0, "mac": "stable", "spoofchk": False},
                            {"index": 2, "vlan": 42, "max_tx_rate": 500}], persist=True)
    doc = cli("vf_config", request, expect="ok")
    res = doc["result"]
    mac = stable_mac("0123456789abcdef0123456789abcdef", dl360.vf_pci("eno49", 0))
    assert int(mac[:2], 16) & 3 == 2  # locally administered, unicast
    assert res["before"]["vfs"]["0"]["admin_mac"] == "00:00:00:00:00:00"
    assert res["after"]["vfs"]["0"]["admin_mac"] == mac and res["after"]["vfs"]["0"]["spoofchk"] is False
    assert (res["after"]["vfs"]["2"]["vlan"], res["after"]["vfs"]["2"]["max_tx_rate"]) == (42, 500)
    assert "ip link set dev eno49 vf 0 mac %s" % mac in res["actions"]
    assert res["changed"] is True and res["persisted"] is True
    assert vf_state(dl360)["2"] == {"vlan": 42, "max_tx_rate": 500}
    state = json.loads(dl360.read(STATE))["pfs"]["0000:04:00.0"]["vfs"]
    assert state == {"0": {"mac": mac, "spoofchk": False}, "2": {"vlan": 42, "max_tx_rate": 500}}
    # one generic rule: VF addresses follow offset/stride, which may change with NumVFs
    rule = [line for line in dl360.read(RULES).splitlines() if not line.startswith("#")]
    assert rule == ['ACTION=="add", SUBSYSTEM=="pci", TEST=="physfn", TAG+="systemd", '
                    'ENV{SYSTEMD_WANTS}+="sriov-console-vf@%k.service"']
    vf_unit, boot_unit = dl360.read(VF_UNIT), dl360.read(BOOT_UNIT)
    assert "ExecStart=/usr/bin/python3 /%s --vf %%i apply_persisted" % COPY in vf_unit
    assert "ExecStart=/usr/bin/python3 /%s --boot apply_persisted" % COPY in boot_unit
    assert "Environment=" + FULL_PATH in vf_unit and "Environment=" + FULL_PATH in boot_unit
    assert "After=local-fs.target systemd-modules-load.service systemd-udev-trigger.service" in boot_unit
    assert "Before=libvirtd.service virtqemud.service virtnetworkd.service network-pre.target" in boot_unit
    assert "WantedBy=multi-user.target" in boot_unit and "Managed by SR-IOV Console" in boot_unit
    assert dl360.calls("systemctl-calls") == [["daemon-reload"], ["enable", "sriov-console-vf-boot.service"]]
    assert dl360.read(COPY) == fakesys.AGENT_PATH.read_text()
    assert os.stat(dl360.root / COPY).st_mode & 0o111
    again = cli("vf_config", request, expect="ok")["result"]
    assert again["changed"] is False and again["actions"] == [] and again["after"] == res["after"]


def test_vf_config_persist_false_drops_the_persisted_settings_and_keeps_the_live_ones(cli, dl360):
    dl360.write(VF_UNIT, "[Service]\nExecStart=/usr/local/bin/site-vf-hook %i\n")  # not the console's
    cli("vf_config", dict(PF, vfs=[{"index": 1, "trust": True}], persist=True), expect="ok")
    assert dl360.read(VF_UNIT + ".sriov-console.bak") == "[Service]\nExecStart=/usr/local/bin/site-vf-hook %i\n"
    res = cli("vf_config", dict(PF, vfs=[{"index": 1, "trust": True}], persist=False), expect="ok")["result"]
    assert res["persisted"] is False and vf_state(dl360)["1"]["trust"] is True
    for path in (STATE, RULES, COPY, BOOT_UNIT, VF_UNIT + ".sriov-console.bak", "etc/sriov-console",
                 "usr/local/libexec/sriov-console"):
        assert not dl360.exists(path), path
    assert dl360.read(VF_UNIT) == "[Service]\nExecStart=/usr/local/bin/site-vf-hook %i\n"  # put back
    assert dl360.calls("systemctl-calls")[-1] == ["disable", "sriov-console-vf-boot.service"]


@pytest.mark.parametrize("vfs, words", [
    ([{"index": 0, "qos": 3}], "qos needs a vlan"),
    ([{"index": 0, "vlan": 4096}], "at most 4095"),
    ([{"index": 0, "mac": "01:00:5e:00:00:01"}], "unicast MAC"),
    ([{"index": 0, "link_state": "up"}], "link_state must be one of"),
    ([{"index": 0, "min_tx_rate": 900, "max_tx_rate": 100}], "min_tx_rate must not exceed"),
    ([{"index": 0, "colour": "red"}], "unknown settings: colour"),
    ([{"index": 0}, {"index": 0, "vlan": 2}], "twice"),
])
def test_vf_config_bad_input_is_refused_and_writes_nothing(cli, dl360, vfs, words):
    before = dl360.snapshot()
    doc = cli("vf_config", dict(PF, vfs=vfs), expect="bad_request")
    assert words in doc["error"]["message"] and doc["_exit"] == 2
    assert dl360.snapshot() == before


def test_vf_config_no_such_vf_and_vf_in_use(cli, dl360):
    doc = cli("vf_config", dict(PF, vfs=[{"index": 6, "vlan": 3}]), expect="no_such_vf")
    assert doc["error"]["details"]["missing"] == [6]
    dl360.program_virsh({"vm-db": [dl360.vf_pci("eno49", 3)]})
    doc = cli("vf_config", dict(PF, vfs=[{"index": 3, "vlan": 7}]), expect="vf_in_use")
    assert doc["error"]["details"]["guests"] == ["vm-db"] and vf_state(dl360) == {}
    res = cli("vf_config", dict(PF, vfs=[{"index": 3, "vlan": 7}], allow_guest_impact=True), expect="ok")["result"]
    assert res["after"]["vfs"]["3"]["vlan"] == 7 and "vm-db" in res["warnings"][0]


def test_a_setting_the_driver_refuses_is_named_and_the_vf_restored(cli, dl360):
    dl360.program_ip(unsupported={"eno49": ["link_state"]})
    doc = cli("vf_config", dict(PF, vfs=[{"index": 0, "vlan": 9, "link_state": "enable"}]),
              expect="vf_setting_unsupported")
    details = doc["error"]["details"]
    assert details["field"] == "link_state" and details["unsupported"] is True and details["index"] == 0
    assert "does not support link_state" in doc["error"]["message"]
    assert vf_state(dl360)["0"]["vlan"] == 0  # the VLAN set before the refusal was put back
    assert any(a.startswith("restored: ip link set dev eno49 vf 0 vlan 0") for a in details["actions"])
    assert not dl360.exists(STATE)


def test_udev_applies_persisted_settings_to_a_re_created_vf(cli, dl360, python):
    cli("vf_config", dict(PF, vfs=[{"index": 1, "vlan": 100, "trust": True}], persist=True), expect="ok")
    dl360.remove_vfs("eno49")  # VFs destroyed: the PF driver forgets their settings
    dl360.add_vfs("eno49", 4)
    assert vf_state(dl360) == {}
    # exactly what the udev rule runs on the VF's add event (%k = the VF's PCI address)
    argv = [python, str(fakesys.AGENT_PATH), "--root", str(dl360.root), "--vf", dl360.vf_pci("eno49", 1),
            "apply_persisted"]
    proc = subprocess.run(argv, env=dl360.env(), capture_output=True, text=True, timeout=60)
    res = json.loads(proc.stdout)["result"]
    assert proc.returncode == 0 and res["errors"] == [] and res["applied"] is True
    assert vf_state(dl360)["1"] == {"vlan": 100, "trust": True}
    assert vf_state(dl360).get("0", {}).get("vlan", 0) == 0


# ------------------------------------------------------------------------------------ vf_driver


def give_iommu_groups(host):
    host.set_iommu(True)
    for index in range(4):
        real = os.path.realpath(str(host.root / ("sys/bus/pci/devices/" + host.vf_pci("eno49", index))))
        host.link(os.path.relpath(real, str(host.root)) + "/iommu_group", "sys/kernel/iommu_groups/%d" % index)


def pci_kernel_system(agent, host, late_probe=False, probe_error=None):
    """The real System on the fake tree, with the PCI core's answer to driver_override, a driver's
    unbind and drivers_probe (sysfs-bus-pci): only the driver driver_override names may bind, an
    empty write clears it; the kernel's own match binds the VF driver (igbvf). late_probe: the
    kernel's own probe of a just-added VF finishes while the override is written (it held the
    device lock); probe_error: drivers_probe of a VF with that driver_override fails (errno)."""
    class PciKernel(agent.System):
        def agent_source(self):  # what the bootstrap ran: the copy udev runs is made of it
            return fakesys.AGENT_PATH.read_bytes()

        def write_sysfs(self, path, data, timeout):
            return self.write_text(path, data)

        def write_text(self, path, data):
            value = data.strip()
            if path.endswith("/driver_override"):
                dev = path.rsplit("/", 1)[0].lstrip("/")
                if late_probe and not host.exists(dev + "/driver"):
                    host.link(dev + "/driver", "sys/bus/pci/drivers/igbvf")
                host.write(path, (value or "(null)") + "\n")
            elif path.endswith("/unbind"):
                dev = host.root / ("sys/bus/pci/devices/" + value)
                if os.path.basename(os.readlink(str(dev / "driver"))) != path.split("/")[-2]:
                    raise OSError(19, "No such device")
                os.unlink(str(dev / "driver"))
            elif path == "/sys/bus/pci/drivers_probe":
                dev = "sys/bus/pci/devices/" + value
                override = host.read(dev + "/driver_override").strip()
                if probe_error is not None and override == probe_error[0]:
                    raise OSError(probe_error[1], os.strerror(probe_error[1]))
                driver = "igbvf" if override == "(null)" else override
                if not host.exists(dev + "/driver") and host.exists("sys/bus/pci/drivers/" + driver):
                    host.link(dev + "/driver", "sys/bus/pci/drivers/" + driver)
            else:
                return agent.System.write_text(self, path, data)

    return PciKernel(str(host.root))


def call(agent, system, op, args):
    status, out, _err = agent.run_payload(json.dumps({"op": op, "args": args}).encode(), system)
    doc = json.loads(out)
    doc["_exit"] = status
    return doc


@pytest.fixture
def pci_host(dl360, monkeypatch):
    for key, value in dl360.env().items():  # the in-process agent finds the fake programs on PATH
        monkeypatch.setenv(key, value)
    for index in range(4):
        dl360.write("sys/bus/pci/devices/%s/driver_override" % dl360.vf_pci("eno49", index), "(null)\n")
    dl360.program("modprobe", "#!%s\n[ \"$1\" = vfio-pci ] && "
                              "/bin/mkdir -p \"$FAKE_ROOT/sys/bus/pci/drivers/vfio-pci\"\n" % fakesys.SH)
    give_iommu_groups(dl360)
    return dl360


def driver_of(host, index):
    link = host.root / ("sys/bus/pci/devices/%s/driver" % host.vf_pci("eno49", index))
    return os.path.basename(os.readlink(str(link))) if os.path.lexists(str(link)) else None


def test_vf_driver_binds_ranges_loads_vfio_and_persists(agent, pci_host):
    system = pci_kernel_system(agent, pci_host)
    ranges = [{"first": 0, "last": 1, "driver": "vfio-pci"}, {"first": 2, "last": 3, "driver": "igbvf"}]
    doc = call(agent, system, "vf_driver", dict(PF, ranges=ranges))
    assert doc["ok"], doc
    res = doc["result"]
    assert [driver_of(pci_host, i) for i in range(4)] == ["vfio-pci", "vfio-pci", "igbvf", "igbvf"]
    assert res["actions"][0] == "loaded the vfio-pci module (modprobe vfio-pci)"
    assert "unbound %s from igbvf" % pci_host.vf_pci("eno49", 0) in res["actions"]
    assert res["before"]["vfs"]["0"] == {"pci_address": pci_host.vf_pci("eno49", 0), "driver": "igbvf",
                                         "driver_override": None}
    assert res["after"]["vfs"]["0"]["driver_override"] == "vfio-pci" and res["after"]["sriov_drivers_autoprobe"] == 1
    assert res["changed"] is True and res["persisted"] is True
    state = json.loads(pci_host.read(STATE))["pfs"]["0000:04:00.0"]["drivers"]
    assert state == {"0": "vfio-pci", "1": "vfio-pci", "2": "igbvf", "3": "igbvf"}
    again = call(agent, system, "vf_driver", dict(PF, ranges=ranges))["result"]
    assert again["changed"] is False and again["actions"] == []
    back = call(agent, system, "vf_driver", dict(PF, ranges=[{"first": 0, "last": 3, "driver": "default"}]))
    assert [driver_of(pci_host, i) for i in range(4)] == ["igbvf"] * 4
    assert back["result"]["after"]["vfs"]["1"]["driver_override"] is None
    assert not pci_host.exists(STATE)  # "default" is the kernel's own match: nothing left to persist


def test_vf_driver_wins_against_the_kernels_own_probe_of_a_new_vf(agent, pci_host):
    vf = pci_host.vf_pci("eno49", 0)
    os.unlink(str(pci_host.root / ("sys/bus/pci/devices/%s/driver" % vf)))  # just added: not probed yet
    system = pci_kernel_system(agent, pci_host, late_probe=True)
    doc = call(agent, system, "vf_driver", dict(PF, ranges=[{"first": 0, "last": 0, "driver": "vfio-pci"}]))
    assert doc["ok"], doc
    assert driver_of(pci_host, 0) == "vfio-pci"
    assert "unbound %s from igbvf" % vf in doc["result"]["actions"]


def test_a_failed_probe_puts_the_previous_driver_back(agent, pci_host):
    vf = pci_host.vf_pci("eno49", 2)
    system = pci_kernel_system(agent, pci_host, probe_error=("vfio-pci", 22))
    doc = call(agent, system, "vf_driver", dict(PF, ranges=[{"first": 2, "last": 2, "driver": "vfio-pci"}]))
    assert doc["error"]["code"] == "vf_bind_failed" and doc["error"]["details"]["step"] == "drivers_probe"
    assert driver_of(pci_host, 2) == "igbvf"  # not left without a driver
    assert pci_host.read("sys/bus/pci/devices/%s/driver_override" % vf) == "(null)\n"
    assert "restored driver_override of %s to (none)" % vf in doc["error"]["details"]["actions"]


def test_vfio_pci_is_refused_for_a_vf_without_an_iommu_group(cli, dl360):
    before = dl360.snapshot()
    doc = cli("vf_driver", dict(PF, ranges=[{"first": 1, "last": 1, "driver": "vfio-pci"}]), expect="vf_bind_failed")
    assert doc["error"]["details"]["step"] == "iommu_group" and "intel_iommu=on" in doc["error"]["message"]
    assert {k: v for k, v in dl360.snapshot().items() if not k.startswith("tmp/sriov-console/")} == before


def test_vf_driver_refuses_a_vf_a_guest_holds(agent, pci_host):
    pci_host.program_virsh({"vm-dpdk": [pci_host.vf_pci("eno49", 1)]})
    system = pci_kernel_system(agent, pci_host)
    doc = call(agent, system, "vf_driver", dict(PF, ranges=[{"first": 0, "last": 3, "driver": "vfio-pci"}]))
    assert doc["error"]["code"] == "vf_in_use" and doc["error"]["details"]["guests"] == ["vm-dpdk"]
    assert [driver_of(pci_host, i) for i in range(4)] == ["igbvf"] * 4


@pytest.mark.parametrize("ranges, code, words", [
    ([{"first": 0, "last": 2, "driver": "vfio-pci"}, {"first": 2, "last": 3, "driver": "igbvf"}], "bad_request",
     "ranges overlap"),
    ([{"first": 3, "last": 1, "driver": "vfio-pci"}], "bad_request", "before first"),
    ([{"first": 0, "last": 0, "driver": "vfio pci; reboot"}], "bad_request", "driver must be"),
    ([{"first": 2, "last": 6, "driver": "vfio-pci"}], "no_such_vf", "there is no VF 4, 5, 6"),
])
def test_vf_driver_bad_ranges_touch_nothing(cli, dl360, ranges, code, words):
    before = dl360.snapshot()
    doc = cli("vf_driver", dict(PF, ranges=ranges), expect=code)
    assert words in doc["error"]["message"]
    assert dl360.snapshot() == before


# ------------------------------------------------------------------------------------ libvirt_network


def test_libvirt_network_defines_starts_autostarts_and_is_idempotent(cli, dl360):
    dl360.program_virsh(networks={"default": "<network><name>default</name><forward mode='nat'/></network>"})
    request = {"name": "pool-eno49", "pf": "eno49", "pci_address": "0000:04:00.0", "state": "present",
               "autostart": True}
    res = cli("libvirt_network", request, expect="ok")["result"]
    assert res["actions"] == ["virsh net-define /run/sriov-console/pool-eno49.xml", "virsh net-start pool-eno49",
                              "virsh net-autostart pool-eno49"]
    xml = dl360.read("fake/virsh/net-pool-eno49.xml")
    assert "<forward mode='hostdev' managed='yes'>" in xml and "<pf dev='eno49'/>" in xml
    assert res["before"] is None and res["after"]["managed"] is True and res["after"]["active"] is True
    assert not dl360.exists("run/sriov-console/pool-eno49.xml")  # the definition file is not left behind
    assert cli("libvirt_network", request, expect="ok")["result"]["actions"] == []
    res = cli("libvirt_network", dict(request, autostart=False), expect="ok")["result"]
    assert res["actions"] == ["virsh net-autostart pool-eno49 --disable"] and res["after"]["autostart"] is False


def test_libvirt_network_refuses_a_foreign_network_and_removal_while_used(cli, dl360):
    foreign = "<network><name>pool</name><forward mode='passthrough'><pf dev='eno50'/></forward></network>"
    dl360.program_virsh(networks={"pool": foreign})
    request = {"name": "pool", "pf": "eno49", "pci_address": "0000:04:00.0", "state": "present"}
    doc = cli("libvirt_network", request, expect="network_exists")
    assert "did not define it" in doc["error"]["message"]
    cli("libvirt_network", {"name": "pool", "state": "absent"}, expect="network_not_managed")
    cli("libvirt_network", dict(request, name="mine"), expect="ok")
    dl360.program_virsh(devices={"vm-a": fakesys.network_interface_xml("mine")}, networks={"pool": foreign})
    doc = cli("libvirt_network", {"name": "mine", "state": "absent"}, expect="network_in_use")
    assert doc["error"]["details"]["guests"] == ["vm-a"]
    dl360.program_virsh(networks={"pool": foreign})
    res = cli("libvirt_network", {"name": "mine", "state": "absent"}, expect="ok")["result"]
    assert res["actions"] == ["virsh net-destroy mine", "virsh net-undefine mine"] and res["after"] is None
    bad = cli("libvirt_network", {"name": "a b", "state": "absent"}, expect="bad_request")
    assert "1-50 characters" in bad["error"]["message"]


# ------------------------------------------------------------------------------------ set_vfs mtu


def test_set_vfs_sets_and_persists_the_pf_mtu(cli, dl360):
    dl360.write("etc/udev/rules.d/70-sriov-console.rules",
                "# Managed by SR-IOV Console. Do not edit: this file is rewritten by the console.\n"
                'ACTION=="add", SUBSYSTEM=="net", KERNELS=="0000:04:00.0", ATTR{device/sriov_numvfs}="4"\n')
    res = cli("set_vfs", dict(PF, count=4, mtu=9000), expect="ok")["result"]
    assert (res["before"]["mtu"], res["after"]["mtu"]) == (1500, 9000) and res["persisted"] is True
    assert "ip link set dev eno49 mtu 9000" in res["actions"]
    assert json.loads(dl360.read(STATE))["pfs"]["0000:04:00.0"]["mtu"] == 9000
    assert "mtu" not in dl360.read(RULES)  # the boot unit sets it, not a KERNELS== match on every netdev below
    cli("set_vfs", dict(PF, count=4, mtu=100000), expect="bad_request")
    res = cli("set_vfs", dict(PF, count=4, mtu=9000, persist=False), expect="ok")["result"]
    assert res["after"]["mtu"] == 9000  # the live MTU stays; it is no longer restored at boot
    assert not dl360.exists(STATE) and not dl360.exists(RULES)


def test_the_boot_unit_applies_every_persisted_vf_and_the_pf_mtu(cli, dl360, python):
    dl360.write("etc/udev/rules.d/70-sriov-console.rules",
                "# Managed by SR-IOV Console. Do not edit: this file is rewritten by the console.\n"
                'ACTION=="add", SUBSYSTEM=="net", KERNELS=="0000:04:00.0", ATTR{device/sriov_numvfs}="4"\n')
    cli("vf_config", dict(PF, vfs=[{"index": 1, "vlan": 100}, {"index": 3, "trust": True}]), expect="ok")
    cli("set_vfs", dict(PF, count=4, mtu=9000), expect="ok")
    dl360.remove_vfs("eno49")  # a reboot: the PF driver forgot the VF settings, the MTU is back to 1500
    dl360.add_vfs("eno49", 4)
    dl360.write("sys/class/net/eno49/mtu", "1500\n")
    dl360.program_recorder("udevadm")
    # exactly what the boot unit runs
    argv = [python, str(fakesys.AGENT_PATH), "--root", str(dl360.root), "--boot", "apply_persisted"]
    proc = subprocess.run(argv, env=dl360.env(), capture_output=True, text=True, timeout=60)
    res = json.loads(proc.stdout)["result"]
    assert proc.returncode == 0 and res["errors"] == [], res
    assert dl360.calls("udevadm") == [["settle", "--timeout=60"]]
    assert (vf_state(dl360)["1"]["vlan"], vf_state(dl360)["3"]["trust"]) == (100, True)
    assert "ip link set dev eno49 mtu 9000" in res["actions"]


def test_without_path_the_agent_searches_the_system_directories(agent, monkeypatch):
    monkeypatch.delenv("PATH", raising=False)  # what udev gives a RUN program
    status, out, _err = agent.run_payload(b'{"op": "no_such_op"}', agent.System("/"))
    assert status == 2 and os.environ["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_through_the_bootstrap_the_agent_knows_its_own_bytes(python):
    """The copy the VF udev rule runs is made of the exact bytes the controller sent: the bootstrap
    keeps them (and their sha256) where the agent finds them."""
    from remote.protocol import BOOTSTRAP, encode_payload

    source = fakesys.AGENT_PATH.read_bytes()
    check = BOOTSTRAP.replace("sys.exit(g['remote_main'](r[n:]))",
                              "sys.stdout.write(str(g['_own_source'](object()) == a))")
    assert check != BOOTSTRAP
    proc = subprocess.run([python, "-c", check], input=encode_payload(source, {"op": "inventory"}),
                          capture_output=True, timeout=60)
    assert proc.stdout == b"True", proc.stderr


def test_a_setting_the_driver_does_not_keep_fails_verification(cli, dl360):
    dl360.program_ip(ignored={"eno49": ["trust"]})
    doc = cli("vf_config", dict(PF, vfs=[{"index": 2, "trust": True}]), expect="vf_verify_failed")
    assert {k: doc["error"]["details"][k] for k in ("index", "field", "want", "got")} == {
        "index": 2, "field": "trust", "want": True, "got": False}
    assert not dl360.exists(STATE)


def test_vf_config_fails_closed_when_guests_cannot_be_known(cli, dl360):
    os.remove(str(dl360.bin / "virsh"))
    dl360.write("proc/4242/comm", "qemu-system-x86\n")
    doc = cli("vf_config", dict(PF, vfs=[{"index": 0, "vlan": 3}]), expect="guest_check_failed")
    assert "qemu process" in doc["error"]["message"] and vf_state(dl360) == {}


def test_a_vf_the_kernel_does_not_rebind_is_reported(cli, dl360):
    """Through the real device-access child (both interpreters): plain files take the writes, but
    nothing unbinds igbvf, so the VF is not on vfio-pci afterwards."""
    vf = dl360.vf_pci("eno49", 0)
    give_iommu_groups(dl360)
    dl360.write("sys/bus/pci/devices/%s/driver_override" % vf, "(null)\n")
    dl360.write("sys/bus/pci/drivers/igbvf/unbind", "")
    dl360.write("sys/bus/pci/drivers/vfio-pci/bind", "")
    doc = cli("vf_driver", dict(PF, ranges=[{"first": 0, "last": 0, "driver": "vfio-pci"}]), expect="vf_bind_failed")
    details = doc["error"]["details"]
    assert (details["step"], details["bound"], details["pci_address"]) == ("verify", "igbvf", vf)
    assert details["actions"][:2] == ["set driver_override of %s to vfio-pci" % vf, "unbound %s from igbvf" % vf]
    assert details["actions"][2] == "restored driver_override of %s to (none)" % vf
    # the restore wrote an empty override (a plain file, unlike sysfs, is not truncated by a write)
    assert dl360.read("sys/bus/pci/devices/%s/driver_override" % vf).startswith("\n")
    assert dl360.read("sys/bus/pci/drivers/igbvf/unbind") == vf
    assert not dl360.exists(STATE)


def test_vf_driver_refuses_a_vf_interface_the_host_uses(agent, pci_host):
    pci_host.set_network({"eno49v0": ["192.168.7.2/24"]}, {"default": "eno1"})
    vf2 = pci_host.vf_pci("eno49", 2)
    real = os.path.realpath(str(pci_host.root / ("sys/bus/pci/devices/%s/net" % vf2)))
    for name in os.listdir(real):  # `ip link set dev eno49v2 netns ct1`: igbvf stays, the interface leaves
        os.rename(os.path.join(real, name), str(pci_host.root / ("fake/moved-" + name)))
    system = pci_kernel_system(agent, pci_host)
    doc = call(agent, system, "vf_driver", dict(PF, ranges=[{"first": 0, "last": 2, "driver": "vfio-pci"}]))
    assert doc["error"]["code"] == "vf_in_use", doc
    used = dict((vf["index"], vf["used_by"]) for vf in doc["error"]["details"]["vfs"])
    assert used[0] == ["eno49v0 carries 192.168.7.2/24"]
    assert "its interface is not in this network namespace" in used[2][0] and 1 not in used
    assert [driver_of(pci_host, i) for i in range(3)] == ["igbvf"] * 3


def test_vf_config_says_libvirt_decides_mac_and_vlan_of_a_pool_vf(cli, dl360):
    dl360.program_virsh(networks={"pool49": "<network><name>pool49</name><forward mode='hostdev' managed='yes'>"
                                            "<pf dev='eno49'/></forward></network>"})
    res = cli("vf_config", dict(PF, vfs=[{"index": 1, "vlan": 30}, {"index": 2, "trust": True}]), expect="ok")["result"]
    assert len(res["warnings"]) == 1 and res["warnings"][0].startswith("VF 1 is handed out by libvirt (network pool49)")
    assert "<vlan><tag id=" in res["warnings"][0] and vf_state(dl360)["1"]["vlan"] == 30


def test_a_rate_the_pf_refuses_without_link_is_deferred_at_boot(cli, dl360, python):
    cli("vf_config", dict(PF, vfs=[{"index": 1, "vlan": 5, "max_tx_rate": 400}]), expect="ok")
    dl360.remove_vfs("eno49")
    dl360.add_vfs("eno49", 4)
    dl360.program_ip(rate_needs_link=["eno49"])
    dl360.write("sys/class/net/eno49/carrier", "0\n")  # the link is not up yet at VF add time
    argv = [python, str(fakesys.AGENT_PATH), "--root", str(dl360.root), "--vf", dl360.vf_pci("eno49", 1),
            "apply_persisted"]
    proc = subprocess.run(argv, env=dl360.env(), capture_output=True, text=True, timeout=60)
    res = json.loads(proc.stdout)["result"]
    assert res["errors"] == [] and "deferred max_tx_rate of eno49 VF 1: the PF link is down" in res["actions"]
    assert vf_state(dl360)["1"]["vlan"] == 5  # the settings before the rate are applied
