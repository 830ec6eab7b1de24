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
from pathlib import Path

SH = shutil.which("sh") or "/bin/sh"
AGENT_PATH = Path(__file__).resolve().parent.parent / "agent" / "sriov_agent.py"


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

    def add_nic(self, name, pci, bridge, vendor, device, driver, mac, operstate="down", speed=None,
                mtu=1500, totalvfs=None, numvfs_file=True, ethtool=None, vf_device=None, vf_driver=None):
        dev_rel = self._dev_dir(bridge, pci)
        self.write(dev_rel + "/vendor", "0x%s\n" % vendor)
        self.write(dev_rel + "/device", "0x%s\n" % device)
        if driver:
            self._driver(dev_rel, driver)
        if totalvfs is not None:
            self.write(dev_rel + "/sriov_totalvfs", "%d\n" % totalvfs)
            if numvfs_file:
                self.write(dev_rel + "/sriov_numvfs", "0\n")
        self._netdev(dev_rel, name, mac, operstate, speed, mtu)
        self.nics[name] = {"pci": pci, "bridge": bridge, "vendor": vendor, "dev_rel": dev_rel,
                           "vf_device": vf_device, "vf_driver": vf_driver, "mac": mac, "vfs": 0}
        if ethtool is not None:
            self.write("fake/ethtool/" + name, ethtool)

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

    def program_virsh(self, guests=None):
        """guests: {name: [pci addresses of hostdevs]}."""
        guests = guests or {}
        self.write("fake/virsh/list", "".join(name + "\n" for name in guests) + "\n")
        for name, pcis in guests.items():
            hostdevs = ""
            for pci in pcis:
                dom, bus, rest = pci.split(":")
                slot, func = rest.split(".")
                hostdevs += ("    <hostdev mode='subsystem' type='pci' managed='yes'>\n"
                             "      <source><address domain='0x%s' bus='0x%s' slot='0x%s' function='0x%s'/>"
                             "</source>\n    </hostdev>\n" % (dom, bus, slot, func))
            self.write("fake/virsh/%s.xml" % name,
                       "<domain type='kvm'>\n  <name>%s</name>\n  <devices>\n%s"
                       "    <interface type='bridge'><source bridge='br0'/></interface>\n"
                       "  </devices>\n</domain>\n" % (name, hostdevs))
        self.program("virsh", """#!%s
case "$1" in
  list) exec /bin/cat "$FAKE_ROOT/fake/virsh/list" ;;
  dumpxml) [ "$2" = "--domain" ] || exit 64; exec /bin/cat "$FAKE_ROOT/fake/virsh/$3.xml" ;;
esac
exit 64
""" % SH)

    def env(self):
        return {"PATH": str(self.bin), "FAKE_ROOT": str(self.root), "LC_ALL": "C"}

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


def legacy_el6(root):
    """An old RHEL 6 host (kernel 2.6.32): no sriov_numvfs; igb takes max_vfs at module load."""
    host = FakeHost(root)
    host.set_basics(hostname="el6", kernel="2.6.32-754.el6.x86_64",
                    os_release={"NAME": "CentOS", "ID": "centos", "VERSION_ID": "6",
                                "PRETTY_NAME": "CentOS release 6.10 (Final)"})
    for i in range(2):
        host.add_nic("eth%d" % i, "0000:04:00.%d" % i, "0000:00:03.0", "8086", "1521", "igb", I350_MACS[i],
                     vf_device="1520", vf_driver="igbvf")
    host.set_grub('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    host.program_recorder("grubby")
    return host
