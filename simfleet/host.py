"""One simulated hypervisor: its state, the kernel's rules, a small file tree, its programs, and the
`SimSystem` handed to the agent (the `System` seam of docs/architecture.md).

Everything here is synchronous and guarded by one lock per host, because the agent runs in worker
threads while the fleet's event loop reboots hosts. No asyncio and no SSH in this module.

The file tree has two parts:
* /sys and /proc are generated from the model (NICs, VFs, IOMMU, boot facts) and cached until the
  model changes (the cache is dropped when no agent runs on the host, so 1,000 idle hosts stay
  small);
* everything else (/etc, /boot, /tmp ...) is an in-memory dict of files and a set of directories.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from . import bootcfg
from .profiles import MAX_VFS_PARM as PARM_LINES
from .profiles import PROFILES, NicSpec, Profile
from .vfmodel import VfModel

FAULTS = (
    "unreachable",  # connection refused
    "auth_rejected",  # every public key is refused
    "host_key_rotated",  # the host presents a different host key
    "latency",  # seconds=S added before every command
    "hang",  # the command never finishes
    "reboot_never_returns",  # the next reboot does not come back (clear the fault to finish booting)
    "update_grub_fails",  # update-grub / grub(2)-mkconfig / grubby exit 1 with a message
    "readonly_etc",  # writes under /etc raise EROFS
    "no_python",  # the bootstrap command gets exit 127 "python3: command not found"
    "garbage_output",  # stdout is not JSON
    "sysfs_write_hangs",  # a write to sriov_numvfs blocks holding the device lock (seconds=S; default: until cleared)
    "virsh_dumpxml_fails",  # virsh dumpxml exits 1 (libvirtd hiccup)
    "no_virsh",  # virsh is not installed, but the guests (qemu processes) still run
    "vfio_release_blocks",  # removing a VF a guest holds through vfio-pci blocks until the fault is cleared
    "sriov_eagain",  # the PF driver answers EAGAIN ("other operation is pending", i40e) times=N writes (default 3)
    "partial_enable",  # the driver enables at most max=M VFs and the write still succeeds
    "sriov_off_in_firmware",  # sriov_totalvfs reads 0 (SR-IOV disabled in the BIOS / NIC firmware)
)

CONTROLLER_ADDRESS = "10.99.0.10"  # where the simulated SSH connections come from
GRUBENV = "/boot/grub2/grubenv"

# What the driver's sriov_disable path returns while VFs are assigned to guests (pci_vfs_assigned):
# igb/ixgbe -EPERM, i40e -EINVAL, most others -EBUSY. The guests keep running.
VFS_ASSIGNED_ERRNO = {"igb": errno.EPERM, "ixgbe": errno.EPERM, "i40e": errno.EINVAL}

UDEV_DIR = "/etc/udev/rules.d"
SUDO_SECURE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NO_PATH_DEFAULT = "/bin:/usr/bin"
MODPROBE_DIR = "/etc/modprobe.d"
MANAGED_UDEV = "/etc/udev/rules.d/70-sriov-console.rules"
MAX_VFS_DRIVERS = {"igb": 7, "ixgbe": 63}  # drivers with a max_vfs module parameter
VF_DRIVER_VERSION = {"igbvf": "2.4.0-k", "iavf": "4.8.2", "mlx5_core": None}

DIR = ("d",)


def _err(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


def kernel_tuple(release: str) -> tuple[int, int, int]:
    m = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", release)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else (0, 0, 0)


def pci_rid(pci: str) -> tuple[int, int]:
    dom, bus, devfn = pci.split(":")
    dev, fn = devfn.split(".")
    return int(dom, 16), (int(bus, 16) << 8) | (int(dev, 16) << 3) | int(fn)


def pci_from_rid(domain: int, rid: int) -> str:
    return f"{domain:04x}:{rid >> 8:02x}:{(rid >> 3) & 0x1F:02x}.{rid & 7:x}"


def iommu_rule(cpu_vendor: str, cmdline: str, firmware: bool = True) -> bool:
    """Whether the IOMMU is active for the booted command line. Never without the firmware's ACPI
    table (DMAR / IVRS: VT-d or AMD-Vi enabled in the BIOS). Intel needs intel_iommu=on on most
    distribution kernels (CONFIG_INTEL_IOMMU_DEFAULT_ON off); AMD-Vi is on by default when the
    firmware provides IVRS, off with amd_iommu=off — `amd_iommu=on` is not a value the kernel knows
    (Documentation/admin-guide/kernel-parameters.txt)."""
    tokens = cmdline.split()
    if not firmware or "iommu=off" in tokens or "amd_iommu=off" in tokens:
        return False
    if cpu_vendor == "GenuineIntel":
        return "intel_iommu=on" in tokens
    if cpu_vendor == "AuthenticAMD":
        return True
    return False


@dataclass
class Vf:
    index: int
    pci: str
    netdev: str
    mac: str
    ready_at: float  # monotonic time at which the VF netdev appears (VF driver probe + udev)
    driver: str | None = None  # the bound driver (a guest holding it through vfio-pci shows vfio-pci)
    driver_override: str | None = None
    # what the PF driver holds for the VF (ip link set dev <pf> vf N ...): lost with the VF
    admin_mac: str = "00:00:00:00:00:00"
    vlan: int = 0
    qos: int = 0
    spoofchk: bool = True
    trust: bool = False
    link_state: str = "auto"
    max_tx_rate: int = 0
    min_tx_rate: int = 0


@dataclass
class Nic:
    spec: NicSpec
    mac: str
    ifindex: int
    numvfs: int = 0
    vfs: list[Vf] = field(default_factory=list)
    loaded: bool = True  # False: its driver failed to load at boot (e.g. max_vfs=4,0 for a uint parameter)
    mtu: int = 1500
    autoprobe: int = 1  # sriov_drivers_autoprobe: 0 leaves new VFs unbound

    @property
    def driver(self) -> str | None:
        if not self.loaded or self.spec.binding == "none":
            return None
        return "vfio-pci" if self.spec.binding == "vfio-pci" else self.spec.driver

    @property
    def has_netdev(self) -> bool:
        return self.loaded and self.spec.binding == "driver"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pci(self) -> str:
        return self.spec.pci


@dataclass
class Guest:
    name: str
    hostdevs: list[str]
    running: bool = True
    autostart: bool = True
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    note: str = ""
    # {"type": "direct", "dev": netdev, "mode": "passthrough"} (macvtap) or
    # {"type": "network", "network": name} (a libvirt network pool)
    interfaces: list[dict] = field(default_factory=list)
    allocated: dict[int, str] = field(default_factory=dict)  # interface index -> VF pci or netdev


class SimHost(VfModel):
    """A simulated hypervisor (the model; the SSH side lives in simfleet.server)."""

    def __init__(
        self,
        name: str,
        profile: str | Profile,
        *,
        index: int = 0,
        username: str = "root",
        vf_delay: float = 0.2,
        variety: bool = False,
        seed: str = "simfleet",
    ):
        self.profile: Profile = PROFILES[profile] if isinstance(profile, str) else profile
        self.name = name
        self.index = index
        self.username = username
        self.vf_delay = vf_delay
        self.lock = threading.RLock()
        self.agent_lock = threading.Lock()  # SimSystem.lock(): one mutating agent run at a time
        self.faults: dict[str, dict] = {}
        self.commands: deque = deque(maxlen=500)
        self.events: deque = deque(maxlen=200)
        self.guests: list[Guest] = []
        self.state = "down"  # "up" | "down"
        self.listening = False  # set by the server
        self.boot_count = 0
        self.boot_runs: list[dict] = []  # the agent runs of the last boot (units, udev RUN): what they answered
        self.libvirt_up = True  # libvirtd runs (not yet while the units ordered before it run at boot)
        self.extra_processes: dict[int, dict] = {}  # pid -> {"comm", "vfio": [VF pci whose group it holds]}
        self.named_locks: dict[str, threading.Lock] = {}  # SimSystem.lock() of other names (per-VF locks)
        self.boot_id = ""
        self.cmdline = ""
        self.iommu_active = False
        self.reboot_hook = None  # set by the fleet: callable() that schedules the reboot
        self.reboots_requested = 0
        self.networks: dict[str, dict] = {n: dict(v) for n, v in self.profile.networks.items()}
        if "virsh" in self.profile.programs:  # libvirt's own NAT network on virbr0
            self.networks.setdefault("default", {"mode": "nat", "bridge": "virbr0"})
        self.running_kernel = self.profile.kernel
        self.initramfs: dict = {"modules": set(self.profile.initramfs_modules), "modprobe": {}}
        self.device_locks: dict[str, threading.Lock] = {}
        self.modules: set[str] = set()  # modules loaded by modprobe since boot (vfio-pci)
        self.pending_writes: dict[str, str] = {}
        self.sysfs_write_timeout: float | None = None  # the seam's bounds (None: the agent's defaults)
        self.sysfs_read_timeout: float | None = None
        self._gen = 0
        self._dyn = None
        self._dyn_gen = -1
        self._dyn_valid_until = 0.0
        self._active = 0
        self._booted_at = time.monotonic()
        self._digest = hashlib.sha256((f"{seed}/{name}").encode()).hexdigest()
        self.machine_id = self._digest[:32]
        self.root_uuid = str(uuid.UUID(self._digest[32:64]))
        self.nics = [
            Nic(spec=s, mac=self._mac(s.mac_oui, i), ifindex=i + 2) for i, s in enumerate(self.profile.nics)
        ]
        self.files: dict[str, str] = {}
        self.modes: dict[str, int] = {}  # file permissions (only those the agent may care about)
        self.dirs: set[str] = set()
        self.children: dict[str, set[str]] = {}
        self._install()
        if variety:
            self._apply_variety()
        self._apply_scenario()
        self.boot()

    # -- construction ---------------------------------------------------------------------------

    def _mac(self, oui: str, n: int, salt: str = "") -> str:
        h = hashlib.sha256(f"{self._digest}{salt}{n}".encode()).digest()
        return f"{oui}:{h[0]:02x}:{h[1]:02x}:{h[2]:02x}"

    @property
    def legacy(self) -> bool:
        return kernel_tuple(self.profile.kernel) < (3, 8, 0)

    def _install(self) -> None:
        p = self.profile
        for d in (
            "/etc",
            "/etc/default",
            "/etc/udev",
            UDEV_DIR,
            MODPROBE_DIR,
            "/boot",
            "/tmp",
            "/run",
            "/var",
            "/var/tmp",
            "/root",
            "/usr",
            "/usr/lib",
        ):
            self._mkdir(d)
        self._put("/etc/hostname", self.name + "\n")
        self._put("/etc/os-release", p.os_release)
        if not self.legacy:
            self._put("/etc/machine-id", self.machine_id + "\n")
        else:
            self._mkdir("/var/lib")
            self._mkdir("/var/lib/dbus")
            self._put("/var/lib/dbus/machine-id", self.machine_id + "\n")
            self._put("/etc/machine-id", self.machine_id + "\n")  # the brief wants one everywhere
        for path, text in p.extra_etc.items():
            self._put(path, text)
        if p.grub_default is not None:
            self._put("/etc/default/grub", p.grub_default)
        if p.grub_d:
            self._mkdir("/etc/default/grub.d")
            for fname, text in p.grub_d.items():
                self._put("/etc/default/grub.d/" + fname, text)
        # The installer ran the boot config generator once.
        flavour = p.boot_flavour
        if flavour == "debian":
            self._mkdir("/boot/grub")
            self._put("/boot/grub/grub.cfg", self._render_mkconfig(self._sourced_defaults()))
        elif flavour == "rhel-mkconfig":
            self._mkdir("/boot/grub2")
            self._put("/boot/grub2/grub.cfg", self._render_mkconfig(self._sourced_defaults()))
        elif flavour == "bls":
            self._mkdir("/boot/grub2")
            self._mkdir("/boot/loader")
            self._mkdir("/boot/loader/entries")
            env = self._sourced_defaults()
            options = "{} ro {}".format(p.bls_root_arg, env.get("GRUB_CMDLINE_LINUX", "")).strip()
            if p.kernel_install == "kernelopts":
                # RHEL 8: the entries say "options $kernelopts"; the value lives in grubenv
                self._write_grubenv({"saved_entry": f"{self.machine_id}-{p.kernel}", "kernelopts": options})
                options = "$kernelopts"
            self._put(
                self._bls_path(),
                bootcfg.render_bls_entry(os_title=p.distributor, kernel=p.kernel, options=options),
            )
            self._put(
                "/boot/grub2/grub.cfg", "# BLS: the kernel entries are in /boot/loader/entries\nblscfg\n"
            )
        elif flavour == "grub-legacy":
            self._mkdir("/boot/grub")
            args = (
                f"ro {p.root_arg} rd_NO_LUKS LANG=en_US.UTF-8 rd_NO_MD KEYTABLE=us rhgb quiet "
                "crashkernel=auto"
            )
            self._put(
                "/boot/grub/grub.conf",
                bootcfg.render_grub_conf_legacy(title="CentOS", kernel=p.kernel, args=args),
            )
        self._put("/boot/vmlinuz-" + p.kernel, "")

    def _apply_variety(self) -> None:
        """Deterministic pre-existing state for mixed demo fleets (by index)."""
        kind = self.index % 6
        if kind not in (1, 2, 3):
            return
        vendor_args = [] if self.profile.cpu_vendor == "AuthenticAMD" else ["intel_iommu=on"]
        self._preconfigure_kernel_args(vendor_args + ["iommu=pt"])
        sriov = [n for n in self.nics if n.spec.sriov]
        if not sriov:
            return
        pf = sriov[0]
        if kind == 2:  # VFs created by hand by a previous admin (not managed), one used by a guest
            if self.legacy:
                self._put(MODPROBE_DIR + "/igb.conf", "options igb max_vfs=2\n")
            else:
                self._put(
                    UDEV_DIR + "/80-local-sriov.rules",
                    "# added by hand, ticket OPS-1234\n"
                    f'ACTION=="add", SUBSYSTEM=="net", KERNEL=="{pf.name}", '
                    'ATTR{device/sriov_numvfs}="2"\n',
                )
            _dom, rid = pci_rid(pf.pci)
            first_vf = pci_from_rid(_dom, rid + pf.spec.vf_offset)
            self.guests.append(Guest(name=f"vm-{self.name}-db01", hostdevs=[first_vf]))
            self.guests.append(Guest(name=f"vm-{self.name}-web01", hostdevs=[]))
        elif kind == 3 and not self.legacy:  # configured earlier by the console
            self._put(
                MANAGED_UDEV,
                "# Managed by SR-IOV Console. Do not edit: this file is rewritten by the console.\n"
                "# One line per physical function (keyed by PCI address): its VF count, restored at "
                "boot.\n"
                f'ACTION=="add", SUBSYSTEM=="net", KERNELS=="{pf.pci}", ATTR{{device/sriov_numvfs}}="4"\n',
            )

    def _apply_scenario(self) -> None:
        """The profile's pre-existing state: VF counts recorded by the console, guests."""
        p = self.profile
        if p.managed_vfs:
            self._put(
                MANAGED_UDEV,
                "# Managed by SR-IOV Console. Do not edit: this file is rewritten by the console.\n"
                "# One line per physical function (keyed by PCI address): its VF count, restored at boot.\n"
                + "".join(
                    f'ACTION=="add", SUBSYSTEM=="net", KERNELS=="{pci}", ATTR{{device/sriov_numvfs}}="{n}"\n'
                    for pci, n in sorted(p.managed_vfs.items())
                ),
            )
        for spec in p.guests:
            self.guests.append(
                Guest(
                    name=spec["name"],
                    hostdevs=list(spec.get("hostdevs", [])),
                    running=spec.get("running", True),
                    autostart=spec.get("autostart", True),
                    interfaces=[dict(i) for i in spec.get("interfaces", [])],
                )
            )
        self._snapshot_initramfs()

    def _snapshot_initramfs(self) -> None:
        """What dracut / update-initramfs copies: /etc/modprobe.d as it is now."""
        self.initramfs["modprobe"] = {
            path: text for path, text in self.files.items() if path.startswith(MODPROBE_DIR + "/")
        }

    def _write_grubenv(self, values: dict[str, str]) -> None:
        body = "# GRUB Environment Block\n" + "".join(f"{k}={v}\n" for k, v in values.items())
        self._put(GRUBENV, body + "#" * max(0, 1024 - len(body)))

    def grubenv(self) -> dict[str, str]:
        values = {}
        for line in (self.files.get(GRUBENV) or "").split("\n"):
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key] = value
        return values

    def _preconfigure_kernel_args(self, args: list[str]) -> None:
        """As if an admin had added args earlier and regenerated the boot config."""
        p = self.profile
        if p.grub_default is not None:
            var = (
                "GRUB_CMDLINE_LINUX"
                if p.boot_flavour in ("bls", "rhel-mkconfig")
                else "GRUB_CMDLINE_LINUX_DEFAULT"
            )
            for path in reversed(self._grub_default_files()):
                text = self.files[path]
                m = re.search(rf'^{var}="([^"]*)"', text, re.M)
                if m:
                    inner = (m.group(1) + " " + " ".join(args)).strip()
                    self.files[path] = text[: m.start(1)] + inner + text[m.end(1) :]
                    break
        if p.boot_flavour in ("debian", "rhel-mkconfig"):
            self._regenerate(self._grub_cfg_path())
        elif p.boot_flavour in ("bls", "grub-legacy"):
            self._grubby_edit(args, [])

    # -- small FS primitives (persistent part) --------------------------------------------------

    def _mkdir(self, path: str) -> None:
        if path in self.dirs or path == "/":
            return
        parent = posixpath.dirname(path)
        self._mkdir(parent)
        self.dirs.add(path)
        self.children.setdefault(parent, set()).add(posixpath.basename(path))

    def _put(self, path: str, text: str) -> None:
        parent = posixpath.dirname(path)
        self._mkdir(parent)
        self.files[path] = text
        self.children.setdefault(parent, set()).add(posixpath.basename(path))

    def _delete(self, path: str) -> None:
        self.files.pop(path, None)
        self.children.get(posixpath.dirname(path), set()).discard(posixpath.basename(path))

    def _touch(self) -> None:
        self._gen += 1

    # -- boot configuration ---------------------------------------------------------------------

    def _grub_default_files(self) -> list[str]:
        files = []
        if "/etc/default/grub" in self.files:
            files.append("/etc/default/grub")
        for name in sorted(self.children.get("/etc/default/grub.d", ())):
            path = "/etc/default/grub.d/" + name
            if name.endswith(".cfg") and path in self.files:
                files.append(path)
        return files

    def _sourced_defaults(self) -> dict[str, str]:
        files = [(p, self.files[p]) for p in self._grub_default_files()]
        return bootcfg.source_defaults(files, self.profile.distributor)

    def _root_arg(self) -> str:
        return self.profile.root_arg.format(root_uuid=self.root_uuid)

    def _render_mkconfig(self, env: dict[str, str]) -> str:
        return bootcfg.render_grub_cfg(
            flavour=self.profile.boot_flavour,
            os_name=self.profile.distributor,
            kernel=self.profile.kernel,
            root_arg=self._root_arg(),
            args=bootcfg.kernel_args(env),
        )

    def _grub_cfg_path(self) -> str:
        return (
            "/boot/grub2/grub.cfg"
            if self.profile.boot_flavour in ("rhel-mkconfig", "bls")
            else "/boot/grub/grub.cfg"
        )

    def _bls_path(self, kernel: str | None = None) -> str:
        return f"/boot/loader/entries/{self.machine_id}-{kernel or self.profile.kernel}.conf"

    def _bls_entries(self) -> list[tuple[str, str, str]]:
        """[(kernel, entry path, options with $kernelopts expanded)], newest kernel first: the
        default entry (kernel-install makes a new kernel the default)."""
        env = self.grubenv()
        out = []
        for name in self.children.get("/boot/loader/entries", ()):
            path = "/boot/loader/entries/" + name
            linux, options = bootcfg.bls_options(self.files.get(path, ""))
            if not linux:
                continue
            kernel = linux.rsplit("vmlinuz-", 1)[-1]
            options = (options or "").replace("$kernelopts", env.get("kernelopts", ""))
            out.append((kernel, path, options))
        out.sort(key=lambda e: (kernel_tuple(e[0]), e[0]), reverse=True)
        return out

    def install_kernel(self, kernel: str) -> None:
        """`dnf install kernel-<version>`: kernel-install adds a BLS entry and makes it the default.
        Its options come from /etc/kernel/cmdline, else /proc/cmdline (RHEL 9), or are
        "$kernelopts" (RHEL 8)."""
        with self.lock:
            if self.profile.boot_flavour != "bls":
                raise ValueError(f"{self.profile.name} does not use BLS entries")
            if self.profile.kernel_install == "kernelopts":
                options = "$kernelopts"
            elif "/etc/kernel/cmdline" in self.files:
                options = " ".join(self.files["/etc/kernel/cmdline"].split())
            else:
                options = " ".join(
                    w for w in self.cmdline.split() if not w.startswith(("BOOT_IMAGE=", "initrd="))
                )
            self._put(self._bls_path(kernel), bootcfg.render_bls_entry(
                os_title=self.profile.distributor, kernel=kernel, options=options))
            self._put("/boot/vmlinuz-" + kernel, "")
            self.events.append(f"kernel-install add {kernel}: options {options!r}")
            self._touch()

    def _regenerate(self, out_path: str | None) -> str:
        """grub-mkconfig: -> the generated text (written to out_path when given)."""
        text = self._render_mkconfig(self._sourced_defaults())
        if out_path:
            self._put(out_path, text)
        return text

    def _grubby_edit(self, add: list[str], remove: list[str]) -> None:
        if self.profile.boot_flavour == "bls":
            for name in sorted(self.children.get("/boot/loader/entries", ())):
                path = "/boot/loader/entries/" + name
                lines = self.files[path].split("\n")
                for i, line in enumerate(lines):
                    if line.startswith("options "):
                        lines[i] = "options " + bootcfg.edit_args(line[8:], add, remove)
                self.files[path] = "\n".join(lines)
        else:
            path = "/boot/grub/grub.conf"
            lines = self.files[path].split("\n")
            for i, line in enumerate(lines):
                stripped = line.strip()
                if stripped.startswith("kernel "):
                    words = stripped.split(None, 2)
                    rest = words[2] if len(words) > 2 else ""
                    lines[i] = f"\tkernel {words[1]} {bootcfg.edit_args(rest, add, remove)}"
            self.files[path] = "\n".join(lines)

    def generated_cmdline(self) -> str | None:
        """The command line the next boot will read from the generated boot configuration."""
        with self.lock:
            flavour = self.profile.boot_flavour
            if flavour in ("debian", "rhel-mkconfig"):
                text = self.files.get(self._grub_cfg_path())
                return bootcfg.cmdline_from_grub_cfg(text) if text else None
            if flavour == "bls":
                entries = self._bls_entries()
                if not entries:
                    return None
                kernel, _path, options = entries[0]
                return " ".join([f"BOOT_IMAGE=(hd0,gpt2)/vmlinuz-{kernel}"] + bootcfg.split_args(options))
            text = self.files.get("/boot/grub/grub.conf")
            if not text:
                return None
            _idx, line = bootcfg.legacy_default_kernel_line(text)
            if not line:
                return None
            return " ".join(bootcfg.split_args(line)[2:])

    # -- boot and the kernel's rules ------------------------------------------------------------

    def _module_options(self) -> dict[str, list[tuple[str, str]]]:
        """{driver: [(source, max_vfs value)]} the driver loads with: /etc/modprobe.d (the initramfs'
        copy for a driver that loads from the initramfs), then the kernel command line."""
        opts: dict[str, list[tuple[str, str]]] = {}
        for driver in MAX_VFS_DRIVERS:
            if driver in self.initramfs["modules"]:
                files = self.initramfs["modprobe"]
            else:
                files = {p: t for p, t in self.files.items() if p.startswith(MODPROBE_DIR + "/")}
            for path in sorted(files):
                if not path.endswith(".conf"):
                    continue
                for line in files[path].splitlines():
                    words = line.split("#", 1)[0].split()
                    if len(words) >= 3 and words[0] == "options" and words[1] == driver:
                        opts.setdefault(driver, []).extend(
                            (path, w[len("max_vfs="):]) for w in words[2:] if w.startswith("max_vfs=")
                        )
            for token in self.cmdline.split():
                if token.startswith(driver + ".max_vfs="):
                    opts.setdefault(driver, []).append(("/proc/cmdline", token.split("=", 1)[1]))
        return opts

    def _boot_writes(self) -> list[tuple[str | None, int, str, str]]:
        """What boot applies, in order: (pci, count, source, how). how: "module" (the driver creates
        max_vfs VFs as it loads; "module_failed:<driver>" when it rejects the value and does not
        load), "udev" / "echo" (a write to sriov_numvfs: EBUSY when another non-zero count is there),
        "reset" (NetworkManager: 0 first, then its count)."""
        writes: list[tuple[str | None, int, str, str]] = []
        for driver, values in self._module_options().items():
            source, value = values[-1]  # the last assignment of a parameter wins
            kind = self.profile.max_vfs_type(driver)
            try:
                numbers = [int(v) for v in value.split(",") if v != ""]
            except ValueError:
                numbers = []
            if not numbers or (kind == "uint" and len(numbers) != 1):
                writes.append((None, 0, f"{source}: {driver}: `{value}' invalid for parameter `max_vfs'",
                               "module_failed:" + driver))
                continue
            ports = sorted((n for n in self.nics if n.spec.driver == driver and n.spec.sriov), key=lambda n: n.pci)
            for pos, nic in enumerate(ports):
                count = numbers[0] if kind == "uint" else (numbers[pos] if pos < len(numbers) else 0)
                writes.append((nic.pci, min(count, MAX_VFS_DRIVERS[driver]), source, "module"))
        if self.legacy:
            return writes
        for name in sorted(self.children.get(UDEV_DIR, ())):
            path = UDEV_DIR + "/" + name
            if name.endswith(".rules") and path in self.files:
                for line in self.files[path].splitlines():
                    for pci, count in self._parse_udev_line(line):
                        writes.append((pci, count, path, "udev"))
        writes.extend(self._networkmanager_writes())
        for path, text in self._enabled_scripts():
            for match in re.finditer(r"echo\s+(\d+)\s*>+\s*(\S*sriov_numvfs)", text):
                nic = self._nic_for_sysfs_path(match.group(2))
                if nic is not None:
                    writes.append((nic.pci, int(match.group(1)), path, "echo"))
        return writes

    def _networkmanager_writes(self) -> list[tuple[str, int, str, str]]:
        out = []
        directory = "/etc/NetworkManager/system-connections"
        for name in sorted(self.children.get(directory, ())):
            if name.startswith(".") or name.endswith(("~", ".bak", ".orig", ".rej", ".swp", ".tmp")):
                continue  # NetworkManager ignores backups and editor files
            text = self.files.get(directory + "/" + name, "")
            sections: dict[str, dict[str, str]] = {}
            current = None
            for line in text.splitlines():
                line = line.strip()
                if line.startswith("[") and line.endswith("]"):
                    current = sections.setdefault(line[1:-1], {})
                elif current is not None and "=" in line and not line.startswith("#"):
                    key, _, value = line.partition("=")
                    current[key.strip()] = value.strip()
            if "sriov" not in sections or sections.get("connection", {}).get("autoconnect") == "false":
                continue
            iface = sections.get("connection", {}).get("interface-name")
            nic = next((n for n in self.nics if n.name == iface), None)
            if nic is not None:
                count = int(sections["sriov"].get("total-vfs", "0") or 0)
                out.append((nic.pci, count, directory + "/" + name, "reset"))
        return out

    def _enabled_scripts(self) -> list[tuple[str, str]]:
        """Boot scripts that run: enabled systemd units (their Exec lines) and an executable rc.local."""
        out = []
        units = "/etc/systemd/system"
        wanted = {
            posixpath.basename(p)
            for p in self.files
            if p.startswith(units + "/") and posixpath.dirname(p).endswith((".wants", ".requires"))
        }
        for name in sorted(self.children.get(units, ())):
            if name.endswith(".service") and name in wanted and units + "/" + name in self.files:
                out.append((units + "/" + name, self.files[units + "/" + name]))
        for path in ("/etc/rc.local", "/etc/rc.d/rc.local"):
            if path in self.files and self.modes.get(path, 0o644) & 0o111:
                out.append((path, self.files[path]))
        return out

    def _nic_for_sysfs_path(self, path: str) -> Nic | None:
        for nic in self.nics:
            names = (f"/sys/class/net/{nic.name}/device/sriov_numvfs", f"/sys/bus/pci/devices/{nic.pci}/sriov_numvfs")
            if path in names:
                return nic
        return None

    def _parse_udev_line(self, line: str) -> list[tuple[str, int]]:
        line = line.strip()
        if not line or line.startswith("#"):
            return []
        keys = dict(re.findall(r'([A-Za-z_]+(?:\{[^}]*\})?)\s*[=!:+]?=\s*"([^"]*)"', line))
        if keys.get("ACTION", "add") != "add":
            return []
        attr = keys.get("ATTR{device/sriov_numvfs}") if keys.get("SUBSYSTEM", "net") == "net" else None
        if attr is None and keys.get("SUBSYSTEM") == "pci":
            attr = keys.get("ATTR{sriov_numvfs}")
        if attr is None or not attr.isdigit():
            return []
        out = []
        for nic in self.nics:
            if not nic.spec.sriov:
                continue
            checks = []
            if "KERNELS" in keys:
                checks.append(keys["KERNELS"] == nic.pci)
            if "KERNEL" in keys:
                checks.append(keys["KERNEL"] in (nic.name, nic.pci))
            for key in ("ENV{ID_NET_DRIVER}", "DRIVERS"):
                if key in keys:
                    checks.append(keys[key] == nic.spec.driver)
            if checks and all(checks):
                out.append((nic.pci, int(attr)))
        return out

    def _apply_boot_write(self, nic: Nic, count: int, how: str) -> None:
        if how == "reset" and nic.numvfs not in (0, count):
            self._set_numvfs(nic, 0, at_boot=True)
        self._set_numvfs(nic, count, at_boot=True)

    def boot(self) -> None:
        """Power on: new boot id, command line from the generated boot config, VFs reset, then
        re-created from persistence; autostart guests start when their VFs exist."""
        with self.lock:
            self.boot_id = str(uuid.uuid4())
            self.boot_count += 1
            self._booted_at = time.monotonic()
            cmdline = self.generated_cmdline()
            if cmdline is None:
                self.events.append("boot: no usable boot configuration; kept the previous command line")
                cmdline = self.cmdline
            self.cmdline = cmdline
            if self.profile.boot_flavour == "bls" and self._bls_entries():
                self.running_kernel = self._bls_entries()[0][0]
            self.iommu_active = iommu_rule(self.profile.cpu_vendor, cmdline, self._firmware_iommu())
            self.pending_writes = {}
            self.modules = set()
            for nic in self.nics:
                nic.numvfs = 0
                nic.vfs = []
                nic.loaded = True
                nic.mtu = 1500
                nic.autoprobe = 1
            for guest in self.guests:
                guest.allocated = {}
            for pci, count, source, how in self._boot_writes():
                if how.startswith("module_failed:"):
                    driver = how.split(":", 1)[1]
                    for nic in self.nics:
                        if nic.spec.driver == driver:
                            nic.loaded = False
                    self.events.append(f"boot: {source}; {driver} did not load")
                    continue
                nic = self._nic_by_pci(pci)
                if not nic.loaded:
                    continue
                try:
                    self._apply_boot_write(nic, count, how)
                except OSError as exc:
                    self.events.append(f"boot: {source} writing {count} for {pci}: {exc.strerror}")
            self.boot_runs = []
            self.libvirt_up = False
            self.extra_processes = {}
            self._boot_units()  # ordered Before= libvirt's daemons
            self.libvirt_up = True
            self._boot_networks()
            for guest in self.guests:
                if guest.autostart:
                    guest.running, guest.note = self._can_start(guest)
                else:
                    guest.running = False
            self._boot_udev_vf_events()
            self.state = "up"
            self.events.append(f"booted {self.boot_id} cmdline={cmdline!r}")
            self._touch()

    def _firmware_iommu(self) -> bool:
        tables = self.profile.firmware_tables()
        return ("DMAR" in tables) if self.profile.cpu_vendor == "GenuineIntel" else ("IVRS" in tables)

    def _can_start(self, guest: Guest) -> tuple[bool, str]:
        """Whether a guest starts now (its devices exist, the IOMMU is on for passthrough); allocates
        the VFs its network interfaces get from libvirt network pools."""
        present = {vf.pci for nic in self.nics for vf in nic.vfs}
        missing = [d for d in guest.hostdevs if d not in present]
        netdevs = {vf.netdev for nic in self.nics if nic.has_netdev for vf in nic.vfs}
        missing += [i["dev"] for i in guest.interfaces if i.get("type") == "direct" and i.get("dev") not in netdevs]
        if missing:
            return False, "missing " + ", ".join(missing)
        passthrough = bool(guest.hostdevs)
        guest.allocated = {}
        for index, iface in enumerate(guest.interfaces):
            if iface.get("type") != "network":
                continue
            network = self.networks.get(iface.get("network"))
            if network is None:
                return False, f"network {iface.get('network')} is not defined"
            if not network.get("active", True):
                return False, f"network {iface.get('network')} is not active"
            free = [d for d in self._pool(network) if d not in self._allocated_devices()]
            if not free:
                return False, f"no free VF in network {iface.get('network')}"
            guest.allocated[index] = free[0]
            passthrough = passthrough or network["mode"] == "hostdev"
        if passthrough and not self.iommu_active:
            guest.allocated = {}
            return False, "IOMMU is off"
        return True, ""

    def _pool(self, network: dict) -> list[str]:
        """The devices a libvirt network hands out: VF PCI addresses (hostdev) or VF netdevs (macvtap)."""
        nic = next((n for n in self.nics if n.name == network.get("pf")), None)
        if nic is None or network["mode"] not in ("hostdev", "passthrough", "private", "vepa", "bridge"):
            return []
        if not network.get("active", True):
            return []
        if network["mode"] == "hostdev":
            return [vf.pci for vf in nic.vfs]
        return [vf.netdev for vf in nic.vfs]

    def _allocated_devices(self) -> set[str]:
        return {d for g in self.guests if g.running for d in g.allocated.values()}

    def shutdown(self) -> None:
        with self.lock:
            self.state = "down"
            for guest in self.guests:
                guest.running = False
            for nic in self.nics:
                nic.numvfs = 0
                nic.vfs = []
            self._touch()

    def request_reboot(self, how: str) -> None:
        with self.lock:
            self.reboots_requested += 1
            self.events.append("reboot requested: " + how)
        hook = self.reboot_hook
        if hook is not None:
            hook()

    def _nic_by_pci(self, pci: str) -> Nic:
        for nic in self.nics:
            if nic.pci == pci:
                return nic
        raise KeyError(pci)

    def _totalvfs(self, nic: Nic) -> int:
        if "sriov_off_in_firmware" in self.faults:
            return 0
        return nic.spec.effective_totalvfs if nic.spec.sriov else 0

    def _set_numvfs(self, nic: Nic, count: int, *, at_boot: bool = False) -> None:
        """drivers/pci/iov.c sriov_numvfs_store() semantics."""
        if count > self._totalvfs(nic):
            raise _err(errno.ERANGE, nic.pci)
        if count == nic.numvfs:
            return
        if count == 0:
            held = self._held_vfs()
            # Drivers that check pci_vfs_assigned() refuse; with vfio-pci the write blocks instead
            # (fault vfio_release_blocks, handled before the write reaches here).
            if not at_boot and any(vf.pci in held for vf in nic.vfs) and "vfio_release_blocks" not in self.faults:
                raise _err(VFS_ASSIGNED_ERRNO.get(nic.spec.driver, errno.EBUSY), nic.pci)
            self._vfs_removed(nic)
            nic.numvfs = 0
            nic.vfs = []
            self._touch()
            return
        if nic.numvfs != 0:
            raise _err(errno.EBUSY, nic.pci)
        partial = self.faults.get("partial_enable")
        if partial is not None and not at_boot:
            count = min(count, int(partial.get("max", 1)))
        spec = nic.spec
        domain, rid = pci_rid(spec.pci)
        ready_at = 0.0 if at_boot else time.monotonic() + self.vf_delay
        base = spec.vf_name_base or spec.name
        vfs = []
        for i in range(count):
            vf_pci = pci_from_rid(domain, rid + spec.vf_offset + i * spec.vf_stride)
            mac = "00:00:00:00:00:00" if spec.vf_zero_mac else self._mac("52:54:00", i, salt=spec.pci)
            vfs.append(Vf(index=i, pci=vf_pci, netdev=f"{base}v{i}", mac=mac, ready_at=ready_at,
                          driver=self._default_vf_driver(nic) if nic.autoprobe else None))
        nic.numvfs = count
        nic.vfs = vfs
        self._touch()

    def _held_vfs(self) -> dict[str, str]:
        """VFs running guests hold through vfio-pci: hostdevs, and VFs from hostdev network pools."""
        held = {pci: g.name for g in self.guests if g.running for pci in g.hostdevs}
        for guest in self.guests:
            for index, device in guest.allocated.items():
                network = self.networks.get(guest.interfaces[index].get("network"), {})
                if guest.running and network.get("mode") == "hostdev":
                    held[device] = guest.name
        return held

    def _macvtap_users(self) -> dict[str, str]:
        """VF netdevs running guests use through macvtap."""
        users = {}
        for guest in self.guests:
            if not guest.running:
                continue
            for index, iface in enumerate(guest.interfaces):
                if iface.get("type") == "direct":
                    users[iface.get("dev")] = guest.name
                elif index in guest.allocated and self.networks.get(iface.get("network"), {}).get("mode") != "hostdev":
                    users[guest.allocated[index]] = guest.name
        return users

    def _vfs_removed(self, nic: Nic) -> None:
        """Guests whose macvtap sat on a removed VF lose that interface (the kernel does not ask)."""
        users = self._macvtap_users()
        for vf in nic.vfs:
            if vf.netdev in users:
                guest = next(g for g in self.guests if g.name == users[vf.netdev])
                guest.note = f"lost its interface on {vf.netdev}: the VF was removed"
                self.events.append(f"guest {guest.name} lost {vf.netdev} (macvtap lower device removed)")

    # -- the generated /sys and /proc -----------------------------------------------------------

    def _dyn_tree(self):
        now = time.monotonic()
        if self._dyn is not None and self._dyn_gen == self._gen and now < self._dyn_valid_until:
            return self._dyn
        self._dyn = self._build_dyn(now)
        self._dyn_gen = self._gen
        return self._dyn

    def _build_dyn(self, now: float):
        entries: dict[str, tuple] = {}
        children: dict[str, list[str]] = {}
        valid_until = float("inf")

        def add(path, entry):
            if path in entries:
                entries[path] = entry
                return
            entries[path] = entry
            parent = posixpath.dirname(path)
            children.setdefault(parent, []).append(posixpath.basename(path))
            if parent not in entries and parent not in ("/",):
                add(parent, DIR)

        def f(path, text, writer=None):
            add(path, ("f", text, writer))

        def link(path, target_abs):
            # kernfs style: up to the first common ancestor of the target's parent, then down
            # (so /sys/class/net/eno49/device reads "../../../0000:04:00.0", as on a real host).
            up = posixpath.relpath(posixpath.dirname(target_abs), posixpath.dirname(path))
            add(
                path,
                (
                    "l",
                    posixpath.join(up, posixpath.basename(target_abs))
                    if up != "."
                    else posixpath.basename(target_abs),
                ),
            )

        p = self.profile
        add("/sys", DIR)
        add("/proc", DIR)
        # /proc
        f("/proc/cmdline", self.cmdline + "\n")
        f("/proc/1/comm", "systemd\n")
        for n, guest in enumerate(self.guests):
            if guest.running:  # one qemu process per running guest (comm is cut at 15 characters)
                f(f"/proc/{4000 + n}/comm", "qemu-system-x86\n")
        f("/proc/sys/kernel/osrelease", self.running_kernel + "\n")
        f("/proc/net/route", self._proc_net_route())
        for table in p.firmware_tables():
            f(f"/sys/firmware/acpi/tables/{table}", "")
        add("/sys/firmware/acpi/tables", DIR)
        f("/proc/sys/kernel/ostype", "Linux\n")
        f("/proc/sys/kernel/hostname", self.name + "\n")
        f("/proc/sys/kernel/random/boot_id", self.boot_id + "\n")
        f("/proc/version", f"Linux version {p.kernel} (builder@simfleet) (gcc version 12.2.0) #1 SMP\n")
        f(
            "/proc/uptime",
            lambda: (
                f"{time.monotonic() - self._booted_at:.2f} {2 * (time.monotonic() - self._booted_at):.2f}\n"
            ),
        )
        flag = "vmx" if p.cpu_vendor == "GenuineIntel" else "svm"
        cpu = (
            "processor\t: %d\nvendor_id\t: %s\ncpu family\t: %d\nmodel name\t: %s\n"
            "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat %s\n\n"
        )
        family = 6 if p.cpu_vendor == "GenuineIntel" else 25
        f("/proc/cpuinfo", "".join(cpu % (i, p.cpu_vendor, family, p.cpu_model, flag) for i in range(2)))
        loaded = self.loaded_drivers()
        drivers = sorted(d.replace("-", "_") for d in loaded)
        f("/proc/modules", "".join(f"{d} 221184 0 - Live 0x0000000000000000\n" for d in drivers))
        # sysfs-bus-pci: a driver directory per loaded PCI driver with bind/unbind, and drivers_probe
        for driver in sorted(loaded):
            f(f"/sys/bus/pci/drivers/{driver}/bind", "", ("bind", driver))
            f(f"/sys/bus/pci/drivers/{driver}/unbind", "", ("unbind", driver))
        f("/sys/bus/pci/drivers_probe", "", ("probe", ""))
        # DMI
        f("/sys/class/dmi/id/sys_vendor", p.sys_vendor + "\n")
        f("/sys/class/dmi/id/product_name", p.product_name + "\n")
        # IOMMU
        add("/sys/class/iommu", DIR)
        add("/sys/kernel/iommu_groups", DIR)
        groups: dict[str, int] = {}
        if self.iommu_active:
            unit = "dmar0" if p.cpu_vendor == "GenuineIntel" else "ivhd0"
            add("/sys/devices/virtual/iommu/" + unit, DIR)
            link("/sys/class/iommu/" + unit, "/sys/devices/virtual/iommu/" + unit)
        held = self._held_vfs()

        def pci_dev(spec_bridge, pci, vendor, device, driver, subsystem):
            d = f"/sys/devices/pci0000:00/{spec_bridge}/{pci}"
            node = p.bridge_nodes.get(spec_bridge, -1 if not p.node_cpus else 0)
            add(d, DIR)
            f(d + "/vendor", f"0x{vendor:04x}\n")
            f(d + "/device", f"0x{device:04x}\n")
            f(d + "/subsystem_vendor", f"0x{subsystem[0]:04x}\n")
            f(d + "/subsystem_device", f"0x{subsystem[1]:04x}\n")
            f(d + "/class", "0x020000\n")
            f(d + "/numa_node", f"{node}\n")
            f(d + "/local_cpulist", (p.node_cpus[node] if node >= 0 and p.node_cpus else p.all_cpus) + "\n")
            f(d + "/enable", "1\n")
            f(
                d + "/uevent",
                "DRIVER={}\nPCI_CLASS=20000\nPCI_ID={:04X}:{:04X}\nPCI_SLOT_NAME={}\n".format(
                    driver or "", vendor, device, pci
                ),
            )
            link("/sys/bus/pci/devices/" + pci, d)
            if driver:
                link(d + "/driver", "/sys/bus/pci/drivers/" + driver)
                link(f"/sys/bus/pci/drivers/{driver}/{pci}", d)
                link(f"/sys/bus/pci/drivers/{driver}/module", "/sys/module/" + driver)
                add("/sys/module/" + driver, DIR)
            if self.iommu_active:
                group = groups.setdefault(pci, len(groups))
                gdir = f"/sys/kernel/iommu_groups/{group}"
                link(gdir + "/devices/" + pci, d)
                f(gdir + "/type", "identity\n" if "iommu=pt" in self.cmdline.split() else "DMA\n")
                link(d + "/iommu_group", gdir)
            return d

        def netdev(devdir, name, mac, up, speed, mtu, ifindex, pci=None):
            nd = devdir + "/net/" + name
            add(nd, DIR)
            f(nd + "/address", mac + "\n")
            f(nd + "/operstate", ("up" if up else "down") + "\n")
            f(nd + "/carrier", ("1" if up else "0") + "\n")
            f(nd + "/speed", f"{speed}\n" if up else _err(errno.EINVAL, nd + "/speed"))
            f(nd + "/duplex", "full\n" if up else _err(errno.EINVAL, nd + "/duplex"))
            f(nd + "/mtu", f"{mtu}\n", ("mtu", pci) if pci else None)
            f(nd + "/ifindex", f"{ifindex}\n")
            f(nd + "/type", "1\n")
            f(nd + "/addr_len", "6\n")
            f(nd + "/uevent", f"INTERFACE={name}\nIFINDEX={ifindex}\n")
            link(nd + "/device", devdir)
            link(nd + "/subsystem", "/sys/class/net")
            link("/sys/class/net/" + name, nd)

        for nd_name, mtu in (("lo", 65536),) + ((("virbr0", 1500),) if "virsh" in p.programs else ()):
            vd = "/sys/devices/virtual/net/" + nd_name
            add(vd, DIR)
            f(vd + "/address", ("00:00:00:00:00:00" if nd_name == "lo" else self._mac("52:54:00", 99)) + "\n")
            f(vd + "/operstate", ("unknown" if nd_name == "lo" else "down") + "\n")
            f(vd + "/mtu", f"{mtu}\n")
            link("/sys/class/net/" + nd_name, vd)

        uppers: dict[str, str] = {}
        for master in sorted(set(p.masters.values())):
            vd = "/sys/devices/virtual/net/" + master
            add(vd, DIR)
            f(vd + "/address", self._mac("52:54:01", len(master)) + "\n")
            f(vd + "/operstate", "up\n")
            f(vd + "/mtu", "1500\n")
            f(vd + "/uevent", f"DEVTYPE={p.master_kinds.get(master, 'bond')}\nINTERFACE={master}\n")
            add(vd + ("/bonding" if p.master_kinds.get(master, "bond") == "bond" else "/bridge"), DIR)
            link("/sys/class/net/" + master, vd)
            uppers[master] = vd
        next_if = 100
        for nic in self.nics:
            s = nic.spec
            d = pci_dev(s.bridge, s.pci, s.vendor, s.device, nic.driver, s.subsystem)
            if nic.has_netdev:
                netdev(d, s.name, nic.mac, s.link_up, s.speed, nic.mtu, nic.ifindex, nic.pci)
                master = p.masters.get(s.name)
                if master in uppers:
                    link(f"{d}/net/{s.name}/master", uppers[master])
                    link(f"{d}/net/{s.name}/upper_{master}", uppers[master])
                    link(f"{uppers[master]}/lower_{s.name}", f"{d}/net/{s.name}")
            if s.sriov:
                if not self.legacy:
                    f(d + "/sriov_totalvfs", f"{self._totalvfs(nic)}\n")
                    f(d + "/sriov_numvfs", f"{nic.numvfs}\n", ("numvfs", nic.pci))
                    f(d + "/sriov_offset", f"{s.vf_offset}\n")
                    f(d + "/sriov_stride", f"{s.vf_stride}\n")
                    f(d + "/sriov_vf_device", f"{s.vf_device or 0:04x}\n")
                    f(d + "/sriov_drivers_autoprobe", f"{nic.autoprobe}\n", ("autoprobe", nic.pci))
                for vf in nic.vfs:
                    holder = held.get(vf.pci)
                    driver = "vfio-pci" if holder else vf.driver
                    vd = pci_dev(s.bridge, vf.pci, s.vendor, s.vf_device or 0, driver, s.subsystem)
                    f(vd + "/driver_override", (vf.driver_override or "(null)") + "\n", ("driver_override", vf.pci))
                    link(f"{d}/virtfn{vf.index}", vd)
                    link(vd + "/physfn", d)
                    next_if += 1
                    if holder or driver is None or driver != s.vf_driver:
                        continue
                    if now >= vf.ready_at:
                        netdev(vd, vf.netdev, vf.mac, False, s.speed, 1500, next_if)
                    else:
                        valid_until = min(valid_until, vf.ready_at)
        for port, master in p.masters.items():
            if port in uppers and master in uppers:  # a bond under a bridge
                link(uppers[port] + "/master", uppers[master])
                link(uppers[port] + "/upper_" + master, uppers[master])
                link(uppers[master] + "/lower_" + port, uppers[port])
        # QEMU keeps the VFIO group of every VF it was given open (/proc/<pid>/fd/N -> /dev/vfio/<group>)
        for n, guest in enumerate(self.guests):
            fds = [groups[pci] for pci, name in held.items() if name == guest.name and pci in groups] \
                if guest.running else []
            for k, group in enumerate(sorted(fds)):
                add(f"/proc/{4000 + n}/fd/{20 + k}", ("l", f"/dev/vfio/{group}"))
        for pid, comm in self.extra_processes.items():  # processes outside libvirt (DPDK, a QEMU by hand)
            f(f"/proc/{pid}/comm", comm["comm"] + "\n")
            for k, pci in enumerate(comm.get("vfio", [])):
                if pci in groups:
                    add(f"/proc/{pid}/fd/{20 + k}", ("l", f"/dev/vfio/{groups[pci]}"))
        if self.libvirt_up and "virsh" in p.programs:
            f("/proc/900/comm", "libvirtd\n")
        self._dyn_valid_until = valid_until
        return entries, children

    # -- host networking (addresses, routes, the simulated SSH connection) ------------------------

    def _top(self, dev: str) -> str:
        while dev in self.profile.masters:
            dev = self.profile.masters[dev]
        return dev

    def management_address(self) -> str:
        return f"10.{10 + self.index // 250}.{self.index % 250}.5"

    def _addresses(self) -> dict[str, list[str]]:
        out = {self._top(self.profile.management): [self.management_address() + "/16"]}
        for dev, addrs in self.profile.addresses.items():
            out.setdefault(dev, []).extend(addrs)
        return out

    def _proc_net_route(self) -> str:
        head = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        dev = self._top(self.profile.management)
        net = self.management_address().rsplit(".", 2)[0]
        a, b = (int(x) for x in net.split("."))
        return (
            head
            + f"{dev}\t00000000\t0100{b:02X}{a:02X}\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
            + f"{dev}\t0000{b:02X}{a:02X}\t00000000\t0001\t0\t0\t100\t0000FFFF\t0\t0\t0\n"
        )

    def ssh_connection(self) -> str:
        """SSH_CONNECTION of a session from the console: client, port, this host's management address."""
        return f"{CONTROLLER_ADDRESS} 51234 {self.management_address()} 22"

    def _prog_ip(self, args: list[str]):
        if args[:3] == ["-o", "addr", "show"]:
            lines = [" 1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever"]
            for n, (dev, addrs) in enumerate(sorted(self._addresses().items()), 2):
                for addr in addrs:
                    lines.append(f"{n}: {dev}    inet {addr} scope global {dev}\\       valid_lft forever")
            return 0, "".join(line.strip() + "\n" for line in lines), ""
        if args[:3] == ["-o", "route", "get"] and len(args) == 4:
            dev = self._top(self.profile.management)
            if args[3].startswith("127."):
                return 0, f"local {args[3]} dev lo src 127.0.0.1 uid 0 \\    cache <local>\n", ""
            return 0, f"{args[3]} via 10.0.0.1 dev {dev} src {self.management_address()} uid 0 \\    cache\n", ""
        return self._prog_ip_link(args)

    def _prog_modprobe(self, args: list[str]):
        names = [a for a in args if not a.startswith("-")]
        if len(names) != 1:
            return 1, "", "modprobe: simfleet simulates only modprobe <module>\n"
        known = {"vfio-pci", "vfio_pci"} | {n.spec.vf_driver for n in self.nics if n.spec.vf_driver}
        if names[0] not in known and names[0] not in {n.spec.driver for n in self.nics}:
            return 1, "", (f"modprobe: FATAL: Module {names[0]} not found in directory "
                           f"/lib/modules/{self.running_kernel}\n")
        self.modules.add("vfio-pci" if names[0] == "vfio_pci" else names[0])
        self._touch()
        return 0, "", ""

    # -- path resolution over both parts --------------------------------------------------------

    def _entry(self, path: str):
        if path == "/":
            return DIR
        if path.startswith("/sys/") or path.startswith("/proc/") or path in ("/sys", "/proc"):
            return self._dyn_tree()[0].get(path)
        text = self.files.get(path)
        if text is not None:
            return ("f", text, "store")
        if path in self.dirs:
            return DIR
        return None

    def _resolve(self, path: str, follow_last: bool = True, depth: int = 0) -> str:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"host paths must be absolute: {path!r}")
        parts = [p for p in path.split("/") if p and p != "."]
        cur = "/"
        for i, name in enumerate(parts):
            if name == "..":
                cur = posixpath.dirname(cur)
                continue
            cand = (cur if cur != "/" else "") + "/" + name
            entry = self._entry(cand)
            if entry is None:
                raise _err(errno.ENOENT, path)
            last = i == len(parts) - 1
            if entry[0] == "l" and (follow_last or not last):
                if depth > 40:
                    raise _err(errno.ELOOP, path)
                cur = self._resolve(posixpath.join(cur, entry[1]), True, depth + 1)
            else:
                if not last and entry[0] != "d":
                    raise _err(errno.ENOTDIR, path)
                cur = cand
        return cur

    def _list(self, real: str) -> list[str]:
        names = set()
        if real == "/":
            names |= {"sys", "proc"} | self.children.get("/", set())
        elif real.startswith("/sys") or real.startswith("/proc"):
            names |= set(self._dyn_tree()[1].get(real, ()))
        else:
            names |= self.children.get(real, set())
        return sorted(names)

    def _writable(self, path: str, privileged: bool) -> None:
        if not privileged:
            raise _err(errno.EACCES, path)
        if (path == "/etc" or path.startswith("/etc/")) and "readonly_etc" in self.faults:
            raise _err(errno.EROFS, path)

    def _write_dyn(self, entry, real: str, data: str) -> None:
        writer = entry[2]
        if writer is None:
            raise _err(errno.EACCES, real)
        kind, pci = writer
        if kind in ("driver_override", "bind", "unbind", "probe", "autoprobe"):
            self._vf_driver_write(kind, pci, data, real)
            self._touch()
            return
        if kind == "mtu":
            nic = self._nic_by_pci(pci)
            code, _out, _text = self._ip_set_mtu(nic, data.strip())
            if code:
                raise _err(errno.EINVAL, real)
            return
        if kind == "numvfs":
            text = data.strip()
            try:
                value = int(text, 0)
            except ValueError:
                raise _err(errno.EINVAL, real) from None
            if value < 0 or value > 0xFFFF:
                raise _err(errno.EINVAL, real)
            nic = self._nic_by_pci(pci)
            try:
                self._set_numvfs(nic, value)
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, real) from None
            self.events.append(f"sriov_numvfs {pci} <- {value}")

    # -- the System operations (called by SimSystem, under the lock) ----------------------------

    def fs_read(self, path: str) -> str:
        real = self._resolve(path)
        entry = self._entry(real)
        if entry[0] == "d":
            raise _err(errno.EISDIR, path)
        content = entry[1]
        if isinstance(content, OSError):
            raise OSError(content.errno, content.strerror, path)
        return content() if callable(content) else content

    def fs_write(self, path: str, data: str, privileged: bool = True) -> None:
        try:
            real = self._resolve(path)
        except FileNotFoundError:
            real = None
        if real is not None:
            entry = self._entry(real)
            if entry[0] == "d":
                raise _err(errno.EISDIR, path)
            if entry[2] != "store":
                if not privileged:
                    raise _err(errno.EACCES, path)
                return self._write_dyn(entry, real, data)
            self._writable(real, privileged)
            self.files[real] = data
            return
        parent = self._resolve(posixpath.dirname(path))
        if self._entry(parent)[0] != "d":
            raise _err(errno.ENOTDIR, path)
        if parent.startswith("/sys") or parent.startswith("/proc"):
            raise _err(errno.EACCES, path)  # open(O_CREAT) in sysfs/procfs
        real = posixpath.join(parent, posixpath.basename(path))
        self._writable(real, privileged)
        self._put(real, data)

    def fs_atomic_write(self, path: str, data: str, privileged: bool = True, mode: int | None = None) -> None:
        parent = self._resolve(posixpath.dirname(path))
        if self._entry(parent)[0] != "d":
            raise _err(errno.ENOTDIR, path)
        if parent.startswith("/sys") or parent.startswith("/proc"):
            raise _err(errno.EACCES, path)
        real = posixpath.join(parent, posixpath.basename(path))
        self._writable(real, privileged)
        if real in self.dirs:
            raise _err(errno.EISDIR, path)
        # mode None keeps the replaced file's permissions (0644 for a new file), like the real System
        self.modes[real] = mode if mode is not None else (self.modes.get(real, 0o644) if real in self.files else 0o644)
        self._put(real, data)

    def fs_remove(self, path: str, privileged: bool = True) -> None:
        real_parent = self._resolve(posixpath.dirname(path))
        real = posixpath.join(real_parent, posixpath.basename(path))
        entry = self._entry(real)
        if entry is None:
            raise _err(errno.ENOENT, path)
        if entry[0] == "d":
            raise _err(errno.EISDIR, path)
        if entry[0] != "f" or entry[2] != "store":
            raise _err(errno.EPERM, path)
        self._writable(real, privileged)
        self._delete(real)

    def fs_remove_dir(self, path: str, privileged: bool = True) -> None:
        real = self._resolve(path)
        if real not in self.dirs:
            raise _err(errno.ENOTDIR, path)
        if self.children.get(real):
            raise _err(errno.ENOTEMPTY, path)
        self._writable(real, privileged)
        self.dirs.discard(real)
        self.children.pop(real, None)
        self.children.get(posixpath.dirname(real), set()).discard(posixpath.basename(real))

    def fs_make_dirs(self, path: str, privileged: bool = True) -> None:
        parts = [p for p in path.split("/") if p and p != "."]
        cur = ""
        for name in parts:
            cand = cur + "/" + name
            try:
                real = self._resolve(cand)
                if self._entry(real)[0] != "d":
                    raise _err(errno.ENOTDIR, path)
                cur = real if real != "/" else ""
                continue
            except FileNotFoundError:
                pass
            if cand.startswith("/sys") or cand.startswith("/proc"):
                raise _err(errno.EACCES, path)
            self._writable(cand, privileged)
            self._mkdir(cand)
            cur = cand

    # -- simulated programs ---------------------------------------------------------------------

    def file_mode(self, path: str) -> int | None:
        with self.lock:
            return self.modes.get(path, 0o644) if path in self.files else None

    def which(self, name: str, search_path: str | None = None) -> str | None:
        """A program by absolute path, or by name along search_path (a PATH value; None: any
        directory, for the simulator's own look-ups)."""
        if "no_virsh" in self.faults and posixpath.basename(name) == "virsh":
            return None
        if "/" in name:
            return name if name in self.profile.programs.values() else None
        found = self.profile.programs.get(name)
        if found and search_path is not None and posixpath.dirname(found) not in search_path.split(":"):
            return None
        return found

    def run_program(self, argv: list[str], privileged: bool = True) -> tuple[int | None, str, str]:
        if not argv:
            return 127, "", ": No such file or directory"
        prog = argv[0]
        name = posixpath.basename(prog)
        if self.which(prog) is None:
            return 127, "", f"{prog}: No such file or directory"
        args = list(argv[1:])
        handler = {
            "ethtool": self._prog_ethtool,
            "virsh": self._prog_virsh,
            "update-grub": self._prog_mkconfig,
            "grub-mkconfig": self._prog_mkconfig,
            "grub2-mkconfig": self._prog_mkconfig,
            "grubby": self._prog_grubby,
            "grub2-editenv": self._prog_editenv,
            "ip": self._prog_ip,
            "modprobe": self._prog_modprobe,
            "modinfo": self._prog_modinfo,
            "dracut": self._prog_initramfs,
            "update-initramfs": self._prog_initramfs,
            "lsinitrd": self._prog_lsinitramfs,
            "lsinitramfs": self._prog_lsinitramfs,
            "nmcli": lambda a: (0, "", "") if a[:2] == ["connection", "reload"] else (2, "", "Error: not simulated\n"),
            "true": lambda a: (0, "", ""),
            "sync": lambda a: (0, "", ""),
            "udevadm": lambda a: (0, "", ""),
        }.get(name)
        if name == "systemctl" and args[:1] in (["enable"], ["disable"]) and len(args) == 2:
            handler = self._prog_systemctl_unit
        if name == "systemctl" and args == ["daemon-reload"]:
            handler = self._prog_systemctl_unit
        mutating = ("grubby", "update-grub", "grub-mkconfig", "grub2-mkconfig", "dracut", "update-initramfs")
        if (name in mutating or handler == self._prog_systemctl_unit
                or (name == "grub2-editenv" and "set" in args)) and not privileged:
            return 1, "", f"{name}: Permission denied\n"
        if not privileged and ((name == "ip" and args[:2] == ["link", "set"]) or name == "modprobe"):
            return 2, "", "RTNETLINK answers: Operation not permitted\n" if name == "ip" else (
                "modprobe: ERROR: could not insert module: Operation not permitted\n")
        if handler is not None:
            if name in ("update-grub", "grub-mkconfig", "grub2-mkconfig"):
                return self._prog_mkconfig(args, name)
            return handler(args)
        if reboot_intent(argv):
            if not privileged:
                return 1, "", "Failed to reboot: Access denied\n"
            if name == "systemd-run":
                self.request_reboot(" ".join(argv))
                return (
                    0,
                    "",
                    f"Running timer as unit: run-r{self.boot_id[:8]}.timer\n"
                    f"Will run service as unit: run-r{self.boot_id[:8]}.service\n",
                )
            self.request_reboot(" ".join(argv))
            return 0, "", ""
        return 1, "", "simfleet: {} {} is not simulated on this host\n".format(name, " ".join(args))

    def spawn(self, argv: list[str], privileged: bool = True) -> None:
        if not argv or self.which(argv[0]) is None:
            raise _err(errno.ENOENT, argv[0] if argv else "")
        if reboot_intent(argv):
            if privileged:
                self.request_reboot(" ".join(argv))
            return
        self.events.append("spawned (ignored): {}".format(" ".join(argv)))

    def _find_netdev(self, name: str):
        for nic in self.nics:
            if nic.name == name:
                return nic, None
            for vf in nic.vfs:
                if vf.netdev == name and time.monotonic() >= vf.ready_at and vf.pci not in self._held_vfs():
                    return nic, vf
        return None, None

    def _prog_ethtool(self, args: list[str]):
        if len(args) == 2 and args[0] in ("-i", "--driver"):
            nic, vf = self._find_netdev(args[1])
            if nic is None:
                if args[1] in ("lo", "virbr0"):
                    return 71, "", "Cannot get driver information: Operation not supported\n"
                return 71, "", "Cannot get driver information: No such device\n"
            s = nic.spec
            if vf is None:
                driver, version, firmware, bus = s.driver, s.driver_version, s.firmware, s.pci
            else:
                driver = s.vf_driver
                version = VF_DRIVER_VERSION.get(driver) or s.driver_version
                firmware, bus = ("" if driver != "mlx5_core" else s.firmware), vf.pci
            out = (
                "driver: {}\nversion: {}\nfirmware-version: {}\nexpansion-rom-version: \nbus-info: {}\n"
                "supports-statistics: yes\nsupports-test: {}\nsupports-eeprom-access: {}\n"
                "supports-register-dump: yes\nsupports-priv-flags: {}\n"
            ).format(
                driver,
                version,
                firmware,
                bus,
                "yes" if vf is None else "no",
                "yes" if vf is None else "no",
                "yes" if driver in ("igb", "i40e", "mlx5_core") else "no",
            )
            return 0, out, ""
        if len(args) == 1 and not args[0].startswith("-"):
            nic, vf = self._find_netdev(args[0])
            if nic is None:
                return (
                    75,
                    "",
                    "netlink error: no device matches name (offset 24)\nnetlink error: No such device\n",
                )
            up = nic.spec.link_up and vf is None
            speed = f"{nic.spec.speed}Mb/s" if up else "Unknown!"
            return (
                0,
                (
                    "Settings for {}:\n\tSpeed: {}\n\tDuplex: {}\n\tAuto-negotiation: on\n"
                    "\tLink detected: {}\n".format(
                        args[0], speed, "Full" if up else "Unknown! (255)", "yes" if up else "no"
                    )
                ),
                "",
            )
        return 1, "", "ethtool: bad command line argument(s)\n"

    def _prog_virsh(self, args: list[str]):
        rest = []
        i = 0
        while i < len(args):
            a = args[i]
            if a in ("-c", "--connect"):
                i += 2
                continue
            if a.startswith("--connect=") or a in ("-q", "--quiet", "-r", "--readonly"):
                i += 1
                continue
            rest = args[i:]
            break
        if not rest:
            return 1, "", "error: no command given\n"
        cmd, opts = rest[0], rest[1:]
        if cmd in ("net-list", "net-info", "net-define", "net-start", "net-destroy", "net-autostart", "net-undefine"):
            return self._prog_virsh_net(cmd, opts)
        if cmd == "net-dumpxml":
            names = [o for o in opts if not o.startswith("--")]
            network = self.networks.get(names[0]) if names else None
            if network is None:
                wanted = names[0] if names else ""
                return 1, "", f"error: failed to get network '{wanted}'\nerror: Network not found\n"
            return 0, self._network_xml(names[0], network), ""
        if cmd == "list":
            show_all = "--all" in opts or "--inactive" in opts
            guests = [g for g in self.guests if g.running or show_all]
            if "--inactive" in opts:
                guests = [g for g in guests if not g.running]
            if "--autostart" in opts:
                guests = [g for g in guests if g.autostart]
            if "--name" in opts:
                return 0, "".join(g.name + "\n" for g in guests) + "\n", ""
            if "--uuid" in opts:
                return 0, "".join(g.uuid + "\n" for g in guests) + "\n", ""
            lines = [" Id   Name           State", "-" * 32]
            for n, g in enumerate(guests, 1):
                state = "running" if g.running else "shut off"
                lines.append(f" {n if g.running else '-'!s:<4} {g.name:<14} {state}")
            return 0, "\n".join(lines) + "\n\n", ""
        if cmd in ("dumpxml", "domstate"):
            names = [o for o in opts if not o.startswith("--")]
            if not names:
                return 1, "", f"error: command '{cmd}' requires <domain> option\n"
            guest = next((g for g in self.guests if names[0] in (g.name, g.uuid)), None)
            if cmd == "dumpxml" and "virsh_dumpxml_fails" in self.faults:
                return 1, "", (
                    f"error: failed to get domain '{names[0]}'\nerror: internal error: client socket is closed\n"
                )
            if guest is None:
                return 1, "", (f"error: failed to get domain '{names[0]}'\n")
            if cmd == "domstate":
                return 0, ("running" if guest.running else "shut off") + "\n\n", ""
            return 0, self._domain_xml(guest, live=guest.running and "--inactive" not in opts), ""
        return 1, "", f"error: unknown command: '{cmd}'\n"

    def _domain_xml(self, guest: Guest, live: bool = True) -> str:
        devs = [
            "    <hostdev mode='subsystem' type='pci' managed='yes'>\n      <driver name='vfio'/>\n"
            f"      <source>\n        {_address_xml(pci)}\n      </source>\n    </hostdev>\n"
            for pci in guest.hostdevs
        ]
        for index, iface in enumerate(guest.interfaces):
            if iface.get("type") == "direct":
                devs.append(
                    "    <interface type='direct'>\n"
                    f"      <source dev='{escape(iface['dev'])}' mode='{escape(iface.get('mode', 'passthrough'))}'/>\n"
                    "      <model type='virtio'/>\n    </interface>\n"
                )
                continue
            net = escape(iface.get("network", ""))
            device = guest.allocated.get(index) if live else None
            mode = self.networks.get(iface.get("network"), {}).get("mode")
            if device and mode == "hostdev":  # the live XML shows the device the network handed out
                devs.append(
                    f"    <interface type='hostdev' managed='yes'>\n      <source network='{net}'>\n"
                    f"        {_address_xml(device)}\n      </source>\n    </interface>\n"
                )
            elif device:
                devs.append(
                    f"    <interface type='direct'>\n      <source network='{net}' dev='{escape(device)}' "
                    f"mode='{escape(mode or 'passthrough')}'/>\n    </interface>\n"
                )
            else:
                devs.append(f"    <interface type='network'>\n      <source network='{net}'/>\n    </interface>\n")
        return (
            "<domain type='kvm'{}>\n  <name>{}</name>\n  <uuid>{}</uuid>\n"
            "  <memory unit='KiB'>4194304</memory>\n  <vcpu placement='static'>2</vcpu>\n"
            "  <os>\n    <type arch='x86_64' machine='pc-q35-6.2'>hvm</type>\n  </os>\n"
            "  <devices>\n    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n{}"
            "    <interface type='network'>\n      <source network='default'/>\n"
            "      <model type='virtio'/>\n    </interface>\n  </devices>\n</domain>\n".format(
                f" id='{self.guests.index(guest) + 1}'" if guest.running else "",
                escape(guest.name),
                guest.uuid,
                "".join(devs),
            )
        )

    def _network_xml(self, name: str, network: dict) -> str:
        """A libvirt network whose pool is the VFs of a PF; active, so the pool is expanded and each
        macvtap member says how many guest interfaces use it."""
        if network["mode"] == "nat":
            return (
                f"<network>\n  <name>{escape(name)}</name>\n  <forward mode='nat'/>\n"
                f"  <bridge name='{network.get('bridge', 'virbr0')}' stp='on' delay='0'/>\n"
                "  <ip address='192.168.122.1' netmask='255.255.255.0'/>\n</network>\n"
            )
        used = self._allocated_devices()
        members = []
        for device in self._pool(network):
            if network["mode"] == "hostdev":
                members.append(f"    {_address_xml(device)}\n")
            else:
                members.append(f"    <interface dev='{device}' connections='{1 if device in used else 0}'/>\n")
        connections = sum(1 for d in self._pool(network) if d in used)
        managed = " managed='yes'" if network["mode"] == "hostdev" else ""
        # the live XML of an active network carries connections; an inactive one is its definition
        head = f"<network connections='{connections}'>" if network.get("active", True) else "<network>"
        extra = ("  " + network["extra"] + "\n") if network.get("extra") else ""
        return (
            f"{head}\n  <name>{escape(name)}</name>\n"
            f"  <uuid>{self._network_uuid(name)}</uuid>\n{extra}"
            f"  <forward mode='{network['mode']}'{managed}>\n    <pf dev='{escape(network['pf'] or '')}'/>\n"
            + "".join(members)
            + "  </forward>\n</network>\n"
        )

    def _prog_modinfo(self, args: list[str]):
        if len(args) != 3 or args[:2] != ["-F", "parm"]:
            return 1, "", "modinfo: simfleet simulates only -F parm <module>\n"
        driver = args[2]
        if driver not in MAX_VFS_DRIVERS:
            return 0, "debug:Debug level (0=none,...,16=all) (int)\n", ""
        line = PARM_LINES[self.profile.max_vfs_type(driver)].format(max=MAX_VFS_DRIVERS[driver])
        return 0, line + "\ndebug:Debug level (0=none,...,16=all) (int)\n", ""

    def _initramfs_image(self) -> str:
        if "dracut" in self.profile.programs:
            return f"/boot/initramfs-{self.running_kernel}.img"
        return f"/boot/initrd.img-{self.running_kernel}"

    def _prog_initramfs(self, args: list[str]):
        """dracut -f <image> <kernel> / update-initramfs -u -k <kernel>: copies /etc/modprobe.d again."""
        if not ("-f" in args or "-u" in args):
            return 1, "", "initramfs: simfleet simulates only -f / -u\n"
        self._snapshot_initramfs()
        self.events.append("initramfs rebuilt: " + " ".join(args))
        return 0, "", ""

    def _prog_lsinitramfs(self, args: list[str]):
        if not args or args[0] != self._initramfs_image():
            return 1, "", f"{args[0] if args else ''}: No such file or directory\n"
        lines = [f"usr/lib/modules/{self.running_kernel}/kernel/drivers/net/ethernet/intel/{d}/{d}.ko.xz"
                 for d in sorted(self.initramfs["modules"])]
        lines += [path.lstrip("/") for path in sorted(self.initramfs["modprobe"])]
        return 0, "".join("/" + line + "\n" for line in lines), ""

    def _prog_editenv(self, args: list[str]):
        if args[:1] != ["-"] or len(args) < 2:
            return 1, "", "grub2-editenv: simfleet simulates only the default environment block (-)\n"
        values = self.grubenv()
        if args[1] == "list":
            return 0, "".join(f"{k}={v}\n" for k, v in values.items()), ""
        if args[1] == "set":
            for assignment in args[2:]:
                key, _, value = assignment.partition("=")
                values[key] = value
            self._write_grubenv(values)
            return 0, "", ""
        return 1, "", f"grub2-editenv: unknown command {args[1]}\n"

    def _prog_systemctl_unit(self, args: list[str]):
        if args == ["daemon-reload"]:
            self.events.append("systemctl daemon-reload")
            return 0, "", ""
        verb, unit = args
        wants = f"/etc/systemd/system/multi-user.target.wants/{unit}"
        if verb == "disable":
            for path in [p for p in self.files if p.endswith("/" + unit) and p.rsplit("/", 2)[-2].endswith(".wants")]:
                self._delete(path)
            return 0, "", f"Removed {wants}.\n"
        self._put(wants, "")
        return 0, "", f"Created symlink {wants}.\n"

    def _prog_mkconfig(self, args: list[str], name: str = "grub-mkconfig"):
        if "update_grub_fails" in self.faults:
            msg = self.faults["update_grub_fails"].get(
                "message", "/usr/sbin/grub-probe: error: failed to get canonical path of `/dev/mapper/root'."
            )
            return 1, "", msg.rstrip("\n") + "\n"
        out_path = None
        if name == "update-grub":
            if args:
                return 1, "", "Usage: update-grub\n"
            out_path = "/boot/grub/grub.cfg"
        else:
            i = 0
            while i < len(args):
                if args[i] in ("-o", "--output") and i + 1 < len(args):
                    out_path = args[i + 1]
                    i += 2
                elif args[i].startswith("--output="):
                    out_path = args[i].split("=", 1)[1]
                    i += 1
                else:
                    return 1, "", f"{name}: unrecognized option '{args[i]}'\n"
        files = self._grub_default_files()
        log = "".join(f"Sourcing file `{f}'\n" for f in files)
        try:
            env = self._sourced_defaults()
        except bootcfg.ShellError as exc:
            return 1, "", log + str(exc) + "\n"
        if self.profile.boot_flavour == "bls":
            # GRUB_ENABLE_BLSCFG=true: grub.cfg only says "blscfg"; the kernel command lines live in
            # /boot/loader/entries/*.conf, which grub2-mkconfig leaves alone (grubby edits them).
            text = "# BLS: the kernel entries are in /boot/loader/entries\nblscfg\n"
        else:
            text = self._render_mkconfig(env)
        log += "Generating grub configuration file ...\n"
        if out_path:
            try:
                parent = self._resolve(posixpath.dirname(out_path))
            except OSError:
                return 1, "", log + f"{name}: cannot open {out_path}.new: No such file or directory\n"
            self._put(posixpath.join(parent, posixpath.basename(out_path)), text)
        log += f"Found linux image: /boot/vmlinuz-{self.profile.kernel}\ndone\n"
        return 0, ("" if out_path else text), log

    def _prog_grubby(self, args: list[str]):
        if "update_grub_fails" in self.faults:
            msg = self.faults["update_grub_fails"].get(
                "message", "grubby fatal error: unable to find a suitable template"
            )
            return 1, "", msg.rstrip("\n") + "\n"
        opts = {}
        for a in args:
            key, _, value = a.partition("=")
            opts[key] = value
        if "--help" in opts:
            flag = "  --no-etc-grub-update      don't update the GRUB_CMDLINE_LINUX variable\n"
            return 0, "Usage: grubby [OPTION...]\n  --update-kernel=kernel-path\n" + (
                flag if self.profile.grubby_etc_update_flag else ""), ""
        if "--no-etc-grub-update" in opts and not self.profile.grubby_etc_update_flag:
            return 1, "", "grubby: bad argument --no-etc-grub-update: unknown option\n"
        if "--default-kernel" in opts:
            entries = self._bls_entries() if self.profile.boot_flavour == "bls" else []
            return 0, f"/boot/vmlinuz-{entries[0][0] if entries else self.profile.kernel}\n", ""
        if "--default-index" in opts:
            return 0, "0\n", ""
        if "--info" in opts:
            cmd = self.generated_cmdline() or ""
            words = cmd.split()
            if words and words[0].startswith("BOOT_IMAGE="):
                words = words[1:]
            return (
                0,
                (
                    'index=0\nkernel="/boot/vmlinuz-{}"\nargs="{}"\nroot="{}"\ninitrd="/boot/initramfs-{}.img"\n'
                    'title="{} ({})"\n'.format(
                        self.profile.kernel,
                        " ".join(w for w in words if not w.startswith("root=")),
                        next((w[5:] for w in words if w.startswith("root=")), ""),
                        self.profile.kernel,
                        self.profile.distributor,
                        self.profile.kernel,
                    )
                ),
                "",
            )
        if "--update-kernel" in opts:
            target = opts["--update-kernel"]
            known = ["/boot/vmlinuz-" + e[0] for e in self._bls_entries()] if self.profile.boot_flavour == "bls" else []
            if target not in ["ALL", "DEFAULT", "/boot/vmlinuz-" + self.profile.kernel, "0"] + known:
                return 1, "", f"grubby: kernel not found: {target}\n"
            add = bootcfg.split_args(opts.get("--args", ""))
            remove = bootcfg.split_args(opts.get("--remove-args", ""))
            self._grubby_edit(add, remove)
            return 0, "", ""
        return 1, "", "grubby: no action specified\n"

    # -- control helpers (tests, CLI) -----------------------------------------------------------

    def add_guest(
        self,
        name: str,
        hostdevs: list[str] | None = None,
        running: bool = True,
        autostart: bool = True,
        interfaces: list[dict] | None = None,
    ) -> None:
        """A libvirt domain. interfaces: {"type": "direct", "dev": "eno49v3", "mode": "passthrough"}
        (macvtap on a VF) or {"type": "network", "network": name} (a VF from a libvirt network)."""
        with self.lock:
            self.guests = [g for g in self.guests if g.name != name]
            guest = Guest(name=name, hostdevs=list(hostdevs or []), running=False, autostart=autostart,
                          interfaces=[dict(i) for i in interfaces or []])
            self.guests.append(guest)
            if running:
                guest.running = True
                for index, iface in enumerate(guest.interfaces):
                    network = self.networks.get(iface.get("network")) if iface.get("type") == "network" else None
                    if network is not None:
                        free = [d for d in self._pool(network) if d not in self._allocated_devices()]
                        if free:
                            guest.allocated[index] = free[0]
            self._touch()

    def add_network(self, name: str, mode: str, pf: str, active: bool = True, autostart: bool = True) -> None:
        """A libvirt network whose pool is the VFs of pf: mode hostdev (PCI passthrough) or passthrough
        (macvtap), defined by an administrator (not the console)."""
        with self.lock:
            self.networks[name] = {"mode": mode, "pf": pf, "active": active, "autostart": autostart,
                                   "persistent": True}
            self._touch()

    def write_file(self, path: str, text: str, mode: int | None = None) -> None:
        """Put a file on the host as an administrator would (tests, scenarios)."""
        with self.lock:
            self._put(path, text)
            if mode is not None:
                self.modes[path] = mode
            self._touch()

    def numvfs_lock(self, path: str) -> threading.Lock | None:
        """The device lock of the PF whose sriov_numvfs path names, else None."""
        if not path.endswith("/sriov_numvfs"):
            return None
        with self.lock:
            try:
                entry = self._entry(self._resolve(path))
            except OSError:
                return None
            if not entry or entry[0] != "f" or not isinstance(entry[2], tuple) or entry[2][0] != "numvfs":
                return None
            return self.device_locks.setdefault(entry[2][1], threading.Lock())

    def wait_until_write_may_proceed(self, path: str, data: str, stop_event) -> None:
        """The kernel side of a sriov_numvfs write that waits (holding the device lock): the
        sysfs_write_hangs fault (a driver that takes its time), or vfio_release_blocks when the
        write removes a VF a running guest holds through vfio-pci. Clearing the fault is QEMU
        letting go: the VF is unplugged from the guest."""
        started = time.monotonic()
        self.pending_writes[path] = data.strip()
        waited_for_vfio = False
        while True:
            with self.lock:
                hang = self.faults.get("sysfs_write_hangs")
                if hang is not None and time.monotonic() - started < float(hang.get("seconds", 1e9)):
                    pass
                elif "vfio_release_blocks" in self.faults and self._write_removes_held(path, data):
                    waited_for_vfio = True
                else:
                    if waited_for_vfio:
                        self._release_vfs_for(path, data)
                    return
            if stop_event is not None and stop_event.is_set():
                raise OSError(errno.EINTR, "simfleet is stopping", path)
            time.sleep(0.02)

    def _removed_by(self, path: str, data: str) -> tuple[Nic | None, list[Vf]]:
        entry = self._entry(self._resolve(path))
        nic = self._nic_by_pci(entry[2][1])
        try:
            value = int(data.strip(), 0)
        except ValueError:
            return nic, []
        # only a write of 0 removes VFs (non-zero to another non-zero count is EBUSY)
        return nic, (list(nic.vfs) if value == 0 else [])

    def _write_removes_held(self, path: str, data: str) -> bool:
        _nic, removed = self._removed_by(path, data)
        held = self._held_vfs()
        return any(vf.pci in held for vf in removed)

    def _release_vfs_for(self, path: str, data: str) -> None:
        """vfio-pci got the devices back: they were hot-unplugged from the guests that held them."""
        _nic, removed = self._removed_by(path, data)
        gone = {vf.pci for vf in removed}
        for guest in self.guests:
            guest.allocated = {i: d for i, d in guest.allocated.items() if d not in gone}
            lost = [pci for pci in guest.hostdevs if pci in gone]
            if lost and guest.running:
                guest.hostdevs = [pci for pci in guest.hostdevs if pci not in gone]
                guest.note = "VF {} unplugged: QEMU released it to the host".format(", ".join(lost))
                self.events.append(f"guest {guest.name}: {guest.note}")

    def remove_guest(self, name: str) -> None:
        with self.lock:
            self.guests = [g for g in self.guests if g.name != name]
            self._touch()

    def system(self, privileged: bool = True, agent_source: bytes | None = None) -> SimSystem:
        return SimSystem(self, privileged=privileged, agent_source=agent_source)

    def acquire_run(self) -> None:
        with self.lock:
            self._active += 1

    def release_run(self) -> None:
        with self.lock:
            self._active -= 1
            if self._active <= 0:
                self._active = 0
                self._dyn = None  # keep idle hosts small

    def _next_boot_counts(self) -> tuple[dict[str, int], list[str]]:
        """The VF count each PF would get at the next boot (the boot writes replayed: a second
        non-zero write of another count gets EBUSY), and the drivers that would not load."""
        counts: dict[str, int] = {}
        unloaded = []
        for pci, count, _source, how in self._boot_writes():
            if how.startswith("module_failed:"):
                unloaded.append(how.split(":", 1)[1])
                continue
            current = counts.get(pci, 0)
            if how in ("module", "reset") or current in (0, count):
                counts[pci] = count
        return counts, unloaded

    def wait_until(self, predicate, timeout: float = 30.0, interval: float = 0.05) -> bool:
        """Poll predicate(true_state) (from a thread other than a fleet's loop)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.true_state()):
                return True
            time.sleep(interval)
        return False

    def true_state(self) -> dict:
        with self.lock:
            now = time.monotonic()
            try:
                effective = self._sourced_defaults()
                grub_error = None
            except bootcfg.ShellError as exc:
                effective, grub_error = {}, str(exc)
            persisted, unloaded = self._next_boot_counts()
            held = self._held_vfs()
            return {
                "name": self.name,
                "profile": self.profile.name,
                "state": self.state,
                "reachable": self.state == "up" and self.listening,
                "boot_id": self.boot_id,
                "boot_count": self.boot_count,
                "kernel": self.running_kernel,
                "kernels": [e[0] for e in self._bls_entries()] if self.profile.boot_flavour == "bls" else [],
                "cpu_vendor": self.profile.cpu_vendor,
                "cmdline": self.cmdline,
                "generated_cmdline": self.generated_cmdline(),
                "grub_default_text": self.files.get("/etc/default/grub"),
                "grub_effective": {k: v for k, v in effective.items() if k.startswith("GRUB_CMDLINE")},
                "grub_error": grub_error,
                "iommu_active": self.iommu_active,
                "numvfs": {n.pci: n.numvfs for n in self.nics if n.spec.sriov},
                "totalvfs": {n.pci: self._totalvfs(n) for n in self.nics if n.spec.sriov},
                "vfs": {
                    n.pci: [
                        {
                            "index": v.index,
                            "pci": v.pci,
                            "netdev": v.netdev,
                            "mac": v.mac,
                            "netdev_present": now >= v.ready_at and v.pci not in held,
                            "held_by": held.get(v.pci),
                        }
                        for v in n.vfs
                    ]
                    for n in self.nics
                    if n.spec.sriov
                },
                "persisted": persisted,
                "drivers_failing_at_boot": unloaded,
                "nics": {n.name: n.pci for n in self.nics if n.has_netdev},  # the interfaces the host has now
                "nics_without_driver": sorted(n.pci for n in self.nics if n.driver is None),
                "guests": [
                    {
                        "name": g.name,
                        "running": g.running,
                        "autostart": g.autostart,
                        "hostdevs": list(g.hostdevs),
                        "interfaces": [dict(i) for i in g.interfaces],
                        "allocated": dict(g.allocated),
                        "note": g.note,
                    }
                    for g in self.guests
                ],
                "pending_writes": dict(self.pending_writes),
                "grubenv": self.grubenv(),
                "kernel_cmdline_file": self.files.get("/etc/kernel/cmdline"),
                "faults": {k: dict(v) for k, v in self.faults.items()},
                "reboots_requested": self.reboots_requested,
                "files": sorted(p for p in self.files if p.startswith("/etc/")),
                **self.vf_truth(),
            }


def _address_xml(pci: str) -> str:
    dom, bus, devfn = pci.split(":")
    dev, fn = devfn.split(".")
    return f"<address type='pci' domain='0x{dom}' bus='0x{bus}' slot='0x{dev}' function='0x{fn}'/>"


def reboot_intent(argv: list[str]) -> bool:
    """Does this command line reboot the machine (now or later)?"""
    if not argv:
        return False
    name = posixpath.basename(argv[0])
    args = argv[1:]
    if name == "reboot":
        return True
    if name == "shutdown":
        return "-r" in args or "--reboot" in args
    if name == "systemctl":
        return "reboot" in args
    if name == "systemd-run":
        rest = list(args)
        while rest and rest[0].startswith("-"):
            rest.pop(0)
        return reboot_intent(rest)
    if name in ("sh", "bash") and len(args) >= 2 and args[0] == "-c":
        return bool(re.search(r"(^|[;&|\s])(reboot|shutdown\s+-r|systemctl\s+reboot)\b", args[1]))
    return False


class _Held:
    def __init__(self, lock):
        self._lock = lock

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._lock.release()
        return False


class SimSystem:
    """The agent's System seam over a SimHost (docs/architecture.md). One per agent run.

    privileged=False plays a non-root login without sudo: reads work, writes fail with EACCES.

    sriov_numvfs behaves as on Linux >= 5.15: a write holds the PF's device lock while the driver
    works, and a read waits for that lock (PCI/IOV "Serialize sysfs sriov_numvfs reads vs writes").
    write_sysfs/read_sysfs give up after their timeout like the real System's child process does;
    the write itself carries on in a thread (the simulated kernel) until what it waits for is gone.
    """

    def __init__(self, host: SimHost, privileged: bool = True, stop_event: threading.Event | None = None,
                 agent_source: bytes | None = None, env_path: str | None = SUDO_SECURE_PATH):
        self.host = host
        self.privileged = privileged
        self.stop_event = stop_event
        self._agent_source = agent_source
        # the PATH of the run's environment: sudo's secure_path over SSH, a unit's Environment=PATH,
        # None for a udev RUN program (udev passes only the device's properties)
        self.env_path = env_path

    def ensure_path(self, default):
        if not self.env_path:
            self.env_path = default

    def agent_source(self):
        """The agent bytes this run executes (what the console sent), for the copy udev runs."""
        return self._agent_source

    @property
    def write_timeout(self) -> float:
        hang = self.host.faults.get("sysfs_write_hangs") or {}
        return float(hang.get("write_timeout") or self.host.sysfs_write_timeout or 40.0)

    @property
    def read_timeout(self) -> float:
        return float(self.host.sysfs_read_timeout or 5.0)

    def read_text(self, path):
        lock = self.host.numvfs_lock(path)
        if lock is not None:  # an unbounded read waits for the device lock, as the kernel does
            while not lock.acquire(timeout=0.05):
                if self.stop_event is not None and self.stop_event.is_set():
                    raise OSError(errno.EINTR, "simfleet is stopping", path)
            lock.release()
        with self.host.lock:
            return self.host.fs_read(path)

    def read_sysfs(self, path, timeout):
        lock = self.host.numvfs_lock(path)
        if lock is not None:
            if not lock.acquire(timeout=max(0.0, timeout)):
                raise OSError(errno.ETIMEDOUT, f"the kernel did not answer in {timeout:.1f} s", path)
            lock.release()
        with self.host.lock:
            return self.host.fs_read(path)

    def write_text(self, path, data):
        self.write_sysfs(path, data, self.write_timeout)

    def write_sysfs(self, path, data, timeout):
        lock = self.host.numvfs_lock(path)
        if lock is None:
            with self.host.lock:
                return self.host.fs_write(path, data, self.privileged)
        eagain = self.host.faults.get("sriov_eagain")
        if eagain is not None and self.privileged:
            with self.host.lock:
                left = int(eagain.get("times", 3))
                if left > 0:
                    eagain["times"] = left - 1
                    self.host.events.append(f"sriov_numvfs {path}: EAGAIN (other operation is pending)")
                    raise OSError(errno.EAGAIN, "Resource temporarily unavailable", path)
        done = threading.Event()
        outcome: dict = {}

        def kernel_write():
            with lock:
                try:
                    self.host.wait_until_write_may_proceed(path, data, self.stop_event)
                    with self.host.lock:
                        self.host.fs_write(path, data, self.privileged)
                except OSError as exc:
                    outcome["error"] = exc
                finally:
                    self.host.pending_writes.pop(path, None)
                    done.set()

        worker = threading.Thread(target=kernel_write, name="simfleet-sysfs-write", daemon=True)
        worker.start()
        if not done.wait(max(0.0, timeout)):
            raise OSError(errno.ETIMEDOUT, f"the kernel did not answer in {timeout:.1f} s", path)
        if "error" in outcome:
            raise outcome["error"]

    def ssh_connection(self):
        return self.host.ssh_connection()

    def is_executable(self, path):
        with self.host.lock:
            return bool(self.host.file_mode(path) and self.host.file_mode(path) & 0o111)

    def atomic_write(self, path, data, mode=None):
        with self.host.lock:
            self.host.fs_atomic_write(path, data, self.privileged, mode)

    def lock(self, name, timeout):
        """The host-wide agent lock (one per host: simfleet runs many agents in one process), or
        another named flock (the per-VF ones)."""
        if name == "sriov-console.lock":
            held = self.host.agent_lock
        else:
            with self.host.lock:
                held = self.host.named_locks.setdefault(name, threading.Lock())
        if not held.acquire(timeout=timeout):
            raise OSError(errno.EAGAIN, "held by another run", name)
        return _Held(held)

    def exists(self, path):
        with self.host.lock:
            try:
                self.host._resolve(path)
                return True
            except OSError:
                return False

    def is_dir(self, path):
        with self.host.lock:
            try:
                return self.host._entry(self.host._resolve(path))[0] == "d"
            except OSError:
                return False

    def is_link(self, path):
        with self.host.lock:
            try:
                return self.host._entry(self.host._resolve(path, follow_last=False))[0] == "l"
            except OSError:
                return False

    def list_dir(self, path):
        with self.host.lock:
            real = self.host._resolve(path)
            if self.host._entry(real)[0] != "d":
                raise _err(errno.ENOTDIR, path)
            return self.host._list(real)

    def read_link(self, path):
        with self.host.lock:
            entry = self.host._entry(self.host._resolve(path, follow_last=False))
            if entry[0] != "l":
                raise _err(errno.EINVAL, path)
            return entry[1]

    def remove(self, path):
        with self.host.lock:
            self.host.fs_remove(path, self.privileged)

    def make_dirs(self, path):
        with self.host.lock:
            self.host.fs_make_dirs(path, self.privileged)

    def remove_dir(self, path):
        with self.host.lock:
            self.host.fs_remove_dir(path, self.privileged)

    def which(self, name):
        # without PATH, shutil.which and execvp search the C library's default, /bin:/usr/bin
        return self.host.which(name, self.env_path or NO_PATH_DEFAULT)

    def run(self, argv, timeout):
        if argv and self.which(argv[0]) is None:
            return 127, "", f"{argv[0]}: No such file or directory"
        with self.host.lock:
            return self.host.run_program(list(argv), self.privileged)

    def spawn_detached(self, argv):
        with self.host.lock:
            self.host.spawn(list(argv), self.privileged)

    def sleep(self, seconds):
        if self.stop_event is not None:
            if self.stop_event.wait(seconds):
                raise RuntimeError("simfleet is stopping")
        else:
            time.sleep(seconds)

    def monotonic(self):
        return time.monotonic()
