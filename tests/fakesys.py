"""Fake host trees (/sys, /proc, /etc, /boot) and fake programs for agent tests.

A FakeHost lays out, under a temporary root, the files and the symlinks the Linux kernel shows:

    sys/class/net/eno49 -> ../../devices/pci0000:00/0000:00:03.0/0000:04:00.0/net/eno49
    .../0000:04:00.0/net/eno49/device -> ../../../0000:04:00.0
    .../0000:04:00.0/driver -> ../../../../bus/pci/drivers/igb
    .../0000:04:00.0/virtfn0 -> ../0000:04:10.0       .../0000:04:10.0/physfn -> ../0000:04:00.0

and a bin/ directory of small programs (ethtool, update-grub, virsh, systemd-run, grubby, ...)
that read their data from, and record their calls under, $FAKE_ROOT. Run the agent with
`--root <root>` and env() so that PATH holds only those programs.
"""

# ruff: noqa: UP031  (printf-style kept on purpose: it mirrors the Python 3.6 agent and shell snippets)

import json
import os
import shutil
import sys
from pathlib import Path

SH = shutil.which("sh") or "/bin/sh"
# SRIOV_AGENT_UNDER_TEST=<path>: run the agent tests against another agent (e.g. an older one)
AGENT_PATH = Path(os.environ.get("SRIOV_AGENT_UNDER_TEST") or
                  Path(__file__).resolve().parent.parent / "agent" / "sriov_agent.py")


def _vf_pci(pf_pci, index):
    """I350-style VF addresses: the PF's bus, devfn 0x80 + pf function + 4 * index."""
    domain_bus, _, devfn = pf_pci.rpartition(":")
    func = int(devfn.split(".")[1])
    value = 0x80 + func + 4 * index
    return "%s:%02x.%x" % (domain_bus, value >> 3, value & 7)


class FakeHost:
    def __init__(self, root):
        self.root = Path(root)
        self.bin = self.root / "bin"
        self.fake = self.root / "fake"
        self.nics = {}
        # SSH_CONNECTION set (empty: "not over SSH") so that the agent never reads the test
        # runner's own session from its parents' environments.
        self.extra_env = {"SSH_CONNECTION": ""}
        for d in ("sys/class/net", "sys/devices", "sys/bus/pci/drivers", "sys/class/iommu",
                  "sys/kernel/iommu_groups", "proc/sys/kernel/random", "etc/default", "boot/grub",
                  "bin", "fake/ethtool", "fake/virsh"):
            (self.root / d).mkdir(parents=True, exist_ok=True)

    # ----------------------------------------------------------------- basics
    def write(self, rel, text, mode=None):
        path = self.root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode())
        if mode is not None:
            path.chmod(mode)
        return path

    def read(self, rel):
        return (self.root / rel.lstrip("/")).read_bytes().decode()

    def exists(self, rel):
        return os.path.lexists(self.root / rel.lstrip("/"))

    def link(self, rel, target_rel):
        """A relative symlink at rel pointing at target_rel (both relative to the root)."""
        path = self.root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        target = self.root / target_rel.lstrip("/")
        if os.path.lexists(path):
            path.unlink()
        os.symlink(os.path.relpath(target, path.parent), path)

    def set_basics(self, hostname="host1", machine_id="0123456789abcdef0123456789abcdef",
                   boot_id="11111111-2222-3333-4444-555555555555", kernel="5.4.0-42-generic",
                   os_release=None, cpu_vendor="GenuineIntel", cmdline=None):
        self.write("proc/sys/kernel/hostname", hostname + "\n")
        self.write("etc/machine-id", machine_id + "\n")
        self.write("proc/sys/kernel/random/boot_id", boot_id + "\n")
        self.write("proc/sys/kernel/osrelease", kernel + "\n")
        os_release = os_release or {"NAME": "Ubuntu", "VERSION": "20.04.6 LTS (Focal Fossa)",
                                    "ID": "ubuntu", "ID_LIKE": "debian",
                                    "PRETTY_NAME": "Ubuntu 20.04.6 LTS", "VERSION_ID": "20.04"}
        self.write("etc/os-release", "".join('%s="%s"\n' % kv for kv in os_release.items()))
        cpu = "".join("processor\t: %d\nvendor_id\t: %s\nmodel name\t: CPU\n\n" % (i, cpu_vendor)
                      for i in range(2))
        self.write("proc/cpuinfo", cpu)
        if cmdline is None:
            cmdline = "BOOT_IMAGE=/boot/vmlinuz-%s root=/dev/mapper/vg-root ro quiet splash" % kernel
        self.write("proc/cmdline", cmdline + "\n")

    def set_boot_id(self, boot_id):
        self.write("proc/sys/kernel/random/boot_id", boot_id + "\n")

    def set_iommu(self, active=True, groups=8):
        if active:
            (self.root / "sys/class/iommu/dmar0").mkdir(parents=True, exist_ok=True)
            for i in range(groups):
                group = self.root / "sys/kernel/iommu_groups" / str(i) / "devices"
                group.mkdir(parents=True, exist_ok=True)

    # ----------------------------------------------------------------- PCI NICs
    def _dev_dir(self, bridge, pci):
        return "sys/devices/pci0000:00/%s/%s" % (bridge, pci)

    def _netdev(self, dev_rel, name, mac, operstate="down", speed=None, mtu=1500):
        net_rel = "%s/net/%s" % (dev_rel, name)
        self.write(net_rel + "/address", mac + "\n")
        self.write(net_rel + "/operstate", operstate + "\n")
        self.write(net_rel + "/mtu", "%d\n" % mtu)
        if speed is not None:  # unreadable speed (link down) is modelled by a missing file
            self.write(net_rel + "/speed", "%s\n" % speed)
        # like the kernel: device -> ../../../0000:04:00.0 (not the equivalent "../..")
        device_link = self.root / net_rel / "device"
        os.symlink("../../../" + dev_rel.rsplit("/", 1)[1], device_link)
        self.link("sys/class/net/" + name, net_rel)

    def _driver(self, dev_rel, driver):
        (self.root / "sys/bus/pci/drivers" / driver).mkdir(parents=True, exist_ok=True)
        self.link(dev_rel + "/driver", "sys/bus/pci/drivers/" + driver)

    def _pci_function(self, bridge, pci, vendor, device, driver, subsystem=("103c", "22bd")):
        """The PCI device directory and its /sys/bus/pci/devices link, as the PCI core shows them."""
        dev_rel = self._dev_dir(bridge, pci)
        self.write(dev_rel + "/vendor", "0x%s\n" % vendor)
        self.write(dev_rel + "/device", "0x%s\n" % device)
        self.write(dev_rel + "/class", "0x020000\n")
        self.write(dev_rel + "/subsystem_vendor", "0x%s\n" % subsystem[0])
        self.write(dev_rel + "/subsystem_device", "0x%s\n" % subsystem[1])
        self.link("sys/bus/pci/devices/" + pci, dev_rel)
        if driver:
            self._driver(dev_rel, driver)
        return dev_rel

    def add_nic(self, name, pci, bridge, vendor, device, driver, mac, operstate="down", speed=None,
                mtu=1500, totalvfs=None, numvfs_file=True, ethtool=None, vf_device=None, vf_driver=None):
        dev_rel = self._pci_function(bridge, pci, vendor, device, driver)
        if totalvfs is not None:
            self.write(dev_rel + "/sriov_totalvfs", "%d\n" % totalvfs)
            if numvfs_file:
                self.write(dev_rel + "/sriov_numvfs", "0\n")
                if vf_device:
                    self.write(dev_rel + "/sriov_vf_device", "%s\n" % vf_device)
        self._netdev(dev_rel, name, mac, operstate, speed, mtu)
        self.nics[name] = {"pci": pci, "bridge": bridge, "vendor": vendor, "dev_rel": dev_rel,
                           "vf_device": vf_device, "vf_driver": vf_driver, "mac": mac, "vfs": 0}
        if ethtool is not None:
            self.write("fake/ethtool/" + name, ethtool)

    def add_pf_without_netdev(self, pci, bridge, vendor, device, driver=None, totalvfs=8):
        """A PF whose driver is unbound (driver=None) or bound to vfio-pci: no network interface."""
        dev_rel = self._pci_function(bridge, pci, vendor, device, driver)
        self.write(dev_rel + "/sriov_totalvfs", "%d\n" % totalvfs)
        self.write(dev_rel + "/sriov_numvfs", "0\n")
        return dev_rel

    def unbind(self, name):
        """The PF's driver let go of it: the network interface disappears, the PCI function stays."""
        nic = self.nics[name]
        os.unlink(self.root / nic["dev_rel"] / "driver")
        (self.root / "sys/class/net" / name).unlink()
        shutil.rmtree(self.root / nic["dev_rel"] / "net")

    def enslave(self, name, master, kind="bond"):
        """name becomes a port of master (a bond or a bridge), as the kernel links them."""
        master_rel = "sys/devices/virtual/net/" + master
        if not self.exists(master_rel):
            self.write(master_rel + "/address", "52:54:00:00:00:%02x\n" % len(master))
            self.write(master_rel + "/uevent", "DEVTYPE=%s\nINTERFACE=%s\n" % (kind, master))
            (self.root / master_rel / ("bonding" if kind == "bond" else "bridge")).mkdir(parents=True, exist_ok=True)
            self.link("sys/class/net/" + master, master_rel)
        net_rel = "%s/net/%s" % (self.nics[name]["dev_rel"], name) if name in self.nics else \
            "sys/devices/virtual/net/" + name
        self.link(net_rel + "/master", master_rel)
        self.link(net_rel + "/upper_" + master, master_rel)
        self.link(master_rel + "/lower_" + name, net_rel)

    def set_acpi_tables(self, tables=("DMAR",)):
        for name in tables:
            self.write("sys/firmware/acpi/tables/" + name, "")

    def set_network(self, addresses, routes, ssh_connection=None):
        """addresses: {dev: ["10.0.0.5/24"]}; routes: {"default": dev, "<client ip>": dev}. The
        fake `ip -o addr show` / `ip -o route get` and /proc/net/route answer from them."""
        lines = []
        for index, (dev, addrs) in enumerate(sorted(addresses.items()), 2):
            for addr in addrs:
                family = "inet6" if ":" in addr else "inet"
                lines.append("%d: %s    %s %s scope global %s\\       valid_lft forever preferred_lft forever"
                             % (index, dev, family, addr, dev))
        self.write("fake/ip/addr", "".join(line + "\n" for line in lines))
        for target, dev in routes.items():
            if target != "default":
                self.write("fake/ip/route-" + target, "%s via 10.0.0.1 dev %s src 10.0.0.5 uid 0 \\    cache\n" % (
                    target, dev))
        table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        if "default" in routes:
            table += "%s\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" % routes["default"]
        self.write("proc/net/route", table)
        self.program_ip()
        if ssh_connection is not None:
            self.extra_env["SSH_CONNECTION"] = ssh_connection

    def program_ip(self, unsupported=None, ignored=None, rate_needs_link=()):
        """A fake iproute2 `ip`: `-o addr show` / `-o route get` from set_network's files, and the
        VF settings a PF driver holds: `ip -j -d link show dev <pf>` prints them as iproute2's
        print_vfinfo() does, `ip link set dev <pf> vf N ...` and `ip link set dev <pf> mtu N`
        change them (kept in fake/ip/vf-<pf>.json; lost by remove_vfs, as the kernel loses them).
        unsupported: {pf: [setting, ...]} the PF driver refuses with EOPNOTSUPP; ignored: {pf: [setting]}
        it accepts and does not keep; rate_needs_link: PFs whose driver refuses a rate with EINVAL while
        the PF has no carrier (ixgbe_ndo_set_vf_bw, igb_ndo_set_vf_bw on 82576)."""
        self.write("fake/ip/unsupported.json", json.dumps(unsupported or {}))
        self.write("fake/ip/rate_needs_link.json", json.dumps(list(rate_needs_link)))
        self.write("fake/ip/ignored.json", json.dumps(ignored or {}))
        if not self.exists("fake/ip/addr"):
            self.write("fake/ip/addr", "")
        self.program("ip", "#!%s\n%s" % (sys.executable, FAKE_IP))

    def program_modinfo(self, params):
        """params: {driver: `modinfo -F parm` output}."""
        for driver, text in params.items():
            self.write("fake/modinfo/" + driver, text)
        self.program("modinfo", """#!%s
[ "$1" = "-F" ] && [ "$2" = "parm" ] || exit 64
f="$FAKE_ROOT/fake/modinfo/$3"
[ -f "$f" ] || { echo "modinfo: ERROR: Module $3 not found." >&2; exit 1; }
exec /bin/cat "$f"
""" % SH)

    def vf_pci(self, pf, index):
        return _vf_pci(self.nics[pf]["pci"], index)

    def add_vfs(self, pf, count, numvfs=True):
        """Materialise count VFs of pf like the kernel does after `echo count > sriov_numvfs`."""
        nic = self.nics[pf]
        for index in range(nic["vfs"], count):
            vf_pci = _vf_pci(nic["pci"], index)
            vf_rel = self._dev_dir(nic["bridge"], vf_pci)
            self.write(vf_rel + "/vendor", "0x%s\n" % nic["vendor"])
            self.write(vf_rel + "/device", "0x%s\n" % nic["vf_device"])
            self.write(vf_rel + "/class", "0x020000\n")
            self.link("sys/bus/pci/devices/" + vf_pci, vf_rel)
            self.link(vf_rel + "/physfn", nic["dev_rel"])
            self.link(nic["dev_rel"] + "/virtfn%d" % index, vf_rel)
            if nic["vf_driver"]:
                self._driver(vf_rel, nic["vf_driver"])
                self._netdev(vf_rel, "%sv%d" % (pf, index), "00:00:00:00:00:00")
        nic["vfs"] = max(nic["vfs"], count)
        if numvfs and self.exists(nic["dev_rel"] + "/sriov_numvfs"):
            self.write(nic["dev_rel"] + "/sriov_numvfs", "%d\n" % count)

    def remove_vfs(self, pf, numvfs=True):
        nic = self.nics[pf]
        for index in range(nic["vfs"]):
            vf_pci = _vf_pci(nic["pci"], index)
            name = "%sv%d" % (pf, index)
            if os.path.lexists(self.root / "sys/class/net" / name):
                (self.root / "sys/class/net" / name).unlink()
            os.unlink(self.root / nic["dev_rel"] / ("virtfn%d" % index))
            vf_state = self.root / "fake/ip" / ("vf-%s.json" % pf)
            if vf_state.exists():
                vf_state.unlink()
            os.unlink(self.root / "sys/bus/pci/devices" / vf_pci)
            shutil.rmtree(self.root / self._dev_dir(nic["bridge"], vf_pci))
        nic["vfs"] = 0
        if numvfs and self.exists(nic["dev_rel"] + "/sriov_numvfs"):
            self.write(nic["dev_rel"] + "/sriov_numvfs", "0\n")

    def set_numvfs(self, pf, count):
        """What the kernel does on a successful write (EBUSY rules are the caller's business)."""
        self.remove_vfs(pf)
        if count:
            self.add_vfs(pf, count)

    # ----------------------------------------------------------------- GRUB
    def set_grub(self, text, dropins=None):
        self.write("etc/default/grub", text)
        for name, body in (dropins or {}).items():
            self.write("etc/default/grub.d/" + name, body)

    # ----------------------------------------------------------------- programs
    def program(self, name, body):
        path = self.bin / name
        path.write_text(body)
        path.chmod(0o755)
        return path

    def program_ethtool(self):
        self.program("ethtool", '#!%s\n[ "$1" = "-i" ] || exit 64\nf="$FAKE_ROOT/fake/ethtool/$2"\n'
                                '[ -f "$f" ] || { echo "Cannot get driver information: No such device" >&2; '
                                'exit 71; }\nexec /bin/cat "$f"\n' % SH)

    def program_update_grub(self, fail=False):
        if fail:
            self.program("update-grub", """#!%s
/bin/cat >&2 <<'EOF'
Sourcing file `/etc/default/grub'
/usr/sbin/grub-probe: error: failed to get canonical path of `/dev/sda1'.
EOF
exit 1
""" % SH)
            return
        # Real update-grub semantics for the part we care about: source /etc/default/grub, then
        # /etc/default/grub.d/*.cfg in order, and write the kernel line of grub.cfg.
        self.program("update-grub", """#!%s
set -e
R="$FAKE_ROOT"
. "$R/etc/default/grub"
for f in "$R"/etc/default/grub.d/*.cfg; do
  if [ -e "$f" ]; then . "$f"; fi
done
echo "Generating grub configuration file ..." >&2
printf 'linux /boot/vmlinuz root=/dev/sda1 ro %%s %%s\\n' \
  "$GRUB_CMDLINE_LINUX" "$GRUB_CMDLINE_LINUX_DEFAULT" > "$R/boot/grub/grub.cfg"
echo done >&2
""" % SH)

    def program_recorder(self, name, rc=0, stderr=""):
        """A program that appends its argv (JSON) to $FAKE_ROOT/fake/<name>.calls and exits rc."""
        self.program(name, """#!%s
i=0
{
  printf '['
  for a in "$@"; do
    if [ $i -gt 0 ]; then printf ','; fi
    printf '"%%s"' "$a"
    i=$((i+1))
  done
  printf ']\\n'
} >> "$FAKE_ROOT/fake/%s.calls"
if [ -n '%s' ]; then echo '%s' >&2; fi
exit %d
""" % (SH, name, stderr, stderr, rc))

    def calls(self, name):
        path = self.fake / (name + ".calls")
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def program_virsh(self, guests=None, devices=None, stopped=None, networks=None):
        """guests: {name: [pci addresses of hostdevs]} running; devices: {name: extra <devices> XML}
        of running guests; stopped: {name: <devices> XML} of stopped guests that start at boot;
        networks: {name: network XML} for `virsh net-dumpxml`."""
        guests = dict(guests or {})
        for name in devices or {}:
            guests.setdefault(name, [])
        self.write("fake/virsh/list", "".join(name + "\n" for name in guests) + "\n")
        self.write("fake/virsh/inactive", "".join(name + "\n" for name in stopped or {}) + "\n")
        for name, pcis in guests.items():
            self.write("fake/virsh/%s.xml" % name, domain_xml(name, hostdev_xml(pcis) + (devices or {}).get(name, "")))
        for name, xml in (stopped or {}).items():
            self.write("fake/virsh/%s.xml" % name, domain_xml(name, xml))
        for name, xml in (networks or {}).items():
            self.write("fake/virsh/net-%s.xml" % name, xml)
        for name in networks or {}:
            self.write("fake/virsh/net-%s.state" % name, json.dumps({"active": True, "autostart": True}))
        self.program("virsh", "#!%s\n%s" % (sys.executable, FAKE_VIRSH))

    def env(self):
        return dict({"PATH": str(self.bin), "FAKE_ROOT": str(self.root), "LC_ALL": "C"}, **self.extra_env)

    def snapshot(self):
        """{relative path: content or link target} of every file under the root (bin/ excluded)."""
        out = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                rel = str(path.relative_to(self.root))
                if rel.startswith("bin") or name == "sriov-console.lock":  # the agent's host lock
                    continue
                if path.is_symlink():
                    out[rel] = "-> " + os.readlink(path)
                elif path.is_file():
                    out[rel] = path.read_bytes()
        return out


FAKE_IP = r"""
import json, os, sys
R = os.environ["FAKE_ROOT"]
D = R + "/fake/ip"
a = sys.argv[1:]

def out(path):
    sys.stdout.write(open(path).read())

def vf_count(dev):
    base = R + "/sys/class/net/%s/device" % dev
    return len([e for e in os.listdir(base) if e.startswith("virtfn")]) if os.path.isdir(base) else 0

def load(dev):
    path = "%s/vf-%s.json" % (D, dev)
    return json.load(open(path)) if os.path.exists(path) else {}

def entry(n, s):
    e = {"vf": n, "link_type": "ether", "address": s.get("mac", "00:00:00:00:00:00"),
         "broadcast": "ff:ff:ff:ff:ff:ff", "vlan_list": [{}],
         "rate": {"max_tx": s.get("max_tx_rate", 0), "min_tx": s.get("min_tx_rate", 0)},
         "spoofchk": s.get("spoofchk", True), "link_state": s.get("link_state", "auto"),
         "trust": s.get("trust", False), "query_rss_en": False}
    if s.get("vlan"):
        e["vlan_list"] = [dict({"vlan": s["vlan"]}, **({"qos": s["qos"]} if s.get("qos") else {}))]
    return e

def show(dev):
    if not os.path.isdir(R + "/sys/class/net/" + dev):
        sys.stderr.write('Device "%s" does not exist.\n' % dev)
        sys.exit(1)
    state = load(dev)
    mtu = int(open(R + "/sys/class/net/%s/mtu" % dev).read())
    vfs = [entry(n, state.get(str(n), {})) for n in range(vf_count(dev))]
    doc = {"ifindex": 4, "ifname": dev, "flags": ["BROADCAST", "MULTICAST"], "mtu": mtu, "operstate": "DOWN",
           "link_type": "ether", "num_vf": len(vfs)}
    if vfs:
        doc["vfinfo_list"] = vfs
    print(json.dumps([doc]))

WORDS = {"mac": "mac", "vlan": "vlan", "qos": "qos", "spoofchk": "spoofchk", "trust": "trust",
         "state": "link_state", "max_tx_rate": "max_tx_rate", "min_tx_rate": "min_tx_rate"}

def set_vf(dev, n, words):
    if n >= vf_count(dev):
        sys.stderr.write("RTNETLINK answers: Invalid argument\n")
        sys.exit(2)
    refused = json.load(open(D + "/unsupported.json")).get(dev, [])
    state = load(dev)
    vf = state.setdefault(str(n), {})
    i = 0
    while i < len(words):
        key, value = WORDS[words[i]], words[i + 1]
        if key in refused:
            sys.stderr.write("RTNETLINK answers: Operation not supported\n")
            sys.exit(2)
        carrier = R + "/sys/class/net/%s/carrier" % dev
        if key == "max_tx_rate" and int(value) and dev in json.load(open(D + "/rate_needs_link.json")) and \
                os.path.exists(carrier) and open(carrier).read().strip() == "0":
            sys.stderr.write("RTNETLINK answers: Invalid argument\n")
            sys.exit(2)
        if key in ("spoofchk", "trust"):
            value = value == "on"
        elif key not in ("mac", "link_state"):
            value = int(value)
        if key not in json.load(open(D + "/ignored.json")).get(dev, []):
            vf[key] = value
        if key == "vlan" and value == 0:
            vf["qos"] = 0
        i += 2
    json.dump(state, open("%s/vf-%s.json" % (D, dev), "w"))

if a[:3] == ["-o", "addr", "show"]:
    out(D + "/addr")
elif a[:3] == ["-o", "route", "get"]:
    if not os.path.exists(D + "/route-" + a[3]):
        sys.stderr.write("RTNETLINK answers: Network is unreachable\n")
        sys.exit(2)
    out(D + "/route-" + a[3])
elif a[:5] == ["-j", "-d", "link", "show", "dev"]:
    show(a[5])
elif a[:3] == ["link", "set", "dev"] and a[4:5] == ["vf"]:
    set_vf(a[3], int(a[5]), a[6:])
elif a[:3] == ["link", "set", "dev"] and a[4:5] == ["mtu"]:
    open(R + "/sys/class/net/%s/mtu" % a[3], "w").write(a[5] + "\n")
else:
    sys.exit(64)
"""


FAKE_VIRSH = r"""
import json, os, re, sys
R = os.environ["FAKE_ROOT"]
V = R + "/fake/virsh"
a = sys.argv[1:]

def cat(path):
    if not os.path.exists(path):
        sys.stderr.write("error: failed to get %s\n" % os.path.basename(path))
        sys.exit(1)
    sys.stdout.write(open(path).read())

def net(name):
    if not os.path.exists("%s/net-%s.xml" % (V, name)):
        sys.stderr.write("error: failed to get network '%s'\nerror: Network not found: no network with matching "
                         "name '%s'\n" % (name, name))
        sys.exit(1)
    path = "%s/net-%s.state" % (V, name)
    return json.load(open(path)) if os.path.exists(path) else {"active": True, "autostart": True}

def save(name, state):
    json.dump(state, open("%s/net-%s.state" % (V, name), "w"))
    with open(V + "/calls", "a") as f:
        f.write(json.dumps(a) + "\n")

def fail(text):
    sys.stderr.write("error: " + text + "\n")
    sys.exit(1)

cmd = a[0] if a else ""
if cmd == "list":
    cat(V + ("/inactive" if "--inactive" in a else "/list"))
elif cmd == "dumpxml":
    cat("%s/%s.xml" % (V, a[-1]))
elif cmd == "net-dumpxml":
    net(a[1])
    cat("%s/net-%s.xml" % (V, a[1]))
elif cmd == "net-list":
    print("\n".join(sorted(f[4:-4] for f in os.listdir(V) if f.startswith("net-") and f.endswith(".xml"))))
elif cmd == "net-info":
    st = net(a[1])
    yes = lambda v: "yes" if v else "no"
    print("Name:           %s\nUUID:           0\nActive:         %s\nPersistent:     yes\n"
          "Autostart:      %s\nBridge:         \n" % (a[1], yes(st["active"]), yes(st["autostart"])))
elif cmd == "net-define":
    xml = open(R + a[1]).read()  # the agent names a host path; the host is under FAKE_ROOT
    name = re.search(r"<name>([^<]+)</name>", xml).group(1)
    old = net(name) if os.path.exists("%s/net-%s.xml" % (V, name)) else {"active": False, "autostart": False}
    open("%s/net-%s.xml" % (V, name), "w").write(xml)
    save(name, old)
    print("Network %s defined from %s" % (name, a[1]))
elif cmd in ("net-start", "net-destroy"):
    st = net(a[1])
    if st["active"] == (cmd == "net-start"):
        fail("Requested operation is not valid: network is %s" % ("already active" if st["active"] else "not active"))
    st["active"] = cmd == "net-start"
    save(a[1], st)
elif cmd == "net-autostart":
    st = net(a[1])
    st["autostart"] = "--disable" not in a
    save(a[1], st)
elif cmd == "net-undefine":
    net(a[1])
    save(a[1], {})
    os.remove("%s/net-%s.xml" % (V, a[1]))
    os.remove("%s/net-%s.state" % (V, a[1]))
else:
    sys.exit(64)
"""


def hostdev_xml(pcis):
    out = ""
    for pci in pcis:
        dom, bus, rest = pci.split(":")
        slot, func = rest.split(".")
        out += ("    <hostdev mode='subsystem' type='pci' managed='yes'>\n"
                "      <source><address domain='0x%s' bus='0x%s' slot='0x%s' function='0x%s'/>"
                "</source>\n    </hostdev>\n" % (dom, bus, slot, func))
    return out


def domain_xml(name, devices):
    return ("<domain type='kvm'>\n  <name>%s</name>\n  <devices>\n%s"
            "    <interface type='bridge'><source bridge='br0'/></interface>\n"
            "  </devices>\n</domain>\n" % (name, devices))


def macvtap_xml(dev, mode="passthrough"):
    return "    <interface type='direct'><source dev='%s' mode='%s'/><model type='virtio'/></interface>\n" % (dev, mode)


def network_interface_xml(network):
    return "    <interface type='network'><source network='%s'/><model type='virtio'/></interface>\n" % network


IN_TREE_IGB_PARM = (
    "max_vfs:Maximum number of virtual functions to allocate per physical function - default is zero and "
    "maximum value is 7. (Deprecated) (uint)\n"
    "debug:Debug level (0=none,...,16=all) (int)\n")
OUT_OF_TREE_IGB_PARM = (
    "InterruptThrottleRate:Maximum interrupts per second, per vector, (max 100000), default 3=adaptive "
    "(array of int)\n"
    "max_vfs:Number of Virtual Functions: 0 = disable (default), 1-7 = enable this many VFs (array of int)\n")


# ------------------------------------------------------------------------- profiles

DL360_GRUB = """# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
# For full documentation of the options in this file, see:
#   info -f grub -n 'Simple configuration'

GRUB_DEFAULT=0
GRUB_TIMEOUT_STYLE=hidden
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"
GRUB_CMDLINE_LINUX=""

# Uncomment to enable BadRAM filtering, modify to suit your needs
#GRUB_BADRAM="0x01234567,0xfefefefe,0x89abcdef,0xefefefef"

# Uncomment to disable graphical terminal (grub-pc only)
#GRUB_TERMINAL=console
"""

TG3_MACS = ["94:18:82:38:6c:%02x" % (0x10 + i) for i in range(4)]
I350_MACS = ["3c:a8:2a:0f:1e:%02x" % (0x40 + i) for i in range(4)]


def dl360_gen9(root, kernel="5.4.0-42-generic", iommu=False, programs=True):
    """HPE ProLiant DL360 Gen9 of the reference procedure: 4x Broadcom BCM5719 (tg3, no SR-IOV)
    eno1-4 on the LOM, 4x Intel I350 (igb, totalvfs 7, VFs igbvf eno49v0..) eno49-52."""
    host = FakeHost(root)
    host.set_basics(hostname="dl360-gen9", kernel=kernel)
    host.set_iommu(iommu)
    for i in range(4):
        name = "eno%d" % (i + 1)
        up = i in (0, 3)  # ifconfig shows RUNNING on eno1 and eno4
        host.add_nic(name, "0000:02:00.%d" % i, "0000:00:01.0", "14e4", "1657", "tg3", TG3_MACS[i],
                     operstate="up" if up else "down", speed=1000 if up else None,
                     ethtool="driver: tg3\nversion: 3.137\nfirmware-version: 5719-v1.46 NCSI v1.5.18.0\n"
                             "expansion-rom-version: \nbus-info: 0000:02:00.%d\nsupports-statistics: yes\n"
                             "supports-test: yes\nsupports-eeprom-access: yes\nsupports-register-dump: yes\n"
                             "supports-priv-flags: no\n" % i)
    for i in range(4):
        name = "eno%d" % (49 + i)
        host.add_nic(name, "0000:04:00.%d" % i, "0000:00:03.0", "8086", "1521", "igb", I350_MACS[i],
                     totalvfs=7, vf_device="1520", vf_driver="igbvf",
                     ethtool="driver: igb\nversion: 5.6.0-k\nfirmware-version: 1.61, 0x80000daa, 1.949.0\n"
                             "expansion-rom-version: \nbus-info: 0000:04:00.%d\nsupports-statistics: yes\n"
                             "supports-test: yes\nsupports-eeprom-access: yes\nsupports-register-dump: yes\n"
                             "supports-priv-flags: yes\n" % i)
    # a virtual interface without a device link must not be listed
    host.write("sys/devices/virtual/net/lo/address", "00:00:00:00:00:00\n")
    host.link("sys/class/net/lo", "sys/devices/virtual/net/lo")
    host.set_grub(DL360_GRUB)
    if programs:
        host.program_ethtool()
        host.program_update_grub()
        host.program_virsh({})
        host.program_recorder("systemd-run")
    return host


def legacy_el6(root, igb_parm=OUT_OF_TREE_IGB_PARM):
    """An old RHEL 6 host (kernel 2.6.32): no sriov_numvfs; igb takes max_vfs at module load, per port
    (Intel's out-of-tree driver, the default here) or one value for all ports (IN_TREE_IGB_PARM)."""
    host = FakeHost(root)
    host.set_basics(hostname="el6", kernel="2.6.32-754.el6.x86_64",
                    os_release={"NAME": "CentOS", "ID": "centos", "VERSION_ID": "6",
                                "PRETTY_NAME": "CentOS release 6.10 (Final)"})
    for i in range(2):
        host.add_nic("eth%d" % i, "0000:04:00.%d" % i, "0000:00:03.0", "8086", "1521", "igb", I350_MACS[i],
                     vf_device="1520", vf_driver="igbvf")
    host.set_grub('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    host.program_recorder("grubby")
    host.program_modinfo({"igb": igb_parm})
    return host
