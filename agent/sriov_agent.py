#!/usr/bin/env python3
"""SR-IOV Console hypervisor agent.

One file, standard library only, Python 3.6 or newer. See docs/architecture.md for the contract:
the controller sends this source and a JSON request on stdin to a constant bootstrap command,
which execs this file and calls remote_main(request_bytes). All host access goes through a
System object so that simfleet can run these exact bytes against a simulated host.

CLI for operators and tests:
    python3 sriov_agent.py [--root DIR] <operation> [JSON-args]

Operations: inventory, set_vfs, kernel_args, reboot.

Keep this file valid Python 3.6: no f-string "=" specifier, no walrus, no dataclasses,
no subprocess capture_output=/text=, no str.removeprefix.
"""

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import traceback
import xml.etree.ElementTree as ElementTree

AGENT_VERSION = "1.0.0"

# ---------------------------------------------------------------------------------------------
# Constants (immutable: this module may be exec'd many times concurrently in one process)
# ---------------------------------------------------------------------------------------------

UDEV_RULES_PATH = "/etc/udev/rules.d/70-sriov-console.rules"
MODPROBE_CONF_PATH = "/etc/modprobe.d/sriov-console.conf"
MANAGED_MARKER = "Managed by SR-IOV Console"
UDEV_HEADER = (
    "# Managed by SR-IOV Console. Do not edit: this file is rewritten by the console.\n"
    "# One line per physical function (keyed by PCI address): its VF count, restored at boot.\n"
)
MODPROBE_HEADER = (
    "# Managed by SR-IOV Console. Do not edit: this file is rewritten by the console.\n"
    "# max_vfs per port of the driver, in PCI address order (kernels older than 3.8).\n"
)
UDEV_LINE_FORMAT = 'ACTION=="add", SUBSYSTEM=="net", KERNELS=="{pci}", ATTR{{device/sriov_numvfs}}="{count}"'
UDEV_LINE_RE = re.compile(
    r'^ACTION=="add", SUBSYSTEM=="net", KERNELS=="([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])", '
    r'ATTR\{device/sriov_numvfs\}="([0-9]+)"$'
)
MODPROBE_LINE_RE = re.compile(r"^options[ \t]+([A-Za-z0-9_]+)[ \t]+max_vfs=([0-9]+(?:,[0-9]+)*)[ \t]*$")

# Drivers whose max_vfs module parameter creates VFs on kernels older than 3.8, with the
# maximum VF count per port used when sriov_totalvfs is absent.
LEGACY_MAX_VFS = {"igb": 7, "ixgbe": 63}

GRUB_DEFAULT = "/etc/default/grub"
GRUB_DIR = "/etc/default/grub.d"
GRUB_VAR = "GRUB_CMDLINE_LINUX_DEFAULT"
BACKUP_SUFFIX = ".sriov-console.bak"
EFI_DIR_FOR_ID = {"rhel": "redhat", "centos": "centos", "rocky": "rocky", "almalinux": "almalinux",
                  "fedora": "fedora", "ol": "redhat", "opensuse-leap": "opensuse", "sles": "sles"}

IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
PCI_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
KARG_RE = re.compile(r"^[A-Za-z0-9_.-]+(=[A-Za-z0-9_.,:/+-]+)?$")
ASSIGN_RE = re.compile(r"^[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
VALUE_RE = re.compile(r"""^("(?:[^"\\]|\\.)*"|'[^']*'|[^\s"'#;`$\\]*)(.*)$""")
VAR_REF_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")

MAX_REQUEST_BYTES = 1024 * 1024
# Every limit of the agent must fit inside the controller's operation timeout (120 s by default):
# set_vfs at worst writes twice (reset to 0, then N), waits for the VFs and may write once more to
# restore the previous count: 2 x SYSFS_WRITE_TIMEOUT + MAX_WAIT_SECONDS + margin < 120.
SYSFS_WRITE_TIMEOUT = 45.0
DEFAULT_WAIT_SECONDS = 10.0
MAX_WAIT_SECONDS = 20.0
MAX_WAIT_SECONDS_ARG = 300.0  # accepted for compatibility; waits are capped at MAX_WAIT_SECONDS
TOOL_TIMEOUT = 90
QUERY_TIMEOUT = 30
LOCK_NAME = "sriov-console.lock"
LOCK_TIMEOUT = 30.0

# Kernel arguments the agent never adds or removes: they decide whether the host boots at all.
PROTECTED_KARGS = ("root", "rootflags", "rootfstype", "ro", "rw", "init", "initrd", "BOOT_IMAGE", "resume",
                   "rd.lvm.lv", "rd.luks.uuid", "rd.md.uuid", "rd.dm.uuid", "rd.break", "systemd.unit",
                   "crashkernel")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_REQUEST = 2

OPERATIONS = ("inventory", "set_vfs", "kernel_args", "reboot")
ARG_KEYS = {
    "inventory": (),
    "set_vfs": ("pf", "pci_address", "count", "persist", "take_over", "allow_guest_impact", "force",
                "wait_seconds"),
    "kernel_args": ("add", "remove", "regenerate"),
    "reboot": ("refuse_if_guests", "expected_boot_id"),
}


class AgentError(Exception):
    """A failure with a stable code, a message for people and structured details."""

    def __init__(self, code, message, details=None):
        Exception.__init__(self, message)
        self.code = code
        self.message = message
        self.details = details or {}


# ---------------------------------------------------------------------------------------------
# The System seam: the only code that touches the host
# ---------------------------------------------------------------------------------------------


class System(object):
    """Real host access. Every path is an absolute host path, prefixed with root."""

    # A sysfs write can hang (i40e: "other operation is pending"); give up after this long.
    write_timeout = SYSFS_WRITE_TIMEOUT

    def __init__(self, root="/"):
        self.root = os.path.abspath(root or "/")

    def path(self, path):
        if not path.startswith("/"):
            raise ValueError("host paths must be absolute: %r" % (path,))
        if self.root == "/":
            return path
        return self.root + path

    def read_text(self, path):
        # newline="": no newline translation, so that CRLF files are rewritten byte for byte
        with open(self.path(path), "r", encoding="utf-8", errors="surrogateescape", newline="") as f:
            return f.read()

    def write_text(self, path, data):
        real = self.path(path)
        outcome = {}

        def do_write():
            try:
                fd = os.open(real, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    os.write(fd, data.encode("utf-8", "surrogateescape"))
                finally:
                    os.close(fd)
            except OSError as exc:
                outcome["error"] = exc
            outcome["done"] = True

        worker = threading.Thread(target=do_write, name="sriov-agent-write")
        worker.daemon = True
        worker.start()
        worker.join(self.write_timeout)
        if "done" not in outcome:
            raise OSError(errno.ETIMEDOUT, "write did not complete in %d s" % self.write_timeout, path)
        if "error" in outcome:
            raise outcome["error"]

    def atomic_write(self, path, data, mode=None):
        real = self.path(path)
        directory = os.path.dirname(real)
        if mode is None:
            # Keep the permissions of the file being replaced (e.g. a 0600 /etc/default/grub).
            try:
                mode = os.stat(real).st_mode & 0o7777
            except OSError:
                mode = 0o644
        tmp = os.path.join(directory, ".%s.sriov-console.%d.%d.tmp" % (
            os.path.basename(real), os.getpid(), threading.get_ident()))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            try:
                os.write(fd, data.encode("utf-8", "surrogateescape"))
                os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, real)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        try:
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass

    def exists(self, path):
        return os.path.exists(self.path(path))

    def is_dir(self, path):
        return os.path.isdir(self.path(path))

    def is_link(self, path):
        return os.path.islink(self.path(path))

    def list_dir(self, path):
        return sorted(os.listdir(self.path(path)))

    def read_link(self, path):
        return os.readlink(self.path(path))

    def remove(self, path):
        os.remove(self.path(path))

    def make_dirs(self, path):
        os.makedirs(self.path(path), exist_ok=True)

    def which(self, name):
        return shutil.which(name)

    def run(self, argv, timeout):
        env = dict(os.environ)
        env["LC_ALL"] = "C"
        # bytes, not str: Python 3.6 under the C locale cannot encode a non-ASCII guest name.
        argv_bytes = [a if isinstance(a, bytes) else a.encode("utf-8", "surrogateescape") for a in argv]
        try:
            proc = subprocess.Popen(argv_bytes, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env, close_fds=True, start_new_session=True)
        except OSError as exc:
            return 127, "", "%s: %s" % (argv[0], exc.strerror or exc)
        try:
            out, err = proc.communicate(timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            # The program's whole process group (grub-mkconfig runs many children).
            try:
                os.killpg(proc.pid, 9)
            except OSError:
                proc.kill()
            try:
                out, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                out, err = b"", b""
            rc = None
        return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    def _lock_dir(self):
        for directory in ("/run", "/tmp"):
            if os.path.isdir(self.path(directory)):
                return directory
        os.makedirs(self.path("/tmp"), exist_ok=True)  # a bare --root tree
        return "/tmp"

    def lock(self, name, timeout):
        """Exclusive host-wide lock (flock on /run/<name>, /tmp/<name> when /run is missing);
        raises OSError(EAGAIN) when another holder keeps it for timeout seconds."""
        import fcntl

        path = self.path(self._lock_dir() + "/" + name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise OSError(errno.EAGAIN, "held by another run", path) from None
                time.sleep(0.2)
        return _FdLock(fd)

    def spawn_detached(self, argv):
        subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True)

    def sleep(self, seconds):
        time.sleep(seconds)

    def monotonic(self):
        return time.monotonic()


class _FdLock(object):
    def __init__(self, fd):
        self.fd = fd

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.fd is not None:
            try:
                os.close(self.fd)  # releases the flock
            except OSError:
                pass
        return False


# ---------------------------------------------------------------------------------------------
# Small helpers over a System
# ---------------------------------------------------------------------------------------------


def _read(system, path, default=None):
    try:
        return system.read_text(path).strip()
    except (OSError, UnicodeError):
        return default


def _read_int(system, path):
    value = _read(system, path)
    if value is None:
        return None
    try:
        return int(value, 0) if value.startswith("0x") else int(value)
    except ValueError:
        return None


def _link_base(system, path):
    try:
        return os.path.basename(system.read_link(path).rstrip("/")) or None
    except OSError:
        return None


def _list(system, path):
    try:
        return list(system.list_dir(path))
    except OSError:
        return []


def _hex_id(system, path):
    value = _read(system, path)
    if not value:
        return None
    value = value.lower()
    if value.startswith("0x"):
        value = value[2:]
    return value.zfill(4)


def _kernel_release(system):
    return _read(system, "/proc/sys/kernel/osrelease")


def _is_legacy_kernel(release):
    """Kernels older than 3.8 cannot change VFs at run time (no sriov_numvfs)."""
    match = re.match(r"^(\d+)\.(\d+)", release or "")
    if not match:
        return False
    return (int(match.group(1)), int(match.group(2))) < (3, 8)


def _errno_name(number):
    return errno.errorcode.get(number, str(number)) if number is not None else None


def _readonly_error(exc, path, what):
    if exc.errno == errno.EACCES:
        return AgentError("permission_denied", "Cannot write %s (%s): %s. The agent must run as root." % (
            path, what, exc.strerror or exc), {"path": path, "errno": _errno_name(exc.errno)})
    if exc.errno in (errno.EROFS, errno.EPERM):
        return AgentError("readonly_fs", "Cannot write %s (%s): %s. Is /etc mounted read-only?" % (
            path, what, exc.strerror or exc), {"path": path, "errno": _errno_name(exc.errno)})
    return AgentError("write_failed", "Cannot write %s (%s): %s" % (path, what, exc.strerror or exc),
                      {"path": path, "errno": _errno_name(exc.errno)})


def _write_file(system, path, data, what, mode=0o644):
    directory = os.path.dirname(path)
    try:
        if not system.is_dir(directory):
            system.make_dirs(directory)
        system.atomic_write(path, data, mode)
    except OSError as exc:
        raise _readonly_error(exc, path, what) from None


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _bad(message, **details):
    return AgentError("bad_request", message, details)


def _valid_ifname(value, field):
    if not isinstance(value, str) or not IFNAME_RE.match(value) or value in (".", ".."):
        raise _bad("%s must be an interface name (1-15 characters from A-Z a-z 0-9 _ . : -)" % field,
                   field=field, value=value if isinstance(value, str) else repr(value))
    return value


def _valid_pci(value, field):
    if not isinstance(value, str) or not PCI_RE.match(value):
        raise _bad("%s must be a PCI address like 0000:04:00.0 (lower-case hex)" % field,
                   field=field, value=value if isinstance(value, str) else repr(value))
    return value


def _valid_count(value, field):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 65535:
        raise _bad("%s must be a non-negative integer" % field, field=field, value=repr(value))
    return value


def _valid_bool(value, field, default):
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad("%s must be true or false" % field, field=field, value=repr(value))
    return value


def _valid_kargs(value, field):
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad("%s must be a list of kernel arguments" % field, field=field)
    out = []
    for item in value:
        if not isinstance(item, str) or not KARG_RE.match(item) or len(item) > 512:
            raise _bad("%s contains an unsafe kernel argument: %r (allowed: name or name=value with "
                       "A-Z a-z 0-9 _ . - and , : / + in the value)" % (field, item),
                       field=field, value=item if isinstance(item, str) else repr(item))
        if item not in out:
            out.append(item)
    return out


# ---------------------------------------------------------------------------------------------
# Persistence files (managed udev rule; modprobe.d for kernels < 3.8)
# ---------------------------------------------------------------------------------------------


def _read_udev(system):
    """-> (exists, {pci: count}, [foreign lines kept verbatim])"""
    try:
        text = system.read_text(UDEV_RULES_PATH)
    except OSError:
        return False, {}, []
    counts = {}
    others = []
    for line in text.splitlines():
        stripped = line.strip()
        match = UDEV_LINE_RE.match(stripped)
        if match:
            counts[match.group(1)] = int(match.group(2))
        elif stripped and not (stripped.startswith("#") and (
                MANAGED_MARKER in stripped or stripped in [h.strip() for h in UDEV_HEADER.splitlines()])):
            others.append(line)
    return True, counts, others


def _render_udev(counts, others):
    lines = [UDEV_HEADER.rstrip("\n")]
    lines.extend(others)
    for pci in sorted(counts):
        lines.append(UDEV_LINE_FORMAT.format(pci=pci, count=counts[pci]))
    return "\n".join(lines) + "\n"


def _read_modprobe(system):
    """-> (exists, {driver: [n1, n2, ...]}, [foreign lines])"""
    try:
        text = system.read_text(MODPROBE_CONF_PATH)
    except OSError:
        return False, {}, []
    drivers = {}
    others = []
    for line in text.splitlines():
        stripped = line.strip()
        match = MODPROBE_LINE_RE.match(stripped)
        if match:
            drivers[match.group(1)] = [int(v) for v in match.group(2).split(",")]
        elif stripped and not (stripped.startswith("#") and (
                MANAGED_MARKER in stripped or stripped in [h.strip() for h in MODPROBE_HEADER.splitlines()])):
            others.append(line)
    return True, drivers, others


def _render_modprobe(drivers, others):
    lines = [MODPROBE_HEADER.rstrip("\n")]
    lines.extend(others)
    for driver in sorted(drivers):
        lines.append("options %s max_vfs=%s" % (driver, ",".join(str(v) for v in drivers[driver])))
    return "\n".join(lines) + "\n"


def _legacy_ports(system, driver):
    """PCI addresses of the physical ports bound to driver, in PCI address order."""
    ports = set()
    for name in _list(system, "/sys/class/net"):
        dev = "/sys/class/net/%s/device" % name
        if not system.exists(dev) or system.exists(dev + "/physfn"):
            continue
        if _link_base(system, dev + "/driver") == driver:
            pci = _link_base(system, dev)
            if pci:
                ports.add(pci)
    return sorted(ports)


def _managed_counts(system, legacy):
    """{pci: persisted count} from the managed persistence file for this kernel."""
    if not legacy:
        return _read_udev(system)[1]
    counts = {}
    for driver, values in _read_modprobe(system)[1].items():
        for pci, value in zip(_legacy_ports(system, driver), values):  # noqa: B905 (3.6)
            counts[pci] = value
    return counts


# ---------------------------------------------------------------------------------------------
# Guests (virsh)
# ---------------------------------------------------------------------------------------------


class _GuestsUnknown(Exception):
    """Internal: which PCI devices running guests hold cannot be established (fail closed)."""


# VF drivers that mean "handed to a guest (or about to be)": never treat such a VF as free.
PASSTHROUGH_DRIVERS = ("vfio-pci", "pci-stub")


def _qemu_processes(system):
    """PIDs whose /proc/<pid>/comm starts with qemu (qemu-kvm, qemu-system-x86_64, ...)."""
    found = []
    for name in _list(system, "/proc"):
        if not name.isdigit():
            continue
        comm = _read(system, "/proc/%s/comm" % name)
        if comm and comm.startswith("qemu"):
            found.append(name)
    return found


def _passthrough_vfs(system):
    """PCI addresses of VFs (of any PF) bound to vfio-pci or pci-stub."""
    found = []
    for name in _list(system, "/sys/class/net"):
        dev = "/sys/class/net/%s/device" % name
        for entry in _list(system, dev):
            if re.match(r"^virtfn\d+$", entry) and _link_base(system, dev + "/" + entry + "/driver") in \
                    PASSTHROUGH_DRIVERS:
                pci = _link_base(system, dev + "/" + entry)
                if pci and pci not in found:
                    found.append(pci)
    return sorted(found)


def _guests(system):
    """-> {"available": bool, "guests": [{"name", "uuid", "hostdev_pci": [...]}] or None, "error": str}

    Fails closed: guests is None (unknown) whenever the agent cannot establish which PCI devices
    running guests hold -- virsh failed, a domain's XML could not be read or parsed, or virsh is
    missing while qemu processes run or VFs are bound to a passthrough driver."""
    if not system.which("virsh"):
        qemu = _qemu_processes(system)
        bound = _passthrough_vfs(system)
        if qemu or bound:
            why = []
            if qemu:
                why.append("%d qemu process%s running (pid %s)" % (
                    len(qemu), "" if len(qemu) == 1 else "es", ", ".join(qemu[:10])))
            if bound:
                why.append("VFs bound to %s: %s" % ("/".join(PASSTHROUGH_DRIVERS), ", ".join(bound[:10])))
            return {"available": False, "guests": None,
                    "error": "virsh is not installed, but guests may be running (%s)" % "; ".join(why)}
        return {"available": False, "guests": [], "error": None}
    rc, out, err = system.run(["virsh", "list", "--uuid"], QUERY_TIMEOUT)
    if rc != 0:
        return {"available": True, "guests": None,
                "error": "virsh list failed (%s): %s" % (rc, (err or out).strip()[-500:])}
    guests = []
    try:
        for ident in out.splitlines():
            ident = ident.strip()
            if not ident:
                continue
            name, hostdevs = _guest_hostdevs(system, ident)
            guests.append({"name": name, "uuid": ident, "hostdev_pci": hostdevs})
    except _GuestsUnknown as exc:
        return {"available": True, "guests": None, "error": str(exc)}
    return {"available": True, "guests": guests, "error": None}


def _guest_hostdevs(system, ident):
    """-> (name, [PCI addresses of the domain's PCI host devices]); raises _GuestsUnknown."""
    rc, out, err = system.run(["virsh", "dumpxml", "--domain", ident], QUERY_TIMEOUT)
    if rc != 0:
        raise _GuestsUnknown("virsh dumpxml --domain %s failed (%s): %s" % (
            ident, rc, (err or out).strip()[-500:]))
    try:
        root = ElementTree.fromstring(out)
    except ElementTree.ParseError as exc:
        raise _GuestsUnknown("the XML of domain %s does not parse: %s" % (ident, exc)) from None
    name = (root.findtext("name") or "").strip() or ident
    found = []
    candidates = list(root.iter("hostdev")) + [
        el for el in root.iter("interface") if el.get("type") == "hostdev"]
    for element in candidates:
        if element.tag == "hostdev" and element.get("type") not in (None, "pci"):
            continue  # USB / SCSI host devices hold no PCI function
        source = element.find("source")
        address = source.find("address") if source is not None else None
        if address is None or address.get("type") not in (None, "pci"):
            raise _GuestsUnknown("domain %s has a PCI host device without a readable PCI address" % name)
        try:
            pci = "%04x:%02x:%02x.%x" % (int(address.get("domain", "0"), 0), int(address.get("bus"), 0),
                                        int(address.get("slot"), 0), int(address.get("function"), 0))
        except (TypeError, ValueError):
            raise _GuestsUnknown("domain %s has a PCI host device with an unparseable address %r" % (
                name, dict(address.attrib))) from None
        if pci not in found:
            found.append(pci)
    return name, found


def _usage_by_pci(guests):
    usage = {}
    for guest in guests or []:
        for pci in guest["hostdev_pci"]:
            usage.setdefault(pci, []).append(guest["name"])
    return usage


# ---------------------------------------------------------------------------------------------
# Inventory
# ---------------------------------------------------------------------------------------------


def _os_release(system):
    text = None
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        text = _read(system, path)
        if text is not None:
            break
    values = {}
    for line in (text or "").splitlines():
        match = re.match(r"^([A-Z_]+)=(.*)$", line.strip())
        if match:
            values[match.group(1)] = _shell_value(match.group(2).strip(), {})
    return {"id": values.get("ID"), "version_id": values.get("VERSION_ID"),
            "pretty_name": values.get("PRETTY_NAME")}


def _cpu_vendor(system):
    text = _read(system, "/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.startswith("vendor_id"):
            raw = line.partition(":")[2].strip()
            return {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(raw, raw.lower() or None)
    return None


def _iommu(system):
    classes = _list(system, "/sys/class/iommu")
    groups = _list(system, "/sys/kernel/iommu_groups")
    return {"active": bool(classes or groups), "devices": classes, "groups": len(groups)}


def _grub_tools(system):
    tools = ("update-grub", "grub2-mkconfig", "grub-mkconfig", "grubby")
    return [tool for tool in tools if system.which(tool)]


def _bls_active(system, grub):
    """Boot Loader Specification entries are what GRUB boots (RHEL 8+, Fedora): grub2-mkconfig does
    not change their options, grubby does."""
    if (grub["values"].get("GRUB_ENABLE_BLSCFG") or "").strip().lower() == "true":
        return True
    return any(name.endswith(".conf") for name in _list(system, "/boot/loader/entries"))


def _choose_grub_tool(system, grub):
    tools = _grub_tools(system)
    if "grubby" in tools and _bls_active(system, grub):
        return "grubby"
    return tools[0] if tools else None


def _shell_control_flow(text):
    """The first logical line of text that is not blank, a comment or a plain assignment (if, case,
    for, while, functions, sourcing ...), or None."""
    logical = []
    buf = ""
    quote = None
    i = 0
    while i < len(text):
        c = text[i]
        if quote == "'":
            if c == "'":
                quote = None
        elif c == "\\" and i + 1 < len(text):
            buf += c + text[i + 1]
            i += 2
            continue
        elif quote == '"':
            if c == '"':
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and (not buf or buf[-1] in " \t"):
            j = text.find("\n", i)
            i = len(text) if j < 0 else j
            continue
        elif c == "\n":
            logical.append(buf)
            buf = ""
            i += 1
            continue
        buf += c
        i += 1
    logical.append(buf)
    keywords = ("if", "then", "else", "elif", "fi", "case", "esac", "for", "while", "until", "do", "done",
                "function", "select", "{", "}", "(", ")", ".", "source", "eval", "exec", "return", "exit")
    for line in logical:
        stripped = line.strip().rstrip("\r").strip()
        if not stripped:
            continue
        if not ASSIGN_RE.match(stripped):
            return stripped
        first = re.split(r"[\s;&|]+", stripped)
        rest = re.split(r"[;&|]+", stripped)[1:]
        for part in rest:
            words = part.split()
            if words and (words[0] in keywords or "()" in part):
                return stripped
        if first and first[0] in keywords:
            return stripped
    return None


def _ethtool_info(system, name, have_ethtool):
    if not have_ethtool:
        return {}
    rc, out, _err = system.run(["ethtool", "-i", name], QUERY_TIMEOUT)
    if rc != 0:
        return {}
    info = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def _vfs_of(system, dev, usage):
    vfs = []
    for entry in _list(system, dev):
        match = re.match(r"^virtfn(\d+)$", entry)
        if not match:
            continue
        link = dev + "/" + entry
        pci = _link_base(system, link)
        netdevs = _list(system, link + "/net")
        netdev = netdevs[0] if netdevs else None
        vfs.append({
            "index": int(match.group(1)),
            "pci_address": pci,
            "netdev": netdev,
            "driver": _link_base(system, link + "/driver"),
            "mac": _read(system, "%s/net/%s/address" % (link, netdev)) if netdev else None,
            "used_by": sorted(usage.get(pci, [])),
        })
    vfs.sort(key=lambda vf: vf["index"])
    return vfs


def _nic(system, name, legacy, managed, usage, have_ethtool):
    base = "/sys/class/net/" + name
    dev = base + "/device"
    pci = _link_base(system, dev)
    driver = _link_base(system, dev + "/driver")
    ethtool = _ethtool_info(system, name, have_ethtool)
    speed = _read_int(system, base + "/speed")
    totalvfs = _read_int(system, dev + "/sriov_totalvfs")
    numvfs = _read_int(system, dev + "/sriov_numvfs")
    is_vf = system.exists(dev + "/physfn")
    vfs = [] if is_vf else _vfs_of(system, dev, usage)
    if legacy and not is_vf and driver in LEGACY_MAX_VFS:
        if totalvfs is None:
            totalvfs = LEGACY_MAX_VFS[driver]
        if numvfs is None:
            numvfs = len(vfs)
    capable = (not is_vf) and totalvfs is not None and (numvfs is not None or legacy)
    return {
        "name": name,
        "pci_address": pci,
        "vendor_id": _hex_id(system, dev + "/vendor"),
        "device_id": _hex_id(system, dev + "/device"),
        "driver": driver,
        "driver_version": ethtool.get("version") or None,
        "firmware_version": ethtool.get("firmware-version") or None,
        "bus_info": ethtool.get("bus-info") or None,
        "mac": _read(system, base + "/address"),
        "operstate": _read(system, base + "/operstate"),
        "speed": speed if speed is not None and speed > 0 else None,
        "mtu": _read_int(system, base + "/mtu"),
        "sriov_capable": capable,
        "sriov_totalvfs": totalvfs,
        "sriov_numvfs": numvfs,
        "is_vf": is_vf,
        "physfn": _link_base(system, dev + "/physfn") if is_vf else None,
        "vfs": vfs,
        "managed": (pci in managed) if not is_vf else False,
        "persisted_count": managed.get(pci) if not is_vf else None,
    }


def op_inventory(system, args):
    release = _kernel_release(system)
    legacy = _is_legacy_kernel(release)
    grub = _grub_effective(system)
    guests = _guests(system)
    usage = _usage_by_pci(guests["guests"])
    managed = _managed_counts(system, legacy)
    have_ethtool = bool(system.which("ethtool"))
    nics = []
    for name in _list(system, "/sys/class/net"):
        if system.exists("/sys/class/net/%s/device" % name):
            nics.append(_nic(system, name, legacy, managed, usage, have_ethtool))
    tools = _grub_tools(system)
    chosen = _choose_grub_tool(system, grub)
    cmdline = _read(system, "/proc/cmdline")
    return {
        "hostname": _read(system, "/proc/sys/kernel/hostname"),
        "machine_id": _read(system, "/etc/machine-id"),
        "boot_id": _read(system, "/proc/sys/kernel/random/boot_id"),
        "kernel_release": release,
        "legacy_kernel": legacy,
        "os": _os_release(system),
        "cpu_vendor": _cpu_vendor(system),
        "cmdline": cmdline,
        "grub": {
            "cmdline_linux": grub["values"].get("GRUB_CMDLINE_LINUX"),
            "cmdline_linux_source": grub["sources"].get("GRUB_CMDLINE_LINUX"),
            "cmdline_linux_default": grub["values"].get(GRUB_VAR),
            "cmdline_linux_default_source": grub["sources"].get(GRUB_VAR),
            "files": grub["files"],
        },
        "grub_tool": chosen,
        "grub_tools": tools,
        "iommu": _iommu(system),
        "virsh": guests["available"],
        "guests": guests["guests"],
        "guests_error": guests["error"],
        "persistence_file": MODPROBE_CONF_PATH if legacy else UDEV_RULES_PATH,
        "nics": nics,
    }


# ---------------------------------------------------------------------------------------------
# set_vfs
# ---------------------------------------------------------------------------------------------

WRITE_ERRORS = {
    errno.EBUSY: ("ebusy", "The device is busy (EBUSY): the kernel refused to change the VF count."),
    errno.ENOMEM: ("enomem", "The kernel could not allocate the VFs (ENOMEM): SR-IOV is disabled in the "
                             "BIOS or the kernel needs pci=realloc."),
    errno.ENOSPC: ("enospc", "No space for the VFs (ENOSPC): the MSI-X interrupt vectors are exhausted; "
                             "ask for fewer VFs or free vectors."),
    errno.EROFS: ("readonly_fs", "The file system is read-only (EROFS)."),
    errno.EINVAL: ("einval", "The kernel rejected the value (EINVAL)."),
    errno.EACCES: ("permission_denied", "Permission denied: the agent must run as root."),
    errno.EPERM: ("permission_denied", "Operation not permitted: the agent must run as root."),
    errno.ETIMEDOUT: ("write_timeout", "The write to sriov_numvfs did not complete in time (the driver "
                                       "may have another operation pending)."),
}


def _write_numvfs(system, path, value, pf, pci):
    try:
        system.write_text(path, "%d\n" % value)
    except OSError as exc:
        code, text = WRITE_ERRORS.get(exc.errno, ("write_failed", "Writing sriov_numvfs failed."))
        raise AgentError(code, "%s (%s %s, writing %d to %s: %s)" % (
            text, pf, pci, value, path, exc.strerror or exc), {
            "pf": pf, "pci_address": pci, "path": path, "value": value,
            "errno": _errno_name(exc.errno), "strerror": exc.strerror}) from None


def _pf_state(system, pf, legacy, managed, usage):
    dev = "/sys/class/net/%s/device" % pf
    pci = _link_base(system, dev)
    vfs = _vfs_of(system, dev, usage)
    driver = _link_base(system, dev + "/driver")
    numvfs = len(vfs) if legacy else _read_int(system, dev + "/sriov_numvfs")
    totalvfs = _read_int(system, dev + "/sriov_totalvfs")
    if legacy and totalvfs is None:
        totalvfs = LEGACY_MAX_VFS.get(driver)
    return {"pf": pf, "pci_address": pci, "driver": driver, "sriov_numvfs": numvfs,
            "sriov_totalvfs": totalvfs, "persisted_count": managed.get(pci), "vfs": vfs}


def _vfs_ready(system, dev, count):
    """-> (VF links virtfnN (N < count) that exist and point back to the PF with physfn,
    surplus links (N >= count), VFs whose netdev is still expected: bound to a network driver but
    without a netdev yet). VFs bound to vfio-pci / pci-stub or to no driver (VF driver
    blacklisted) never get a netdev; that is normal on passthrough hosts."""
    ready = 0
    netdev_pending = 0
    for index in range(count):
        link = "%s/virtfn%d" % (dev, index)
        if not (system.exists(link) and system.exists(link + "/physfn")):
            continue
        ready += 1
        vf_driver = _link_base(system, link + "/driver")
        if vf_driver and vf_driver not in PASSTHROUGH_DRIVERS and not _list(system, link + "/net"):
            netdev_pending += 1
    extra = [e for e in _list(system, dev) if re.match(r"^virtfn(\d+)$", e) and int(e[6:]) >= count]
    return ready, len(extra), netdev_pending


def _wait_vfs(system, pf, pci, dev, count, wait_seconds, actions):
    """Wait for the kernel to create (or remove) the VFs -> whether every VF that will get a network
    interface has one (information only: passthrough hosts have none, and that is not a failure)."""
    deadline = system.monotonic() + wait_seconds
    while True:
        ready, extra, netdev_pending = _vfs_ready(system, dev, count)
        if ready == count and extra == 0 and netdev_pending == 0:
            return True
        if system.monotonic() >= deadline:
            if ready == count and extra == 0:
                return False
            raise AgentError("vf_timeout", "%s (%s): expected %d VFs, found %d (and %d surplus) after "
                             "%.1f s. The VF count was written; the kernel did not create or remove the VFs "
                             "in time." % (pf, pci, count, ready, extra, wait_seconds),
                             {"pf": pf, "pci_address": pci, "expected": count, "ready": ready,
                              "surplus": extra, "actions": actions})
        system.sleep(0.1)


def _ensure_udev(system, pci, count, actions):
    exists, counts, others = _read_udev(system)
    new = dict(counts)
    if count:
        new[pci] = count
    else:
        new.pop(pci, None)
    if exists and new == counts:
        return
    if not exists and not new:
        return
    _write_file(system, UDEV_RULES_PATH, _render_udev(new, others), "persistence file")
    if count:
        actions.append("persisted %d VFs for %s in %s" % (count, pci, UDEV_RULES_PATH))
    else:
        actions.append("removed the persisted VF count of %s from %s" % (pci, UDEV_RULES_PATH))


def _ensure_modprobe(system, pci, driver, count, actions):
    exists, drivers, others = _read_modprobe(system)
    ports = _legacy_ports(system, driver)
    if pci not in ports:
        ports = sorted(set(ports) | {pci})
    persisted = drivers.get(driver, [])
    values = []
    for position, port in enumerate(ports):
        if port == pci:
            values.append(count)
        elif position < len(persisted):
            values.append(persisted[position])
        else:
            port_dev = None
            for name in _list(system, "/sys/class/net"):
                if _link_base(system, "/sys/class/net/%s/device" % name) == port:
                    port_dev = "/sys/class/net/%s/device" % name
                    break
            current = 0
            if port_dev:
                current = len([e for e in _list(system, port_dev) if re.match(r"^virtfn\d+$", e)])
            values.append(current)
    new = dict(drivers)
    new[driver] = values
    if exists and new == drivers:
        return False
    _write_file(system, MODPROBE_CONF_PATH, _render_modprobe(new, others), "modprobe.d file")
    actions.append("wrote 'options %s max_vfs=%s' to %s (ports in PCI order: %s); the count applies "
                   "after a reboot (kernel older than 3.8)" % (
                       driver, ",".join(str(v) for v in values), MODPROBE_CONF_PATH, ", ".join(ports)))
    return True


def op_set_vfs(system, args):
    pf = _valid_ifname(args.get("pf"), "pf")
    expected_pci = _valid_pci(args.get("pci_address"), "pci_address")
    count = _valid_count(args.get("count"), "count")
    persist = _valid_bool(args.get("persist"), "persist", True)
    # take_over skips only the "externally managed" refusal; allow_guest_impact skips only the
    # guest checks (vfs_in_use, guest_check_failed). force is the deprecated alias for both.
    force = _valid_bool(args.get("force"), "force", False)
    take_over = _valid_bool(args.get("take_over"), "take_over", False) or force
    allow_guest_impact = _valid_bool(args.get("allow_guest_impact"), "allow_guest_impact", False) or force
    wait_seconds = args.get("wait_seconds", DEFAULT_WAIT_SECONDS)
    if isinstance(wait_seconds, bool) or not isinstance(wait_seconds, (int, float)) or not (
            0 <= wait_seconds <= MAX_WAIT_SECONDS_ARG):
        raise _bad("wait_seconds must be a number between 0 and %d" % MAX_WAIT_SECONDS_ARG,
                   field="wait_seconds", value=repr(wait_seconds))
    # Capped so that the whole operation fits inside the controller's operation timeout.
    wait_seconds = min(float(wait_seconds), MAX_WAIT_SECONDS)

    base = "/sys/class/net/" + pf
    dev = base + "/device"
    if not system.exists(base):
        raise AgentError("no_such_pf", "There is no network interface named %s on this host." % pf,
                         {"pf": pf})
    if not system.exists(dev):
        raise AgentError("not_sriov_capable", "%s is not a PCI network device (no device link)." % pf,
                         {"pf": pf})
    actual_pci = _link_base(system, dev)
    if actual_pci != expected_pci:
        raise AgentError("pf_mismatch", "%s is the PCI device %s, not %s as expected: the interface was "
                         "renamed or the hardware changed. Refresh the inventory." % (
                             pf, actual_pci, expected_pci),
                         {"pf": pf, "expected_pci_address": expected_pci, "actual_pci_address": actual_pci})
    if system.exists(dev + "/physfn"):
        raise AgentError("not_sriov_capable", "%s (%s) is itself a virtual function." % (pf, actual_pci),
                         {"pf": pf, "pci_address": actual_pci})

    release = _kernel_release(system)
    driver = _link_base(system, dev + "/driver")
    numvfs_path = dev + "/sriov_numvfs"
    # Feature detection: sriov_numvfs present -> the sysfs route, whatever the version says
    # (vendor kernels backport it); absent on a kernel older than 3.8 -> max_vfs.
    legacy = _is_legacy_kernel(release) and not system.exists(numvfs_path)
    if legacy:
        if driver not in LEGACY_MAX_VFS:
            raise AgentError("not_sriov_capable", "%s (%s) uses driver %s, which has no max_vfs parameter "
                             "on this kernel (%s)." % (pf, actual_pci, driver, release),
                             {"pf": pf, "pci_address": actual_pci, "driver": driver, "kernel": release})
    elif not system.exists(numvfs_path):
        raise AgentError("not_sriov_capable", "%s (%s, driver %s) is not SR-IOV capable (no sriov_numvfs)."
                         % (pf, actual_pci, driver), {"pf": pf, "pci_address": actual_pci, "driver": driver})

    managed = _managed_counts(system, legacy)
    guests = _guests(system)
    usage = _usage_by_pci(guests["guests"])
    before = _pf_state(system, pf, legacy, managed, usage)
    current = before["sriov_numvfs"]
    total = before["sriov_totalvfs"]
    if current is None:
        raise AgentError("read_failed", "Cannot read %s." % numvfs_path, {"path": numvfs_path})
    if total is None:
        raise AgentError("not_sriov_capable", "%s (%s) reports no sriov_totalvfs." % (pf, actual_pci),
                         {"pf": pf, "pci_address": actual_pci})
    if count > total:
        raise AgentError("exceeds_total", "%s (%s) supports at most %d VFs; %d were requested." % (
            pf, actual_pci, total, count), {"pf": pf, "pci_address": actual_pci, "requested": count,
                                             "sriov_totalvfs": total})

    actions = []
    reboot_required = False
    persist_skipped = None
    unmanaged = current > 0 and actual_pci not in managed
    reset_first = (not legacy) and current > 0 and count > 0 and count != current
    if count != current:
        if unmanaged and not take_over:
            raise AgentError("externally_managed", "%s (%s) already has %d VFs that SR-IOV Console did not "
                             "configure (not in %s). Refusing to change them; use take_over to take them "
                             "over." % (pf, actual_pci, current,
                                        MODPROBE_CONF_PATH if legacy else UDEV_RULES_PATH),
                             {"pf": pf, "pci_address": actual_pci, "sriov_numvfs": current})
        if reset_first:
            affected = before["vfs"]
        else:
            affected = [vf for vf in before["vfs"] if vf["index"] >= count]
        if affected and not allow_guest_impact:
            if guests["guests"] is None:
                raise AgentError("guest_check_failed", "Cannot tell whether running guests use the VFs of "
                                 "%s that this change removes: %s. Allow guest impact to proceed anyway." % (
                                     pf, guests["error"]), {"pf": pf, "error": guests["error"]})
            in_use = []
            for vf in affected:
                used_by = list(vf["used_by"])
                if not used_by and vf["driver"] in PASSTHROUGH_DRIVERS:
                    # Defence in depth: a VF handed to vfio-pci / pci-stub is meant for a guest even
                    # when no running guest that virsh knows claims it.
                    used_by = ["<unknown: bound to %s>" % vf["driver"]]
                if used_by:
                    in_use.append({"index": vf["index"], "pci_address": vf["pci_address"], "used_by": used_by})
            if in_use:
                names = sorted(set(g for vf in in_use for g in vf["used_by"]))
                raise AgentError("vfs_in_use", "%s (%s): this change removes VFs used by running guests: %s. "
                                 "Stop or migrate them, or allow guest impact." % (
                                     pf, actual_pci, ", ".join(names)),
                                 {"pf": pf, "pci_address": actual_pci, "guests": names, "vfs": in_use})
    elif persist and not legacy and unmanaged and not take_over and managed.get(actual_pci) != count:
        # Equal count on a PF someone else configured: recording it would silently adopt the PF.
        persist_skipped = "externally_managed"

    vf_netdevs_ready = None
    if legacy:
        _ensure_modprobe(system, actual_pci, driver, count, actions)
        reboot_required = count != current
    elif count == current:
        if persist and persist_skipped is None:
            _ensure_udev(system, actual_pci, count, actions)
    else:
        # Ownership first: persist the new count BEFORE the sysfs write, so that a persistence
        # failure cannot leave VFs the console created without the console's record (which would
        # make them "externally managed" later). Rolled back if the write fails.
        udev_before = _udev_raw(system) if persist else None
        if persist:
            _ensure_udev(system, actual_pci, count, actions)
        step = {"wrote_zero": False}
        try:
            if reset_first:
                _write_numvfs(system, numvfs_path, 0, pf, actual_pci)
                step["wrote_zero"] = True
                actions.append("wrote 0 to sriov_numvfs of %s (%s) first: the kernel refuses to change a "
                               "non-zero VF count to another non-zero count (EBUSY)" % (pf, actual_pci))
            _write_numvfs(system, numvfs_path, count, pf, actual_pci)
            actions.append("wrote %d to sriov_numvfs of %s (%s) (was %d)" % (
                count, pf, actual_pci, 0 if reset_first else current))
        except AgentError as exc:
            _set_vfs_failed(system, exc, pf, actual_pci, numvfs_path, current, count, step["wrote_zero"],
                            udev_before, actions)
            raise
        vf_netdevs_ready = _wait_vfs(system, pf, actual_pci, dev, count, wait_seconds, actions)

    managed_after = _managed_counts(system, legacy)
    after = _pf_state(system, pf, legacy, managed_after, usage)
    result = {
        "pf": pf,
        "pci_address": actual_pci,
        "count": count,
        "before": before,
        "after": after,
        "actions": actions,
        "reboot_required": reboot_required,
        "persisted": managed_after.get(actual_pci, 0) == count if (persist or legacy) else None,
        "persistence_file": MODPROBE_CONF_PATH if legacy else UDEV_RULES_PATH,
        "vf_netdevs_ready": vf_netdevs_ready,
    }
    if persist_skipped is not None:
        result["persisted"] = False
        result["reason"] = persist_skipped
    return result


def _udev_raw(system):
    """(exists, text) of the managed udev file, to roll a persistence write back."""
    try:
        return True, system.read_text(UDEV_RULES_PATH)
    except OSError:
        return False, None


def _restore_udev(system, saved):
    exists, text = saved
    if exists:
        system.atomic_write(UDEV_RULES_PATH, text)
    elif system.exists(UDEV_RULES_PATH):
        system.remove(UDEV_RULES_PATH)


def _set_vfs_failed(system, exc, pf, pci, numvfs_path, before_count, count, wrote_zero, udev_before, actions):
    """A sysfs write failed: say exactly what state the PF is in now, try to put the previous count
    back when the reset to 0 succeeded, and roll back the persistence written beforehand."""
    value = exc.details.get("value")
    if value == 0 and exc.details.get("errno") in ("EPERM", "EINVAL", "EBUSY") and _is_root():
        exc.code = "vfs_assigned"
        exc.message = ("The driver refuses to free VFs that are assigned to guests (%s writing 0 to "
                       "sriov_numvfs of %s (%s)). Detach the VFs from the guests first." % (
                           exc.details.get("errno"), pf, pci))
    failed_at = _read_int(system, numvfs_path)
    now = failed_at
    if wrote_zero and failed_at == 0 and exc.details.get("errno") != "ETIMEDOUT":
        try:
            system.write_text(numvfs_path, "%d\n" % before_count)
            actions.append("restored the previous count: wrote %d to sriov_numvfs of %s (%s) after writing "
                           "%d failed" % (before_count, pf, pci, count))
        except OSError as restore_exc:
            actions.append("could not restore the previous count %d of %s (%s): %s" % (
                before_count, pf, pci, restore_exc.strerror or restore_exc))
        now = _read_int(system, numvfs_path)
    if udev_before is not None:
        try:
            _restore_udev(system, udev_before)
            actions.append("rolled back %s to its previous content" % UDEV_RULES_PATH)
        except OSError as udev_exc:
            actions.append("could not roll back %s: %s" % (UDEV_RULES_PATH, udev_exc.strerror or udev_exc))
    partially = now != before_count
    exc.details["actions"] = list(actions)
    exc.details["sriov_numvfs_before"] = before_count
    exc.details["sriov_numvfs_after_failure"] = failed_at
    exc.details["sriov_numvfs_now"] = now
    exc.details["partially_applied"] = partially
    exc.message = "%s now has %s VFs (had %d). %s" % (
        pf, "an unknown number of" if now is None else now, before_count, exc.message)
    exc.args = (exc.message,)


def _is_root():
    geteuid = getattr(os, "geteuid", None)
    return geteuid is None or geteuid() == 0


# ---------------------------------------------------------------------------------------------
# GRUB defaults parsing and editing
# ---------------------------------------------------------------------------------------------


def _expand(text, env):
    def repl(match):
        return env.get(match.group(1) or match.group(2), "")
    return VAR_REF_RE.sub(repl, text)


def _shell_value(raw, env):
    """Evaluate the simple shell words used in /etc/default/grub and os-release."""
    out = []
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        if c == "'":
            j = raw.find("'", i + 1)
            if j < 0:
                j = n
            out.append(raw[i + 1:j])
            i = j + 1
        elif c == '"':
            i += 1
            buf = []
            while i < n and raw[i] != '"':
                if raw[i] == "\\" and i + 1 < n and raw[i + 1] in '"\\$`':
                    buf.append("\x00" + raw[i + 1] if raw[i + 1] == "$" else raw[i + 1])
                    i += 2
                    continue
                buf.append(raw[i])
                i += 1
            i += 1
            out.append(_expand("".join(buf), env).replace("\x00", ""))
        elif c.isspace() or c == "#" or c == ";":
            break
        else:
            j = i
            while j < n and not raw[j].isspace() and raw[j] not in "'\";#":
                j += 1
            out.append(_expand(raw[i:j], env))
            i = j
    return "".join(out)


def _grub_files(system):
    files = []
    if system.exists(GRUB_DEFAULT):
        files.append(GRUB_DEFAULT)
    for name in _list(system, GRUB_DIR):
        if name.endswith(".cfg"):
            files.append(GRUB_DIR + "/" + name)
    return files


def _grub_effective(system):
    """Evaluate GRUB defaults like grub-mkconfig does: /etc/default/grub, then grub.d/*.cfg sorted.

    Returns {"values", "sources", "files", "defs": [(path, line_index, raw_value)] for GRUB_VAR,
    "texts": {path: text}}.
    """
    env = {}
    sources = {}
    defs = []
    texts = {}
    files = []
    for path in _grub_files(system):
        try:
            text = system.read_text(path)
        except OSError:
            continue
        files.append(path)
        texts[path] = text
        for index, line in enumerate(text.split("\n")):
            match = ASSIGN_RE.match(line)
            if not match:
                continue
            name, raw = match.group(1), match.group(2)
            env[name] = _shell_value(raw, env)
            sources[name] = path
            if name == GRUB_VAR:
                defs.append((path, index, raw))
    return {"values": env, "sources": sources, "files": files, "defs": defs, "texts": texts}


def _karg_key(token):
    return token.split("=", 1)[0]


def _split_value(raw_value):
    """raw value text (with its quotes) -> (quote char or '', inner text)."""
    if raw_value[:1] in ('"', "'") and len(raw_value) >= 2:
        return raw_value[0], raw_value[1:-1]
    return "", raw_value


def _edit_tokens(inner, add, remove_keys, remove_exact, append, placed):
    """Token-level edit of the raw text between the quotes. Separators, leading and trailing
    whitespace are kept as they were; a removed token takes its preceding separator with it; an
    added token is appended after one space. placed (a set, updated) holds the added tokens already
    present, so that a token is never added twice along a chain of definitions."""
    lead = re.match(r"^\s*", inner).group(0)
    body = inner[len(lead):]
    trail = re.search(r"\s*$", body).group(0)
    body = body[:len(body) - len(trail)]
    items = []  # [separator before, token]
    if body:
        parts = re.split(r"(\s+)", body)
        items.append(["", parts[0]])
        for index in range(1, len(parts), 2):
            items.append([parts[index], parts[index + 1]])
    add_by_key = dict((_karg_key(a), a) for a in add if "=" in a)
    out = []
    for sep, token in items:
        key = _karg_key(token)
        if token in remove_exact or key in remove_keys:
            continue
        if "=" in token and key in add_by_key:
            token = add_by_key[key]
        if token in add:
            if token in placed:
                continue
            placed.add(token)
        out.append([sep, token])
    if append:
        for token in add:
            if token not in placed:
                out.append([" ", token])
                placed.add(token)
    if not out:
        return lead + trail
    return lead + out[0][1] + "".join(sep + token for sep, token in out[1:]) + trail


def _edit_line(line, add, remove_keys, remove_exact, append, placed, path):
    match = ASSIGN_RE.match(line)
    prefix_len = match.start(2)
    prefix, raw = line[:prefix_len], line[prefix_len:]
    vmatch = VALUE_RE.match(raw)
    rest = vmatch.group(2) if vmatch else None
    if vmatch is None or not re.match(r"^[ \t]*(?:[#;].*)?\r?$", rest):
        raise AgentError("unsupported_config", "Cannot edit %s in %s safely: the line uses shell syntax the "
                         "agent does not rewrite (%r)." % (GRUB_VAR, path, line[:200]),
                         {"path": path, "line": line[:200]})
    quote, inner = _split_value(vmatch.group(1))
    new_inner = _edit_tokens(inner, add, remove_keys, remove_exact, append, placed)
    if new_inner == inner:
        return line
    if quote == "" and re.search(r"\s", new_inner):
        quote = '"'
    return prefix + quote + new_inner + quote + rest


def _contributing_defs(defs):
    """The definitions that make up the effective value: the last one, and earlier ones as long as
    the later definition refers to $GRUB_CMDLINE_LINUX_DEFAULT."""
    chain = []
    for path, index, raw in reversed(defs):
        chain.append((path, index, raw))
        if not re.search(r"\$\{?" + GRUB_VAR + r"\b", raw):
            break
    return chain


def _regen_argv(system, tool, add, remove):
    if tool == "update-grub":
        return ["update-grub"]
    if tool == "grub2-mkconfig":
        out = "/boot/grub2/grub.cfg"
        os_id = _os_release(system).get("id")
        for candidate in (os_id, EFI_DIR_FOR_ID.get(os_id or "")):
            if not candidate or not re.match(r"^[a-z0-9._-]+$", candidate):
                continue
            efi = "/boot/efi/EFI/%s/grub.cfg" % candidate
            text = _read(system, efi)
            # Since RHEL 9 / Fedora 34 the EFI grub.cfg is a stub that loads /boot/grub2/grub.cfg:
            # never overwrite the stub.
            if text is not None and "configfile" not in text:
                out = efi
                break
        return ["grub2-mkconfig", "-o", out]
    if tool == "grub-mkconfig":
        return ["grub-mkconfig", "-o", "/boot/grub/grub.cfg"]
    argv = ["grubby", "--update-kernel=ALL"]
    if add:
        argv.append("--args=" + " ".join(add))
    if remove:
        argv.append("--remove-args=" + " ".join(remove))
    return argv


def _grub_snapshot(system, grub):
    return {"grub_cmdline_linux_default": grub["values"].get(GRUB_VAR),
            "source": grub["sources"].get(GRUB_VAR),
            "cmdline": _read(system, "/proc/cmdline")}


def op_kernel_args(system, args):
    add = _valid_kargs(args.get("add"), "add")
    remove = _valid_kargs(args.get("remove"), "remove")
    # regenerate: run the boot-config tool even when the GRUB defaults already say the right thing
    # (the re-run of an interrupted step: the file may have been edited before the tool ran).
    regenerate = _valid_bool(args.get("regenerate"), "regenerate", False)
    for field, items in (("add", add), ("remove", remove)):
        for item in items:
            if _karg_key(item) in PROTECTED_KARGS:
                raise _bad("%s is a protected boot argument (%s): SR-IOV Console never adds or removes it, "
                           "because the host may not boot without it." % (item, _karg_key(item)),
                           field=field, value=item, protected=list(PROTECTED_KARGS))
    add_keys = set(_karg_key(a) for a in add)
    for item in remove:
        if item in add or ("=" not in item and item in add_keys):
            raise _bad("%s is both added and removed" % item, field="remove", value=item)
    remove_keys = set(r for r in remove if "=" not in r)
    remove_exact = set(r for r in remove if "=" in r)

    grub = _grub_effective(system)
    if GRUB_DEFAULT not in grub["texts"]:
        raise AgentError("no_grub_config", "%s does not exist or cannot be read." % GRUB_DEFAULT,
                         {"path": GRUB_DEFAULT})
    before = _grub_snapshot(system, grub)

    def conflicts(value):
        tokens = (value or "").split()
        missing = [a for a in add if a not in tokens]
        clashing = [t for t in tokens if ("=" in t and _karg_key(t) in add_keys and t not in add)]
        present = [t for t in tokens if t in remove_exact or _karg_key(t) in remove_keys]
        return missing, clashing, present

    missing, clashing, present = conflicts(grub["values"].get(GRUB_VAR))
    in_linux = [t for t in (grub["values"].get("GRUB_CMDLINE_LINUX") or "").split()
                if t in remove_exact or _karg_key(t) in remove_keys]
    if in_linux:
        raise AgentError("unsupported_config", "Cannot remove %s: %s in GRUB_CMDLINE_LINUX (%s), which the agent "
                         "does not edit (it edits only %s). Remove it from GRUB_CMDLINE_LINUX by hand." % (
                             ", ".join(in_linux), "it is" if len(in_linux) == 1 else "they are",
                             grub["sources"].get("GRUB_CMDLINE_LINUX"), GRUB_VAR),
                         {"variable": "GRUB_CMDLINE_LINUX", "tokens": in_linux,
                          "path": grub["sources"].get("GRUB_CMDLINE_LINUX")})
    new_texts = {}
    if missing or clashing or present:
        defs = grub["defs"]
        chain = _contributing_defs(defs)
        lines_by_file = {}
        if not chain:
            # No definition anywhere: append one to /etc/default/grub.
            text = grub["texts"][GRUB_DEFAULT]
            if text and not text.endswith("\n"):
                text += "\n"
            new_texts[GRUB_DEFAULT] = text + '%s="%s"\n' % (GRUB_VAR, " ".join(add))
        else:
            placed = set()
            last = chain[0]
            for path, index, _raw in reversed(chain):  # earliest first
                lines = lines_by_file.setdefault(path, grub["texts"][path].split("\n"))
                lines[index] = _edit_line(lines[index], add, remove_keys, remove_exact,
                                          (path, index) == last[:2], placed, path)
            for path, lines in lines_by_file.items():
                text = "\n".join(lines)
                if text != grub["texts"][path]:
                    new_texts[path] = text

    actions = []
    tool = None
    argv = None
    if new_texts:
        for path in sorted(set(new_texts) | set(d[0] for d in grub["defs"])):
            flow = _shell_control_flow(grub["texts"][path])
            if flow is not None:
                raise AgentError("unsupported_config", "Cannot edit %s in %s safely: the file contains shell "
                                 "control flow (%r), so which definition applies cannot be known without "
                                 "running it. Keep only plain assignments there, or edit it by hand." % (
                                     GRUB_VAR, path, flow[:200]), {"path": path, "line": flow[:200]})
    if new_texts or regenerate:
        tool = _choose_grub_tool(system, grub)
        if tool is None:
            raise AgentError("no_grub_tool", "None of update-grub, grub2-mkconfig, grub-mkconfig or grubby "
                             "is installed: cannot regenerate the boot configuration.", {})
        argv = _regen_argv(system, tool, add, remove)
        written = []
        try:
            for path in sorted(new_texts):
                backup = path + BACKUP_SUFFIX
                _write_file(system, backup, grub["texts"][path], "backup", mode=None)
                actions.append("backed up %s to %s" % (path, backup))
            for path in sorted(new_texts):
                _write_file(system, path, new_texts[path], "GRUB defaults", mode=None)
                written.append(path)
        except AgentError:
            for path in written:
                try:
                    system.atomic_write(path, grub["texts"][path])
                except OSError:
                    pass
            raise
        after_grub = _grub_effective(system)
        for path in sorted(new_texts):
            actions.append("edited %s in %s: %r -> %r" % (
                GRUB_VAR, path, before["grub_cmdline_linux_default"], after_grub["values"].get(GRUB_VAR)))
        rc, out, err = system.run(argv, TOOL_TIMEOUT)
        if rc != 0:
            restored = []
            for path in sorted(new_texts):
                try:
                    original = system.read_text(path + BACKUP_SUFFIX)
                    system.atomic_write(path, original)
                    restored.append(path)
                except OSError:
                    try:
                        system.atomic_write(path, grub["texts"][path])
                        restored.append(path)
                    except OSError:
                        pass
            raise AgentError("grub_tool_failed", "%s failed (%s); %s" % (
                                 tool, "timed out" if rc is None else "exit status %d" % rc,
                                 "the previous GRUB defaults were restored from the backup." if new_texts
                                 else "the GRUB defaults were not changed."),
                             {"tool": tool, "argv": argv, "exit_status": rc, "stderr": err[-4000:],
                              "stdout": out[-2000:], "restored": restored})
        actions.append("regenerated the boot configuration: %s%s" % (
            " ".join(argv), "" if new_texts else " (requested: the GRUB defaults were already as wanted)"))
    after_grub = _grub_effective(system)
    after = _grub_snapshot(system, after_grub)
    running = (after["cmdline"] or "").split()
    reboot_required = any(a not in running for a in add) or any(
        t in remove_exact or _karg_key(t) in remove_keys for t in running)
    return {
        "add": add,
        "remove": remove,
        "file": sorted(new_texts)[-1] if new_texts else before["source"],
        "files_changed": sorted(new_texts),
        "backup_suffix": BACKUP_SUFFIX,
        "grub_tool": tool,
        "grub_tool_argv": argv,
        "before": before,
        "after": after,
        "actions": actions,
        "reboot_required": reboot_required,
    }


# ---------------------------------------------------------------------------------------------
# reboot
# ---------------------------------------------------------------------------------------------


def op_reboot(system, args):
    # Safe by default: a caller must say explicitly that running guests may go down.
    refuse_if_guests = _valid_bool(args.get("refuse_if_guests"), "refuse_if_guests", True)
    expected_boot_id = args.get("expected_boot_id")
    if expected_boot_id is not None and (not isinstance(expected_boot_id, str) or len(expected_boot_id) > 64):
        raise _bad("expected_boot_id must be a boot id string", field="expected_boot_id",
                   value=repr(expected_boot_id))
    boot_id = _read(system, "/proc/sys/kernel/random/boot_id")
    if expected_boot_id is not None and expected_boot_id.strip().lower() != (boot_id or "").lower():
        raise AgentError("boot_id_changed", "Not rebooting: the host has already rebooted since the reboot was "
                         "planned (boot id %s, expected %s)." % (boot_id, expected_boot_id),
                         {"boot_id": boot_id, "expected_boot_id": expected_boot_id})
    if refuse_if_guests:
        # Checked here, immediately before the reboot is scheduled: a guest started since the plan
        # (or since the console's last look) must not go down without the change allowing it.
        guests = _guests(system)
        if guests["guests"] is None:
            raise AgentError("guest_check_failed", "Not rebooting: cannot tell whether guests are running (%s)."
                             % guests["error"], {"error": guests["error"], "boot_id": boot_id})
        names = [g["name"] for g in guests["guests"]]
        if names:
            raise AgentError("guests_running", "Not rebooting: %d running guest%s would go down: %s." % (
                len(names), "" if len(names) == 1 else "s", ", ".join(names)),
                {"guests": names, "boot_id": boot_id})
    actions = []
    method = None
    notes = []
    if system.which("systemd-run"):
        # A fixed unit name: a second schedule fails ("unit already exists") instead of stacking.
        argv = ["systemd-run", "--unit=sriov-console-reboot", "--on-active=2",
                "--timer-property=AccuracySec=100ms", "systemctl", "reboot"]
        rc, out, err = system.run(argv, QUERY_TIMEOUT)
        if rc == 0:
            method = "systemd-run"
            actions.append("scheduled a reboot in 2 s: " + " ".join(argv))
        elif "already" in (err or out) and "sriov-console-reboot" in (err or out):
            raise AgentError("reboot_already_scheduled", "A reboot is already scheduled on this host "
                             "(unit sriov-console-reboot exists): not scheduling another one.",
                             {"stderr": (err or out).strip()[-500:], "boot_id": boot_id})
        else:
            notes.append("systemd-run failed (%s): %s" % (rc, (err or out).strip()[-500:]))
    if method is None:
        argv = ["sh", "-c", "sleep 2; reboot"]
        try:
            system.spawn_detached(argv)
        except OSError as exc:
            raise AgentError("reboot_failed", "Could not schedule a reboot: %s" % (exc.strerror or exc),
                             {"notes": notes}) from None
        method = "sleep-reboot"
        actions.append("scheduled a reboot in 2 s: sh -c 'sleep 2; reboot'")
    return {
        "boot_id": boot_id,
        "method": method,
        "delay_seconds": 2,
        "notes": notes,
        "before": {"boot_id": boot_id},
        "after": {"boot_id": boot_id, "reboot_scheduled": True},
        "actions": actions,
        "reboot_required": False,
    }


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------

HANDLERS = {"inventory": op_inventory, "set_vfs": op_set_vfs, "kernel_args": op_kernel_args,
            "reboot": op_reboot}


LOCKED_OPERATIONS = ("set_vfs", "kernel_args", "reboot")


def _host_lock(system, op):
    """One mutating agent run per host at a time (two runs could otherwise lose a persisted count)."""
    lock = getattr(system, "lock", None)
    if lock is None:  # a System seam without locking (older simulators)
        return _FdLock(None)
    try:
        return lock(LOCK_NAME, LOCK_TIMEOUT)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            raise AgentError("busy", "Another SR-IOV Console agent run is changing this host (%s held for %d s); "
                             "try again later." % (LOCK_NAME, LOCK_TIMEOUT),
                             {"lock": LOCK_NAME, "errno": _errno_name(exc.errno), "op": op}) from None
        raise AgentError("lock_failed", "Cannot take the host lock %s: %s" % (LOCK_NAME, exc.strerror or exc),
                         {"lock": LOCK_NAME, "errno": _errno_name(exc.errno), "op": op}) from None


def _response(op, request_id, result=None, error=None):
    doc = {"ok": error is None, "op": op, "agent_version": AGENT_VERSION, "request_id": request_id}
    if error is None:
        doc["result"] = result
    else:
        doc["error"] = {"code": error.code, "message": error.message, "details": error.details}
    return json.dumps(doc, sort_keys=True) + "\n"


def _exit_status(code):
    return EXIT_BAD_REQUEST if code in ("bad_request", "unknown_op") else EXIT_FAILED


def _parse_request(request_bytes):
    if isinstance(request_bytes, str):
        request_bytes = request_bytes.encode("utf-8", "surrogateescape")
    if not isinstance(request_bytes, (bytes, bytearray)):
        raise AgentError("bad_request", "The request must be bytes of JSON.", {})
    if len(request_bytes) > MAX_REQUEST_BYTES:
        raise AgentError("bad_request", "The request is larger than %d bytes." % MAX_REQUEST_BYTES, {})
    try:
        request = json.loads(bytes(request_bytes).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AgentError("bad_request", "The request is not valid JSON: %s" % exc, {}) from None
    if not isinstance(request, dict):
        raise AgentError("bad_request", "The request must be a JSON object.", {})
    return request


def run_payload(request_bytes, system):
    """Run one request against system -> (exit_status, stdout_text, stderr_text). Never raises."""
    op = None
    request_id = None
    try:
        try:
            request = _parse_request(request_bytes)
            raw_id = request.get("request_id")
            if raw_id is None or isinstance(raw_id, str):
                request_id = raw_id
            elif isinstance(raw_id, int) and not isinstance(raw_id, bool):
                request_id = str(raw_id)
            else:
                raise AgentError("bad_request", "request_id must be a string.", {})
            raw_op = request.get("op")
            if isinstance(raw_op, str) and len(raw_op) <= 64:
                op = raw_op
            if op is None:
                raise AgentError("bad_request", "The request has no operation (op).", {})
            if op not in HANDLERS:
                raise AgentError("unknown_op", "Unknown operation %r; known: %s." % (
                    op, ", ".join(OPERATIONS)), {"op": op, "known": list(OPERATIONS)})
            unknown_keys = sorted(set(request) - {"op", "args", "request_id"})
            if unknown_keys:
                raise AgentError("bad_request", "Unknown request fields: %s" % ", ".join(unknown_keys),
                                 {"fields": unknown_keys})
            args = request.get("args")
            if args is None:
                args = {}
            if not isinstance(args, dict):
                raise AgentError("bad_request", "args must be a JSON object.", {})
            unknown_args = sorted(k for k in args if k not in ARG_KEYS[op])
            if unknown_args:
                raise AgentError("bad_request", "Unknown arguments for %s: %s (allowed: %s)" % (
                    op, ", ".join(unknown_args), ", ".join(ARG_KEYS[op]) or "none"),
                    {"arguments": unknown_args, "allowed": list(ARG_KEYS[op])})
            if op in LOCKED_OPERATIONS:
                with _host_lock(system, op):
                    result = HANDLERS[op](system, args)
            else:
                result = HANDLERS[op](system, args)
            return EXIT_OK, _response(op, request_id, result=result), ""
        except AgentError as exc:
            return _exit_status(exc.code), _response(op, request_id, error=exc), ""
        except Exception as exc:  # noqa: BLE001 - the contract: never raise, report internal_error
            error = AgentError("internal_error", "The agent failed unexpectedly: %s: %s" % (
                type(exc).__name__, exc), {"exception": type(exc).__name__})
            return EXIT_FAILED, _response(op, request_id, error=error), traceback.format_exc()
    except Exception:  # noqa: BLE001 - even building the response failed
        fallback = {"ok": False, "op": None, "agent_version": AGENT_VERSION, "request_id": None,
                    "error": {"code": "internal_error", "message": "The agent failed unexpectedly.",
                              "details": {}}}
        return EXIT_FAILED, json.dumps(fallback, sort_keys=True) + "\n", traceback.format_exc()


def remote_main(request_bytes):
    """Entry point for the bootstrap: the real host, the real streams. Returns the exit status."""
    status, out, err = run_payload(request_bytes, System("/"))
    sys.stdout.write(out)
    sys.stdout.flush()
    if err:
        sys.stderr.write(err)
        sys.stderr.flush()
    return status


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="sriov_agent.py", description="SR-IOV Console hypervisor agent")
    parser.add_argument("--root", default="/", help="prefix for every filesystem path (default /)")
    parser.add_argument("--request-id", default="cli", help=argparse.SUPPRESS)
    parser.add_argument("operation", help="one of: " + ", ".join(OPERATIONS))
    parser.add_argument("args", nargs="?", default=None, help="JSON object of arguments ('-' reads stdin)")
    options = parser.parse_args(argv)
    raw_args = options.args
    if raw_args == "-":
        raw_args = sys.stdin.read()
    try:
        args = json.loads(raw_args) if raw_args is not None else {}
    except ValueError as exc:
        error = AgentError("bad_request", "The arguments are not valid JSON: %s" % exc, {})
        sys.stdout.write(_response(options.operation, options.request_id, error=error))
        return EXIT_BAD_REQUEST
    request = json.dumps({"op": options.operation, "args": args, "request_id": options.request_id})
    status, out, err = run_payload(request.encode("utf-8"), System(options.root))
    sys.stdout.write(out)
    sys.stdout.flush()
    if err:
        sys.stderr.write(err)
    return status


if __name__ == "__main__":
    sys.exit(main())
