#!/usr/bin/env python3
"""SR-IOV Console hypervisor agent.

One file, standard library only, Python 3.6 or newer. See docs/architecture.md for the contract
and docs/agent.md for what each operation reports, what it refuses and why. The controller sends
this source and a JSON request on stdin to a constant bootstrap command, which execs this file
and calls remote_main(request_bytes). All host access goes through a System object so that
simfleet can run these exact bytes against a simulated host.

CLI for operators and tests:
    python3 sriov_agent.py [--root DIR] <operation> [JSON-args]

Operations (OPERATIONS below): inventory, set_vfs, kernel_args, reboot, vf_config, vf_driver,
libvirt_network, and apply_persisted (what the boot and VF units run). An operation is one
function `op_<name>(system, args, deadline)` registered in OPERATIONS with its arguments; shared
helpers cover guests, the host lock, bounded device access and persistence.

Keep this file valid Python 3.6: no f-string "=" specifier, no walrus, no dataclasses,
no subprocess capture_output=/text=, no str.removeprefix.
"""

import configparser
import errno
import fnmatch
import hashlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import xml.etree.ElementTree as ElementTree

AGENT_VERSION = "1.2.0"

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
    "# max_vfs of the driver (kernels older than 3.8): one value for every port, or one per port in\n"
    "# PCI address order, as the driver's parameter type says (modinfo -F parm <driver>).\n"
)
UDEV_LINE_FORMAT = 'ACTION=="add", SUBSYSTEM=="net", KERNELS=="{pci}", ATTR{{device/sriov_numvfs}}="{count}"'
UDEV_LINE_RE = re.compile(
    r'^ACTION=="add", SUBSYSTEM=="net", KERNELS=="([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])", '
    r'ATTR\{device/sriov_numvfs\}="([0-9]+)"$'
)
MODPROBE_LINE_RE = re.compile(r"^options[ \t]+([A-Za-z0-9_]+)[ \t]+max_vfs=([0-9]+(?:,[0-9]+)*)[ \t]*$")
DISABLED_PREFIX = "# Disabled by SR-IOV Console (it now sets this VF count in %s): " % UDEV_RULES_PATH

# Drivers whose max_vfs module parameter creates VFs on kernels older than 3.8, with the
# maximum VF count per port used when sriov_totalvfs is absent.
LEGACY_MAX_VFS = {"igb": 7, "ixgbe": 63}

SYS_PCI = "/sys/bus/pci/devices"
SYS_NET = "/sys/class/net"
ACPI_TABLES = "/sys/firmware/acpi/tables"
GRUB_DEFAULT = "/etc/default/grub"
GRUB_DIR = "/etc/default/grub.d"
GRUB_VAR = "GRUB_CMDLINE_LINUX_DEFAULT"
KERNEL_CMDLINE_FILE = "/etc/kernel/cmdline"
KERNEL_INSTALL_HOOKS = ("/usr/lib/kernel/install.d/20-grub.install", "/usr/lib/kernel/install.d/90-loaderentry.install")
BACKUP_SUFFIX = ".sriov-console.bak"
EFI_DIR_FOR_ID = {"rhel": "redhat", "centos": "centos", "rocky": "rocky", "almalinux": "almalinux",
                  "fedora": "fedora", "ol": "redhat", "opensuse-leap": "opensuse", "sles": "sles"}

IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
PCI_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
KARG_RE = re.compile(r"^[A-Za-z0-9_.-]+(=[A-Za-z0-9_.,:/+-]+)?$")
ASSIGN_RE = re.compile(r"^[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
VALUE_RE = re.compile(r"""^("(?:[^"\\]|\\.)*"|'[^']*'|[^\s"'#;`$\\]*)(.*)$""")
VAR_REF_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
IP_RE = re.compile(r"^[0-9A-Fa-f:.]{2,45}$")
ECHO_NUMVFS_RE = re.compile(r"echo\s+[\"']?(\d+)[\"']?\s*>+\s*[\"']?(\S*sriov_numvfs)")
PCI_ID_RE = re.compile(r"^([0-9a-fA-F]{4}):([0-9a-fA-F]{4})(?::([0-9a-fA-F]{4}))?(?::([0-9a-fA-F]{4}))?")

MAX_REQUEST_BYTES = 1024 * 1024
# Every limit of the agent fits inside the controller's operation timeout (120 s by default): an
# operation gets AGENT_BUDGET seconds from the start of the run (the wait for the host lock
# included); every device access that can block is bounded by what is left of it, minus
# BUDGET_RESERVE to read back and report.
AGENT_BUDGET = 105.0
BUDGET_RESERVE = 5.0
SYSFS_WRITE_TIMEOUT = 40.0
SYSFS_READ_TIMEOUT = 5.0
MIN_WRITE_SECONDS = 1.0
# i40e answers EAGAIN at once while a VF reset or an earlier VF change is pending
# (i40e_pci_sriov_configure: "Unable to configure VFs, other operation is pending"): retried
# after these pauses, then reported as driver_busy.
EAGAIN_BACKOFF = (0.5, 1.0, 2.0, 4.0)
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
# Arguments that hand every PCI function with a listed vendor:device to a passthrough driver at boot.
PASSTHROUGH_ID_KARGS = ("vfio-pci.ids", "vfio_pci.ids", "pci-stub.ids", "pci_stub.ids")

# How a VF count change affects the PF's link, per PF driver (estimates for the console's warning;
# None: not known, assume it drops). igb and ixgbe close and reopen the PF to re-partition queues
# (igb_sriov_reinit / ixgbe_sriov_reinit), i40e and ice reset the PF; an autonegotiating link is
# back after a few seconds. mlx5 in legacy SR-IOV mode keeps the uplink up.
LINK_DROP_SECONDS = {"igb": 3, "ixgbe": 3, "i40e": 5, "ice": 5, "mlx5_core": 0}

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_REQUEST = 2


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

    write_timeout = SYSFS_WRITE_TIMEOUT
    read_timeout = SYSFS_READ_TIMEOUT

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
        """A plain write (no bound): device attributes go through write_sysfs."""
        fd = os.open(self.path(path), os.O_WRONLY)
        try:
            os.write(fd, data.encode("utf-8", "surrogateescape"))
        finally:
            os.close(fd)

    # A device attribute can block: sriov_numvfs_store() holds the device lock while the driver
    # enables or disables VFs, sriov_numvfs_show() takes it too since Linux 5.15 (PCI/IOV:
    # "Serialize sysfs sriov_numvfs reads vs writes"), and removing a VF bound to vfio-pci waits,
    # first interruptibly and then not, until QEMU releases it (vfio_unregister_group_dev). A
    # thread stuck there would keep this process (and the SSH session) from exiting, so bounded
    # accesses run in a child process of their own that may outlive the agent.
    def write_sysfs(self, path, data, timeout):
        """Write a device attribute within timeout seconds; OSError(ETIMEDOUT) when the kernel
        has not answered by then (the write stays pending in the kernel)."""
        self._child_io(path, data.encode("ascii"), timeout)

    def read_sysfs(self, path, timeout):
        """Read a device attribute within timeout seconds; OSError(ETIMEDOUT) otherwise."""
        return self._child_io(path, None, timeout).decode("utf-8", "replace")

    def _child_io(self, path, data, timeout):
        real = self.path(path)
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            _child_io_main(real, data, rfd, wfd)
        os.close(wfd)
        chunks = []
        finished = False
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                ready, _w, _x = select.select([rfd], [], [], left)
                if not ready:
                    continue
                chunk = os.read(rfd, 65536)
                if not chunk:
                    finished = True
                    break
                chunks.append(chunk)
        finally:
            os.close(rfd)
        if not finished:
            _reap(pid, block=False)
            raise OSError(errno.ETIMEDOUT, "the kernel did not answer in %.1f s" % timeout, path)
        _reap(pid, block=True)
        payload = b"".join(chunks)
        status, _sep, rest = payload.partition(b"\n")
        if status == b"ok":
            return rest
        match = re.match(br"^err (\d+) ?(.*)$", status)
        if match:
            raise OSError(int(match.group(1)), match.group(2).decode("utf-8", "replace") or None, path)
        raise OSError(errno.EIO, "the device access helper failed", path)

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

    def is_executable(self, path):
        try:
            return bool(os.stat(self.path(path)).st_mode & 0o111)
        except OSError:
            return False

    def list_dir(self, path):
        return sorted(os.listdir(self.path(path)))

    def read_link(self, path):
        return os.readlink(self.path(path))

    def remove(self, path):
        os.remove(self.path(path))

    def make_dirs(self, path):
        os.makedirs(self.path(path), exist_ok=True)

    def remove_dir(self, path):
        os.rmdir(self.path(path))

    def ensure_path(self, default):
        """A PATH for program look-ups when the environment has none (udev(7): RUN programs get
        only the device's properties; without PATH, which() and exec fall back to /bin:/usr/bin,
        where RHEL has no ip or modprobe)."""
        if not os.environ.get("PATH"):
            os.environ["PATH"] = default

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

    def ssh_connection(self):
        """SSH_CONNECTION ("client-ip client-port server-ip server-port") of the session this agent
        runs in, or None. sudo resets the environment, so the ancestors' environments are read
        too (root may read them)."""
        if "SSH_CONNECTION" in os.environ:  # set, even empty: this is the session's own word
            return os.environ["SSH_CONNECTION"].strip() or None
        pid = os.getppid()
        for _hop in range(16):
            if pid <= 1:
                break
            try:
                with open("/proc/%d/environ" % pid, "rb") as f:
                    env = f.read()
            except OSError:
                env = b""
            for item in env.split(b"\0"):
                if item.startswith(b"SSH_CONNECTION="):
                    return item[len(b"SSH_CONNECTION="):].decode("ascii", "replace").strip() or None
            try:
                with open("/proc/%d/stat" % pid, "r") as f:
                    pid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                break
        return None

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
        if not os.path.isdir(os.path.dirname(path)):
            os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
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


def _child_io_main(real, data, rfd, wfd):
    """The device-access child: detach from the SSH session (its stdio and every inherited file,
    the host lock included), do the one read or write, report on the pipe, exit."""
    try:
        os.close(rfd)
        os.setsid()
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        try:
            inherited = [int(name) for name in os.listdir("/proc/self/fd")]
        except (OSError, ValueError):
            inherited = list(range(3, 256))
        for fd in inherited:
            if fd > 2 and fd != wfd:
                try:
                    os.close(fd)
                except OSError:
                    pass
        try:
            if data is None:
                with open(real, "rb") as f:
                    payload = b"ok\n" + f.read(65536)
            else:
                fd = os.open(real, os.O_WRONLY)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
                payload = b"ok\n"
        except OSError as exc:
            payload = ("err %d %s\n" % (exc.errno or errno.EIO, exc.strerror or "")).encode("utf-8", "replace")
        try:
            os.write(wfd, payload)
        except OSError:
            pass
    finally:
        os._exit(0)


def _reap(pid, block):
    try:
        os.waitpid(pid, 0 if block else os.WNOHANG)
    except OSError:
        pass


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


class Deadline(object):
    """What is left of the operation's budget (AGENT_BUDGET from the start of the run)."""

    def __init__(self, system, seconds):
        self.system = system
        self.end = system.monotonic() + seconds

    def left(self):
        return self.end - self.system.monotonic()

    def bound(self, cap, reserve=BUDGET_RESERVE):
        return max(0.0, min(cap, self.left() - reserve))


# ---------------------------------------------------------------------------------------------
# Small helpers over a System
# ---------------------------------------------------------------------------------------------


def _read(system, path, default=None):
    try:
        return system.read_text(path).strip()
    except (OSError, UnicodeError):
        return default


def _parse_int(value):
    if value is None:
        return None
    value = value.strip()
    try:
        return int(value, 0) if value.startswith("0x") else int(value)
    except ValueError:
        return None


def _read_int(system, path):
    return _parse_int(_read(system, path))


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


def _run_ok(system, argv, timeout=QUERY_TIMEOUT):
    """stdout of a query program, or None when it is missing or fails."""
    if not system.which(argv[0]):
        return None
    rc, out, _err = system.run(argv, timeout)
    return out if rc == 0 else None


class _FileTxn(object):
    """Files changed by one operation, restorable as a whole when a later step fails."""

    def __init__(self, system):
        self.system = system
        self.saved = {}  # path -> previous text, or None when the file did not exist
        self.undo = []  # argv lists that undo a program's effect (systemctl disable -> enable)

    def write(self, path, text, what, mode=0o644):
        if path not in self.saved:
            try:
                self.saved[path] = self.system.read_text(path)
            except OSError:
                self.saved[path] = None
        _write_file(self.system, path, text, what, mode)

    def remove(self, path):
        if path not in self.saved:
            try:
                self.saved[path] = self.system.read_text(path)
            except OSError:
                self.saved[path] = None
        try:
            self.system.remove(path)
        except OSError as exc:
            raise _readonly_error(exc, path, "managed file") from None

    def backup(self, path, actions):
        """Copy path to path + BACKUP_SUFFIX (0600: it may hold secrets) unless a backup exists."""
        backup = path + BACKUP_SUFFIX
        if self.system.exists(backup):
            return backup
        self.write(backup, self.system.read_text(path), "backup", mode=0o600)
        actions.append("backed up %s to %s" % (path, backup))
        return backup

    def rollback(self, actions):
        for path in sorted(self.saved):
            text = self.saved[path]
            try:
                if text is None:
                    if self.system.exists(path):
                        self.system.remove(path)
                else:
                    self.system.atomic_write(path, text)
                actions.append("rolled back %s to its previous content" % path)
            except OSError as exc:
                actions.append("could not roll back %s: %s" % (path, exc.strerror or exc))
        for argv in reversed(self.undo):
            rc, _out, err = self.system.run(argv, QUERY_TIMEOUT)
            actions.append("undid: %s%s" % (" ".join(argv), "" if rc == 0 else " (failed: %s %s)" % (
                rc, err.strip()[-200:])))
        self.saved = {}
        self.undo = []


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


def _header_line(stripped, header):
    return stripped.startswith("#") and (
        MANAGED_MARKER in stripped or stripped in [h.strip() for h in header.splitlines()])


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
        elif stripped and not _header_line(stripped, UDEV_HEADER):
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
        elif stripped and not _header_line(stripped, MODPROBE_HEADER):
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
    for name in _list(system, SYS_NET):
        dev = "%s/%s/device" % (SYS_NET, name)
        if not system.exists(dev) or system.exists(dev + "/physfn"):
            continue
        if _link_base(system, dev + "/driver") == driver:
            pci = _link_base(system, dev)
            if pci:
                ports.add(pci)
    return sorted(ports)


def _max_vfs_values(values, ports, form):
    """{pci: count} that max_vfs=values gives the ports: a single (uint) value applies to every
    port of the driver; an array gives one per port in PCI order, the ports after the list keep
    the default 0 (module_param_array)."""
    if form == "single":
        return dict((pci, values[0]) for pci in ports) if values else {}
    return dict((pci, values[i] if i < len(values) else 0) for i, pci in enumerate(ports))


def _managed_counts(system, legacy, param_forms=None):
    """{pci: persisted count} from the managed persistence file for this kernel."""
    if not legacy:
        return _read_udev(system)[1]
    counts = {}
    for driver, values in _read_modprobe(system)[1].items():
        form = (param_forms or {}).get(driver) or ("array" if len(values) > 1 else "single")
        counts.update(_max_vfs_values(values, _legacy_ports(system, driver), form))
    return counts


# ---------------------------------------------------------------------------------------------
# Kernels older than 3.8: the max_vfs module parameter and the initramfs
# ---------------------------------------------------------------------------------------------


def _max_vfs_param(system, driver):
    """The type of driver's max_vfs parameter from `modinfo -F parm`: the in-tree igb and ixgbe
    declare it `uint` (one value for every port; a list is rejected and the module does not
    load), Intel's out-of-tree drivers `array of int` (one value per port).
    -> {"type": "uint" | "array of int" | ..., "form": "single" | "array"} or {"error": ...}"""
    if not system.which("modinfo"):
        return {"type": None, "form": None, "error": "modinfo is not installed"}
    rc, out, err = system.run(["modinfo", "-F", "parm", driver], QUERY_TIMEOUT)
    if rc != 0:
        return {"type": None, "form": None,
                "error": "modinfo -F parm %s failed (%s): %s" % (driver, rc, (err or out).strip()[-300:])}
    for line in out.splitlines():
        if line.startswith("max_vfs:"):
            match = re.search(r"\(([^()]*)\)\s*$", line)
            kind = match.group(1).strip() if match else None
            if kind is None:
                break
            return {"type": kind, "form": "array" if kind.startswith("array") else "single", "error": None}
    return {"type": None, "form": None, "error": "modinfo -F parm %s names no max_vfs parameter with a type" % driver}


def _initramfs(system, release):
    """Where the running kernel's initramfs is and which tools rebuild and list it."""
    if system.which("dracut"):
        return {"tool": "dracut", "image": "/boot/initramfs-%s.img" % release,
                "lister": "lsinitrd" if system.which("lsinitrd") else None,
                "argv": ["dracut", "-f", "/boot/initramfs-%s.img" % release, release]}
    if system.which("update-initramfs"):
        return {"tool": "update-initramfs", "image": "/boot/initrd.img-%s" % release,
                "lister": "lsinitramfs" if system.which("lsinitramfs") else None,
                "argv": ["update-initramfs", "-u", "-k", release]}
    return {"tool": None, "image": None, "lister": None, "argv": None}


def _driver_in_initramfs(system, info, driver):
    """True / False, or None when it cannot be told (no lister, or it failed)."""
    if not info["lister"] or not info["image"]:
        return None
    rc, out, _err = system.run([info["lister"], info["image"]], QUERY_TIMEOUT)
    if rc != 0:
        return None
    return bool(re.search(r"/%s\.ko(\.[a-z]+)?\s*$" % re.escape(driver), out, re.M))


def _refresh_initramfs(system, release, driver, txn, actions):
    """The initramfs keeps a copy of /etc/modprobe.d: when the driver loads from it, the old
    max_vfs would boot. -> the facts, and the choice made, for the result."""
    info = _initramfs(system, release)
    contains = _driver_in_initramfs(system, info, driver)
    facts = {"tool": info["tool"], "image": info["image"], "contains_driver": contains,
             "regenerated": False, "argv": None}
    if contains is False:
        facts["choice"] = "%s is not in %s: the initramfs does not need rebuilding" % (driver, info["image"])
        return facts
    if info["tool"] is None:
        facts["choice"] = ("neither dracut nor update-initramfs is installed: an initramfs that loads %s "
                           "would still boot the old max_vfs" % driver)
        return facts
    rc, out, err = system.run(info["argv"], TOOL_TIMEOUT)
    if rc != 0:
        txn.rollback(actions)
        raise AgentError("initramfs_failed", "%s failed (%s), so the initramfs would still boot the old "
                         "max_vfs of %s; the modprobe.d file was restored." % (
                             " ".join(info["argv"]), "timed out" if rc is None else "exit status %d" % rc, driver),
                         {"argv": info["argv"], "exit_status": rc, "stderr": err[-2000:], "actions": list(actions)})
    facts["regenerated"] = True
    facts["argv"] = info["argv"]
    facts["choice"] = ("%s is in the initramfs: rebuilt it" % driver if contains
                       else "cannot list the initramfs (%s): rebuilt it to be safe" % (info["lister"] or "no lister"))
    actions.append("rebuilt the initramfs so that it carries the new max_vfs: %s" % " ".join(info["argv"]))
    return facts


# ---------------------------------------------------------------------------------------------
# PCI functions
# ---------------------------------------------------------------------------------------------

# VF drivers that mean "handed to a guest (or about to be)": never treat such a VF as free.
PASSTHROUGH_DRIVERS = ("vfio-pci", "pci-stub")


def _netdev_of(system, dev):
    names = _list(system, dev + "/net")
    return names[0] if names else None


def _binding(driver, netdev):
    """How the host holds a PF: its network driver ("netdev"), nobody ("no_driver"), a passthrough
    driver ("vfio" / "pci-stub"), or another driver without a network interface."""
    if driver is None:
        return "no_driver"
    if driver == "vfio-pci":
        return "vfio"
    if driver == "pci-stub":
        return "pci-stub"
    return "netdev" if netdev else "other_driver"


def _not_capable_reason(totalvfs, driver):
    """Why a function with an SR-IOV capability cannot have VFs now (None when it can)."""
    if totalvfs is None or totalvfs > 0:
        return None
    text = ("sriov_totalvfs is 0: the device has the SR-IOV capability but no VF can be enabled now. "
            "SR-IOV is off in the BIOS/UEFI or in the NIC's firmware")
    if driver == "mlx5_core":
        text += " (mlxconfig: SRIOV_EN=1 NUM_OF_VFS=N)"
    return text + ", or the driver limits it to 0; enable it there and reboot."


def _sriov_vf_device(system, dev):
    value = _read(system, dev + "/sriov_vf_device")
    if not value or not re.match(r"^(0x)?[0-9a-fA-F]{1,4}$", value):
        return None
    value = value.lower()
    return (value[2:] if value.startswith("0x") else value).zfill(4)


def _read_numvfs(system, dev, deadline=None):
    """sriov_numvfs through a bounded read: -> (count or None, busy)."""
    path = dev + "/sriov_numvfs"
    reader = getattr(system, "read_sysfs", None)
    if reader is None:
        return _read_int(system, path), False
    cap = getattr(system, "read_timeout", SYSFS_READ_TIMEOUT)
    timeout = cap if deadline is None else max(0.5, deadline.bound(cap, reserve=1.0))
    try:
        return _parse_int(reader(path, timeout)), False
    except OSError as exc:
        return None, exc.errno == errno.ETIMEDOUT


def _pci_functions(system):
    """[(pci, device dir)] of every PCI function the kernel lists (empty on trees without it)."""
    return [(pci, SYS_PCI + "/" + pci) for pci in _list(system, SYS_PCI) if PCI_RE.match(pci)]


# ---------------------------------------------------------------------------------------------
# Network topology: bonds, bridges, addresses, routes, and the SSH connection the agent runs over
# ---------------------------------------------------------------------------------------------


def _netdev_kind(system, name):
    uevent = _read(system, "%s/%s/uevent" % (SYS_NET, name)) or ""
    match = re.search(r"^DEVTYPE=(\S+)$", uevent, re.M)
    if match:
        return match.group(1)
    if system.exists("%s/%s/bonding" % (SYS_NET, name)):
        return "bond"
    if system.exists("%s/%s/bridge" % (SYS_NET, name)):
        return "bridge"
    if name == "ovs-system":
        return "openvswitch"
    return None


def _addresses(system):
    """{netdev: ["10.0.0.5/24", ...]} of global-scope addresses (`ip -o addr show`), or None."""
    out = _run_ok(system, ["ip", "-o", "addr", "show"])
    if out is None:
        return None
    found = {}
    for line in out.splitlines():
        match = re.match(r"^\d+:\s+(\S+)\s+(inet6?)\s+(\S+)(.*)$", line)
        if not match:
            continue
        scope = re.search(r"\bscope\s+(\S+)", match.group(4))
        if scope and scope.group(1) in ("host", "link"):
            continue
        found.setdefault(match.group(1).split("@")[0], []).append(match.group(3))
    return found


def _default_route_devices(system):
    """Devices a default route leaves through (/proc/net/route, /proc/net/ipv6_route)."""
    devices = set()
    for line in (_read(system, "/proc/net/route") or "").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000":
            devices.add(fields[0])
    for line in (_read(system, "/proc/net/ipv6_route") or "").splitlines():
        fields = line.split()
        if len(fields) >= 10 and fields[0] == "0" * 32 and fields[1] == "00" and fields[9] != "lo":
            if not int(fields[8], 16) & 0x0200:  # RTF_REJECT
                devices.add(fields[9])
    return sorted(devices)


def _ipv4_int(text):
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        return None
    return (int(parts[0]) << 24) | (int(parts[1]) << 16) | (int(parts[2]) << 8) | int(parts[3])


def _route_device(system, address):
    """The device the kernel routes address through: `ip -o route get`, else the longest IPv4
    prefix of /proc/net/route."""
    out = _run_ok(system, ["ip", "-o", "route", "get", address])
    if out is not None:
        match = re.search(r"\bdev\s+(\S+)", out)
        return match.group(1) if match else None
    target = _ipv4_int(address)
    if target is None:
        return None
    best = None
    for line in (_read(system, "/proc/net/route") or "").splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:  # little-endian hex words, as the kernel prints them
            dest = int("".join(reversed([fields[1][i:i + 2] for i in range(0, 8, 2)])), 16)
            mask = int("".join(reversed([fields[7][i:i + 2] for i in range(0, 8, 2)])), 16)
        except ValueError:
            continue
        if target & mask == dest and (best is None or mask > best[0]):
            best = (mask, fields[0])
    return best[1] if best else None


def _ssh_path(system, addresses):
    """Which devices the SSH connection this agent runs over arrives through."""
    getter = getattr(system, "ssh_connection", None)
    raw = getter() if getter else None
    if not raw:
        return {"known": False, "devices": [], "reason": "no SSH_CONNECTION: the agent does not run over SSH, "
                "or neither its environment nor its parents' carry it"}
    parts = raw.split()
    if len(parts) != 4 or not (IP_RE.match(parts[0]) and IP_RE.match(parts[2])):
        return {"known": False, "devices": [], "reason": "unreadable SSH_CONNECTION %r" % raw[:100]}
    client, server = [re.sub(r"^::ffff:", "", p) for p in (parts[0], parts[2])]
    route = _route_device(system, client)
    owners = sorted(d for d, addrs in (addresses or {}).items() if any(a.split("/")[0] == server for a in addrs))
    devices = sorted(set(([route] if route else []) + owners))
    return {"known": bool(devices), "client": client, "server": server,
            "server_port": int(parts[3]) if parts[3].isdigit() else None,
            "route_device": route, "address_devices": owners, "devices": devices,
            "reason": None if devices else "cannot tell which device routes %s" % client}


def _net_topology(system):
    masters, kinds, uppers = {}, {}, {}
    for name in _list(system, SYS_NET):
        base = SYS_NET + "/" + name
        master = _link_base(system, base + "/master")
        if master:
            masters[name] = master
            uppers.setdefault(name, set()).add(master)
        for entry in _list(system, base):
            if entry.startswith("upper_"):
                uppers.setdefault(name, set()).add(entry[len("upper_"):])
        kinds[name] = _netdev_kind(system, name)
    addresses = _addresses(system)
    return {"masters": masters, "kinds": kinds, "uppers": uppers, "addresses": addresses or {},
            "addresses_known": addresses is not None, "default_route_devices": _default_route_devices(system),
            "ssh": _ssh_path(system, addresses)}


def _stacked_on(topology, name):
    """Every device stacked on name (bond, bridge, VLAN ...), transitively."""
    seen = set()
    todo = list(topology["uppers"].get(name, ()))
    while todo:
        dev = todo.pop()
        if dev not in seen and dev != name:
            seen.add(dev)
            todo.extend(topology["uppers"].get(dev, ()))
    return sorted(seen)


def _link_facts(topology, name, driver):
    """What a VF count change on this PF does to the host's own traffic."""
    if name is None:
        return None
    stacked = _stacked_on(topology, name)
    devices = [name] + stacked
    master = topology["masters"].get(name)
    ssh = topology["ssh"]
    drop = LINK_DROP_SECONDS.get(driver)
    return {
        "master": {"name": master, "kind": topology["kinds"].get(master)} if master else None,
        "stacked": [{"name": d, "kind": topology["kinds"].get(d)} for d in stacked],
        "addresses": [{"dev": d, "address": a} for d in devices for a in topology["addresses"].get(d, [])],
        "addresses_known": topology["addresses_known"],
        "default_route": any(d in topology["default_route_devices"] for d in devices),
        "management": (any(d in ssh["devices"] for d in devices) if ssh["known"] else None),
        "link_drops_on_vf_change": None if drop is None else drop > 0,
        "link_drop_seconds": drop,
    }


# ---------------------------------------------------------------------------------------------
# Guests (virsh): running domains, stopped domains that start at boot, libvirt network pools
# ---------------------------------------------------------------------------------------------


class _GuestsUnknown(Exception):
    """Internal: which PCI devices guests hold cannot be established (fail closed)."""


# Network forward modes whose pool hands out host interfaces or VFs (libvirt formatnetwork:
# hostdev = PCI passthrough of a VF; passthrough/private/vepa/bridge with <interface>/<pf> = macvtap).
POOL_MODES = ("hostdev", "passthrough", "private", "vepa", "bridge")


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
    found = set()
    devices = [SYS_NET + "/" + n + "/device" for n in _list(system, SYS_NET)]
    for dev in devices + [d for _p, d in _pci_functions(system)]:
        for entry in _list(system, dev):
            if re.match(r"^virtfn\d+$", entry) and _link_base(system, dev + "/" + entry + "/driver") in \
                    PASSTHROUGH_DRIVERS:
                pci = _link_base(system, dev + "/" + entry)
                if pci:
                    found.add(pci)
    return sorted(found)


def _vf_index(system):
    """{"by_netdev": {VF netdev: VF pci}, "by_pf": {PF netdev: [VF pci]}} from sysfs."""
    by_netdev, by_pf = {}, {}
    for name in _list(system, SYS_NET):
        dev = SYS_NET + "/" + name + "/device"
        if not system.exists(dev):
            continue
        if system.exists(dev + "/physfn"):
            by_netdev[name] = _link_base(system, dev)
            continue
        vfs = [_link_base(system, dev + "/" + e) for e in _list(system, dev) if re.match(r"^virtfn\d+$", e)]
        if vfs:
            by_pf[name] = sorted(p for p in vfs if p)
    return {"by_netdev": by_netdev, "by_pf": by_pf}


def _virsh(system, args):
    rc, out, err = system.run(["virsh"] + args, QUERY_TIMEOUT)
    if rc != 0:
        raise _GuestsUnknown("virsh %s failed (%s): %s" % (" ".join(args), rc, (err or out).strip()[-500:]))
    return out


def _parse_xml(text, what):
    try:
        return ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise _GuestsUnknown("the XML of %s does not parse: %s" % (what, exc)) from None


def _pci_of(address, what):
    if address is None or address.get("type") not in (None, "pci"):
        raise _GuestsUnknown("%s has a PCI host device without a readable PCI address" % what)
    try:
        return "%04x:%02x:%02x.%x" % (int(address.get("domain", "0"), 0), int(address.get("bus"), 0),
                                      int(address.get("slot"), 0), int(address.get("function"), 0))
    except (TypeError, ValueError):
        raise _GuestsUnknown("%s has a PCI host device with an unparseable address %r" % (
            what, dict(address.attrib))) from None


def _domain(system, ident, inactive):
    """-> {"name", "uuid", "hostdev_pci", "netdevs", "networks"} of one domain; raises _GuestsUnknown.
    A VF reaches a guest as <hostdev>, <interface type='hostdev'> (by PCI address), as macvtap
    <interface type='direct'><source dev=.../> (by netdev name), or from a libvirt network
    <interface type='network'> (the live XML of a running domain shows the device it got)."""
    args = ["dumpxml", "--inactive", "--domain", ident] if inactive else ["dumpxml", "--domain", ident]
    root = _parse_xml(_virsh(system, args), "domain %s" % ident)
    name = (root.findtext("name") or "").strip() or ident
    what = "domain %s" % name
    hostdev_pci, netdevs, networks, unresolved = [], [], [], []
    for element in root.iter("hostdev"):
        if element.get("type") not in (None, "pci"):
            continue  # USB / SCSI host devices hold no PCI function
        source = element.find("source")
        hostdev_pci.append(_pci_of(source.find("address") if source is not None else None, what))
    for element in root.iter("interface"):
        kind = element.get("type")
        source = element.find("source")
        if source is not None and source.get("network"):
            networks.append(source.get("network"))  # (the live XML of a network interface keeps its name)
        if kind == "hostdev":
            hostdev_pci.append(_pci_of(source.find("address") if source is not None else None, what))
        elif kind == "direct":
            dev = source.get("dev") if source is not None else None
            if not dev:
                raise _GuestsUnknown("%s has a macvtap (direct) interface without a source device" % what)
            netdevs.append({"dev": dev, "mode": source.get("mode") or "vepa", "network": source.get("network")})
        elif kind == "network" and source is not None and source.get("network"):
            unresolved.append(source.get("network"))  # which device it got is not in this XML
    return {"name": name, "uuid": (root.findtext("uuid") or "").strip() or ident,
            "hostdev_pci": sorted(set(hostdev_pci)), "netdevs": netdevs, "networks": networks,
            "unresolved_networks": unresolved}


def _network_pool(system, name, vf_index):
    """A libvirt network (`virsh net-dumpxml`): which VFs its pool hands out, and, on an active
    network, which of them are connected (the read-only `connections` attribute)."""
    root = _parse_xml(_virsh(system, ["net-dumpxml", name]), "network %s" % name)
    forward = root.find("forward")
    mode = (forward.get("mode") or "nat") if forward is not None else None
    pool = {"name": name, "mode": mode, "pfs": [], "vf_pci": [], "in_use_pci": None,
            "connections": _parse_int(root.get("connections") or "0") or 0, "managed": _is_managed_network(root)}
    if forward is None or mode not in POOL_MODES:
        return pool
    vfs, in_use, counted = [], [], False
    for pf in forward.findall("pf"):
        if pf.get("dev"):
            pool["pfs"].append(pf.get("dev"))
            vfs.extend(vf_index["by_pf"].get(pf.get("dev"), []))
    members = [(vf_index["by_netdev"].get(i.get("dev")), i) for i in forward.findall("interface")]
    members += [(_pci_of(a, "network %s" % name), a) for a in forward.findall("address")]
    for pci, element in members:
        if pci:
            vfs.append(pci)
        if element.get("connections") is not None:
            counted = True
            if pci and (_parse_int(element.get("connections")) or 0) > 0:
                in_use.append(pci)
    pool["vf_pci"] = sorted(set(vfs))
    pool["in_use_pci"] = sorted(set(in_use)) if counted else None
    return pool


def _resolve(guest, vf_index, pools):
    """Adds vf_pci (VFs the domain names) and uses ([{pci, via}]) to a domain record."""
    uses = [{"pci": pci, "via": "hostdev"} for pci in guest["hostdev_pci"]]
    for nd in guest["netdevs"]:
        pci = vf_index["by_netdev"].get(nd["dev"])
        if pci:
            uses.append({"pci": pci, "via": "macvtap %s (%s)" % (nd["dev"], nd["mode"])})
    named = set(u["pci"] for u in uses)
    for net in guest.pop("unresolved_networks", []):
        pool = pools.get(net) or {}
        candidates = pool.get("in_use_pci") if pool.get("in_use_pci") is not None else pool.get("vf_pci")
        for pci in candidates or []:
            if pci not in named:
                uses.append({"pci": pci, "via": "network %s (one of its VFs; libvirt does not say which)" % net})
    guest["vf_pci"] = sorted(named)
    guest["uses"] = uses
    return guest


def _pools_for(system, domains, vf_index, pools):
    for net in sorted(set(n for d in domains for n in d["networks"])):
        if net not in pools:
            pools[net] = _network_pool(system, net, vf_index)


def _guests(system, vf_index=None, defined=False):
    """-> {"available", "guests" (running) or None, "error", "defined" (stopped, autostart) or None,
    "defined_error", "networks": {name: pool}}.

    Fails closed: guests is None (unknown) whenever the agent cannot establish which PCI devices
    running guests hold -- virsh failed, a domain's or network's XML could not be read or parsed,
    or virsh is missing while qemu processes run or VFs are bound to a passthrough driver."""
    out = {"available": bool(system.which("virsh")), "guests": [], "error": None,
           "defined": [] if defined else None, "defined_error": None, "networks": {}}
    if not out["available"]:
        qemu = _qemu_processes(system)
        bound = _passthrough_vfs(system)
        if qemu or bound:
            why = []
            if qemu:
                why.append("%d qemu process%s running (pid %s)" % (
                    len(qemu), "" if len(qemu) == 1 else "es", ", ".join(qemu[:10])))
            if bound:
                why.append("VFs bound to %s: %s" % ("/".join(PASSTHROUGH_DRIVERS), ", ".join(bound[:10])))
            out["guests"] = None
            out["error"] = "virsh is not installed, but guests may be running (%s)" % "; ".join(why)
            if defined:
                out["defined"] = None
                out["defined_error"] = out["error"]
        return out
    vf_index = vf_index or _vf_index(system)
    try:
        running = [_domain(system, i.strip(), False) for i in _virsh(system, ["list", "--uuid"]).splitlines()
                   if i.strip()]
        _pools_for(system, running, vf_index, out["networks"])
        out["guests"] = [_resolve(d, vf_index, out["networks"]) for d in running]
    except _GuestsUnknown as exc:
        out["guests"], out["error"] = None, str(exc)
    if defined:
        try:
            stopped = [_domain(system, i.strip(), True) for i in _virsh(
                system, ["list", "--inactive", "--autostart", "--uuid"]).splitlines() if i.strip()]
            _pools_for(system, stopped, vf_index, out["networks"])
            out["defined"] = [_resolve(d, vf_index, out["networks"]) for d in stopped]
        except _GuestsUnknown as exc:
            out["defined"], out["defined_error"] = None, str(exc)
    return out


def _usage_by_pci(guests):
    usage = {}
    for guest in guests or []:
        for use in guest.get("uses", [{"pci": p} for p in guest.get("hostdev_pci", [])]):
            names = usage.setdefault(use["pci"], [])
            if guest["name"] not in names:
                names.append(guest["name"])
    return usage


def _uses_by_pci(guests):
    usage = {}
    for guest in guests or []:
        for use in guest.get("uses", []):
            usage.setdefault(use["pci"], []).append({"guest": guest["name"], "via": use["via"]})
    return usage


# ---------------------------------------------------------------------------------------------
# Per-VF settings (iproute2), VF drivers (sysfs), libvirt networks, and the managed VF state
# ---------------------------------------------------------------------------------------------
# The VF settings a PF driver holds (MAC, VLAN, spoofchk, trust, link state, rates) live in the PF
# driver and are lost when the VFs are destroyed (sriov_numvfs 0, reboot); a VF's driver_override
# goes with the VF's PCI device. The console keeps what it persists in one managed JSON file keyed
# by PF PCI address and VF index. It comes back through systemd, not through a udev RUN program:
# udev(7) says RUN is for very short tasks, runs it without PATH (only the device's properties as
# environment), kills it after event_timeout, and nothing orders it before libvirt. So:
# - one generic udev rule: every VF add event (a PCI device with a physfn link; which addresses the
#   VFs get follows First VF Offset/VF Stride, which may change with NumVFs, so no rule names one)
#   tags the device for systemd and wants the template unit instance of that VF (systemd.device(5):
#   TAG+="systemd", SYSTEMD_WANTS); it applies what is persisted for that VF (a VF re-created by a
#   later sriov_numvfs write);
# - a boot unit ordered after systemd-udev-trigger.service that waits for the queued events
#   (udevadm settle) and applies every persisted VF setting, VF driver and PF MTU before libvirt's
#   daemons and network-pre.target, so hostdev networks and autostart guests find configured VFs.
# Both run the installed agent copy with /usr/bin/python3 (not the login's python3, which may be a
# virtualenv) and a full PATH.

VF_STATE_PATH = "/etc/sriov-console/vf-settings.json"
VF_RULES_PATH = "/etc/udev/rules.d/71-sriov-console-vf.rules"
AGENT_COPY_DIR = "/usr/local/libexec/sriov-console"
AGENT_COPY_PATH = AGENT_COPY_DIR + "/sriov_agent.py"
SYSTEMD_UNIT_DIR = "/etc/systemd/system"
VF_UNIT = "sriov-console-vf@.service"
BOOT_UNIT = "sriov-console-vf-boot.service"
VF_UNIT_PATH = SYSTEMD_UNIT_DIR + "/" + VF_UNIT
BOOT_UNIT_PATH = SYSTEMD_UNIT_DIR + "/" + BOOT_UNIT
SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/libexec/platform-python")  # RHEL 8 without python3 installed
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
UNIT_TIMEOUT = 300
MANAGED_HEADER = "# " + MANAGED_MARKER + ". Do not edit: this file is rewritten by the console.\n"
VF_RULES_HEADER = MANAGED_HEADER + (
    "# Every VF the kernel adds starts " + VF_UNIT.replace("@", "@<vf>") + ", which applies the settings and driver\n"
    "# the console persisted for it (" + VF_STATE_PATH + ").\n")
VF_RULE = ('ACTION=="add", SUBSYSTEM=="pci", TEST=="physfn", TAG+="systemd", '
           'ENV{SYSTEMD_WANTS}+="' + VF_UNIT.replace("@", "@%k") + '"')
VF_UNIT_FORMAT = MANAGED_HEADER + (
    "# Started by " + VF_RULES_PATH + " when the kernel adds VF %i.\n"
    "[Unit]\nDescription=SR-IOV Console: persisted settings and driver of VF %i\n"
    "DefaultDependencies=no\nAfter=local-fs.target\n\n"
    "[Service]\nType=oneshot\nEnvironment=PATH=" + DEFAULT_PATH + "\n"
    "ExecStart={python} " + AGENT_COPY_PATH + " --vf %i apply_persisted\n"
    "TimeoutStartSec=" + str(UNIT_TIMEOUT) + "\n")
BOOT_UNIT_FORMAT = MANAGED_HEADER + (
    "[Unit]\nDescription=SR-IOV Console: persisted VF settings, VF drivers and PF MTUs\n"
    "DefaultDependencies=no\n"
    "After=local-fs.target systemd-modules-load.service systemd-udev-trigger.service\n"
    "Wants=systemd-udev-trigger.service network-pre.target\n"
    "Before=libvirtd.service virtqemud.service virtnetworkd.service network-pre.target\n\n"
    "[Service]\nType=oneshot\nRemainAfterExit=yes\nEnvironment=PATH=" + DEFAULT_PATH + "\n"
    "ExecStart={python} " + AGENT_COPY_PATH + " --boot apply_persisted\n"
    "TimeoutStartSec=" + str(UNIT_TIMEOUT) + "\n\n"
    "[Install]\nWantedBy=multi-user.target\n")
VF_FIELDS = ("mac", "vlan", "qos", "spoofchk", "trust", "link_state", "max_tx_rate", "min_tx_rate")
LINK_STATES = ("auto", "enable", "disable")
NULL_MAC = "00:00:00:00:00:00"
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
NETWORK_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,50}$")
# The console's mark on a libvirt network it defined: libvirt keeps <metadata> elements of
# foreign namespaces verbatim (formatnetwork "General metadata").
NETWORK_MARKER_NS = "https://sriov-console.invalid/xmlns/network/1"


def _int_or(value, default):
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _bool_or_none(value):
    return value if isinstance(value, bool) else None


def _vf_settings(entry):
    """One vfinfo_list entry of `ip -j -d link show` -> settings. iproute2's print_vfinfo() prints
    the MAC as "address" ("mac" before 5.x), the VLAN as vlan_list[0] (or top-level vlan/qos
    without IFLA_VF_VLAN_LIST) and leaves vlan/qos out when 0, the rates as rate {max_tx, min_tx}
    (tx_rate on old kernels), and leaves spoofchk/trust out when the driver reports -1."""
    vlan_info = entry["vlan_list"][0] if entry.get("vlan_list") else entry
    rate = entry.get("rate") if isinstance(entry.get("rate"), dict) else None
    mac = entry.get("address") or entry.get("mac")
    return {
        "admin_mac": mac.lower() if isinstance(mac, str) else None,
        "vlan": _int_or(vlan_info.get("vlan"), 0), "qos": _int_or(vlan_info.get("qos"), 0),
        "spoofchk": _bool_or_none(entry.get("spoofchk")), "trust": _bool_or_none(entry.get("trust")),
        "link_state": entry.get("link_state") if entry.get("link_state") in LINK_STATES else None,
        "max_tx_rate": _int_or((rate or {}).get("max_tx"), _int_or(entry.get("tx_rate"), 0)),
        "min_tx_rate": _int_or(rate.get("min_tx"), 0) if rate is not None else None,
    }


def _ip_link_vfs(system, pf):
    """-> {index: settings} of the PF's VFs from `ip -j -d link show dev <pf>`, or None when ip
    cannot say (no ip, no JSON support, no such interface)."""
    if not pf or not system.which("ip"):
        return None
    rc, out, _err = system.run(["ip", "-j", "-d", "link", "show", "dev", pf], QUERY_TIMEOUT)
    if rc != 0:
        return None
    try:
        doc = json.loads(out)
    except ValueError:
        return None
    if not isinstance(doc, list) or not doc or not isinstance(doc[0], dict):
        return None
    found = {}
    for entry in doc[0].get("vfinfo_list") or []:
        if isinstance(entry, dict) and _int_or(entry.get("vf"), None) is not None:
            found[entry["vf"]] = _vf_settings(entry)
    return found


def _empty_vf_settings():
    return dict((key, None) for key in ("admin_mac", "vlan", "qos", "spoofchk", "trust", "link_state",
                                        "max_tx_rate", "min_tx_rate"))


def _driver_override(system, vf_dev):
    """driver_override of a PCI device: the kernel shows "(null)" when none is set (sysfs-bus-pci)."""
    value = _read(system, vf_dev + "/driver_override")
    return None if value in (None, "", "(null)") else value


def _read_vf_state(system):
    """-> {pf_pci: {"vfs": {index: settings}, "drivers": {index: driver}, "mtu": int}} (index as a string)."""
    text = _read(system, VF_STATE_PATH)
    try:
        doc = json.loads(text) if text else {}
    except ValueError:
        return {}
    pfs = doc.get("pfs") if isinstance(doc, dict) else None
    return pfs if isinstance(pfs, dict) else {}


def _pf_extras(inv, dev, pci, netdev):
    """NUMA placement, whether iproute2 reported the VF settings, autoprobe, the persisted MTU."""
    system = inv.system
    node = _read_int(system, dev + "/numa_node")
    state = inv.vf_state.get(pci) or {}
    return {"numa_node": node if node is not None and node >= 0 else None,
            "local_cpulist": _read(system, dev + "/local_cpulist") or None,
            "vf_settings_known": inv.ip_vfs(netdev) is not None,
            "sriov_drivers_autoprobe": _read_int(system, dev + "/sriov_drivers_autoprobe"),
            "persisted_mtu": _int_or(state.get("mtu"), None)}


def _net_info(system, name):
    """`virsh net-info <name>` -> {"active", "autostart", "persistent"} (None when not said)."""
    out = _virsh(system, ["net-info", name])
    values = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip().lower()] = value.strip().lower()
    flag = lambda key: {"yes": True, "no": False}.get(values.get(key))  # noqa: E731
    return {"active": flag("active"), "autostart": flag("autostart"), "persistent": flag("persistent")}


def _is_managed_network(root):
    if root.find("metadata/{%s}managed" % NETWORK_MARKER_NS) is not None:
        return True
    return MANAGED_MARKER in (root.findtext("description") or "")


def _libvirt_networks(system, guests, vf_index):
    """-> (every libvirt network with its state, pool and the guests that use it, error or None)."""
    if not guests["available"]:
        return [], None
    users = {}
    for guest in (guests["guests"] or []) + (guests["defined"] or []):
        for net in guest.get("networks", []):
            users.setdefault(net, set()).add(guest["name"])
    out = []
    try:
        names = [n.strip() for n in _virsh(system, ["net-list", "--all", "--name"]).splitlines() if n.strip()]
        for name in sorted(set(names)):
            pool = dict(guests["networks"].get(name) or _network_pool(system, name, vf_index))
            pool.update(_net_info(system, name))
            pool["vf_pool"] = pool["mode"] in POOL_MODES and bool(pool["pfs"] or pool["vf_pci"])
            pool["guests"] = sorted(users.get(name, ()))
            out.append(pool)
    except _GuestsUnknown as exc:
        return out, str(exc)
    return out, None


# ---------------------------------------------------------------------------------------------
# Other boot configuration that sets a VF count
# ---------------------------------------------------------------------------------------------
# Each source -> items {"kind", "path", "line", "lines", "text", "counts": {pci: count or None},
# "certain", "active", "how", "disable": {"method", ...} or None, "disable_blocker"}. A count of
# None means "some count the agent cannot read" (e.g. the device maximum).

UDEV_DIRS = ("/etc/udev/rules.d", "/run/udev/rules.d", "/lib/udev/rules.d", "/usr/lib/udev/rules.d")
NM_DIRS = ("/etc/NetworkManager/system-connections", "/run/NetworkManager/system-connections",
           "/usr/lib/NetworkManager/system-connections")
NM_IGNORED_SUFFIXES = ("~", ".bak", ".orig", ".rej", ".swp", ".tmp")
IFCFG_DIR = "/etc/sysconfig/network-scripts"
NETPLAN_DIRS = ("/lib/netplan", "/etc/netplan", "/run/netplan")  # a later directory wins
SYSTEMD_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
RC_LOCAL_PATHS = ("/etc/rc.local", "/etc/rc.d/rc.local")
MODPROBE_DIRS = ("/etc/modprobe.d", "/run/modprobe.d", "/lib/modprobe.d", "/usr/lib/modprobe.d")
UDEV_KEY_RE = re.compile(r'([A-Za-z_]+(?:\{[^}]*\})?)\s*(==|!=|\+=|-=|:=|=)\s*"((?:[^"\\]|\\.)*)"')


def _item(kind, path, lines, text, counts, active, how, disable=None, blocker=None, certain=True):
    values = set(counts.values())
    return {"kind": kind, "path": path, "line": lines[0] if lines else None, "lines": lines,
            "text": text.strip()[:300], "counts": counts, "count": values.pop() if len(values) == 1 else None,
            "pci_addresses": sorted(counts), "certain": certain, "active": active, "how": how,
            "disable": disable, "disable_blocker": blocker}


def _first_wins(system, dirs, suffix):
    """{file name: path} over dirs, the first directory holding a name winning."""
    found = {}
    for directory in dirs:
        for name in _list(system, directory):
            if name.endswith(suffix) and name not in found:
                found[name] = directory + "/" + name
    return found


def _logical_lines(text):
    """[(physical line numbers, joined text)] with backslash-continued lines joined."""
    out, numbers, buf = [], [], ""
    for number, line in enumerate(text.split("\n"), 1):
        numbers.append(number)
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        out.append((numbers, buf + line))
        numbers, buf = [], ""
    if numbers:
        out.append((numbers, buf))
    return out


def _glob(pattern, value):
    return value is not None and any(fnmatch.fnmatchcase(value, p) for p in pattern.split("|"))


def _pf_for_target(pfs, target):
    """The PF a path like /sys/class/net/eno49/device/sriov_numvfs names -> [pci] or None (unknown)."""
    match = re.search(r"/sys/class/net/([^/\s$%]+)/device/sriov_numvfs", target)
    if match:
        return [p["pci"] for p in pfs if p["netdev"] == match.group(1)]
    match = re.search(r"/sys/bus/pci/devices/([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])/sriov_numvfs", target)
    if match:
        return [p["pci"] for p in pfs if p["pci"] == match.group(1)]
    return None


def _udev_match(keys, pf):
    """True / False / None (a key the agent does not evaluate, and nothing failed)."""
    verdict = True
    for key, op, value in keys:
        if op not in ("==", "!="):
            continue
        vendor, device = "0x" + (pf["vendor_id"] or ""), "0x" + (pf["device_id"] or "")
        subject = {"NAME": pf["netdev"], "ENV{INTERFACE}": pf["netdev"], "ENV{ID_NET_DRIVER}": pf["driver"],
                   "DRIVERS": pf["driver"], "DRIVER": pf["driver"], "ATTR{address}": pf["mac"],
                   "ATTRS{address}": pf["mac"], "ATTR{device/vendor}": vendor, "ATTRS{vendor}": vendor,
                   "ATTR{vendor}": vendor, "ATTR{device/device}": device, "ATTRS{device}": device,
                   "ATTR{device}": device}
        if key in ("ACTION",):
            hit = _glob(value, "add")
        elif key in ("SUBSYSTEM", "SUBSYSTEMS"):
            hit = _glob(value, "net") or _glob(value, "pci")
        elif key in ("KERNEL", "KERNELS"):
            hit = _glob(value, pf["netdev"]) or _glob(value, pf["pci"])
        elif key in subject:
            hit = _glob(value.lower() if "address" in key else value, subject[key])
        else:
            verdict = None
            continue
        if hit != (op == "=="):
            return False
    return verdict


def _scan_udev(system, pfs):
    items = []
    for name, path in sorted(_first_wins(system, UDEV_DIRS, ".rules").items()):
        if path == UDEV_RULES_PATH:
            continue
        text = _read(system, path) or ""
        if "sriov_numvfs" not in text:
            continue
        for numbers, line in _logical_lines(text):
            stripped = line.strip()
            if not stripped or stripped.startswith("#") or "sriov_numvfs" not in stripped:
                continue
            keys = UDEV_KEY_RE.findall(stripped)
            count, found = None, False
            for key, op, value in keys:
                if key in ("ATTR{device/sriov_numvfs}", "ATTR{sriov_numvfs}") and op in ("=", ":="):
                    count, found = (int(value) if value.isdigit() else None), True
            echo = ECHO_NUMVFS_RE.search(stripped)
            if not found and echo:
                count, found = int(echo.group(1)), True
            if not found and "sriov_numvfs" in stripped:
                found = True  # some other way of writing it (a program): the count is unknown
            counts, certain = {}, True
            for pf in pfs:
                verdict = _udev_match(keys, pf)
                if verdict is not False:
                    counts[pf["pci"]] = count
                    certain = certain and verdict is True
            if not found or not counts:
                continue
            if path.startswith("/etc/"):
                disable = {"method": "comment", "target": path}
            else:
                disable = {"method": "mask", "target": "/etc/udev/rules.d/" + name}
            items.append(_item("udev", path, numbers, stripped, counts, True,
                               "udev rule: writes sriov_numvfs when the device appears at boot", disable,
                               certain=certain))
    return items


def _scan_networkmanager(system, pfs):
    items = []
    for directory in NM_DIRS:
        for name in _list(system, directory):
            path = directory + "/" + name
            # NetworkManager's keyfile plugin skips these names (backups, editor files), so do we
            keyfile = directory == NM_DIRS[0] or name.endswith(".nmconnection")
            if name.startswith(".") or name.endswith(NM_IGNORED_SUFFIXES) or not keyfile:
                continue
            text = _read(system, path)
            if not text or "[sriov]" not in text:
                continue
            parser = configparser.RawConfigParser(strict=False, interpolation=None)
            parser.optionxform = str
            try:
                parser.read_string(text)
            except configparser.Error:
                continue
            if not parser.has_section("sriov"):
                continue
            # When the sriov setting is present NetworkManager enforces total-vfs (0 when absent)
            # on activation (nm-settings: sriov.total-vfs).
            count = _parse_int(parser.get("sriov", "total-vfs", fallback="0"))
            iface = parser.get("connection", "interface-name", fallback=None)
            mac = (parser.get("ethernet", "mac-address", fallback="") or "").lower() or None
            autoconnect = parser.get("connection", "autoconnect", fallback="true").strip().lower() not in (
                "false", "no", "0")
            matched = [p for p in pfs if (iface and p["netdev"] == iface) or (mac and p["mac"] == mac)]
            certain = bool(iface or mac)
            counts = dict((p["pci"], count) for p in (matched if certain else pfs))
            if not counts:
                continue
            lines = [n for n, line in enumerate(text.split("\n"), 1) if line.strip().startswith("total-vfs")] or \
                [n for n, line in enumerate(text.split("\n"), 1) if line.strip() == "[sriov]"]
            extra = [k for k in parser.options("sriov") if k not in ("total-vfs", "autoprobe-drivers")]
            blocker = ("it also sets VF properties (%s)" % ", ".join(extra)) if extra else None
            items.append(_item("networkmanager", path, lines, "[sriov] total-vfs=%s" % count, counts, autoconnect,
                               "NetworkManager connection %s: sets sriov.total-vfs when it activates" % (
                                   parser.get("connection", "id", fallback=name)),
                               None if blocker else {"method": "nm_section", "target": path}, blocker, certain))
    return items


def _scan_ifcfg(system, pfs):
    items = []
    for name in _list(system, IFCFG_DIR):
        if not name.startswith("ifcfg-"):
            continue
        path = IFCFG_DIR + "/" + name
        text = _read(system, path) or ""
        if "SRIOV_TOTAL_VFS" not in text:
            continue
        values, lines = {}, []
        for number, line in enumerate(text.split("\n"), 1):
            match = ASSIGN_RE.match(line)
            if match:
                values[match.group(1)] = _shell_value(match.group(2), {})
                if match.group(1) == "SRIOV_TOTAL_VFS":
                    lines.append(number)
        device, mac = values.get("DEVICE") or name[6:], (values.get("HWADDR") or "").lower() or None
        counts = dict((p["pci"], _parse_int(values.get("SRIOV_TOTAL_VFS"))) for p in pfs
                      if p["netdev"] == device or (mac and p["mac"] == mac))
        if not counts:
            continue
        extra = sorted(k for k in values if k.startswith("SRIOV_") and k != "SRIOV_TOTAL_VFS")
        blocker = ("it also sets %s" % ", ".join(extra)) if extra else None
        items.append(_item("ifcfg", path, lines, "SRIOV_TOTAL_VFS=%s" % values.get("SRIOV_TOTAL_VFS"), counts,
                           (values.get("ONBOOT") or "yes").lower() not in ("no", "false"),
                           "NetworkManager ifcfg file: SRIOV_TOTAL_VFS when the connection activates",
                           None if blocker else {"method": "comment", "target": path}, blocker))
    return items


def _yaml_blocks(text):
    """Block mappings of a YAML document as nested dicts; scalars become (value, line number).
    Enough for netplan's network.ethernets; sequences and flow collections are skipped."""
    root = {}
    stack = [(-1, root)]
    for number, raw in enumerate(text.split("\n"), 1):
        content = raw.strip()
        if not content or content.startswith("#") or content.startswith("- ") or content == "-":
            continue
        match = re.match(r"""^("[^"]*"|'[^']*'|[^:#]+?)\s*:(?:\s+(.*?))?\s*(?:\s#.*)?$""", content)
        if not match:
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        key = match.group(1).strip("'\"")
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        value = match.group(2)
        if value is None or value == "":
            child = {}
            parent[key] = child
            stack.append((indent, child))
        else:
            parent[key] = (value.strip().strip("'\""), number)
    return root


def _scan_netplan(system, pfs):
    files = {}
    for directory in NETPLAN_DIRS:
        for name in _list(system, directory):
            if name.endswith(".yaml"):
                files[name] = directory + "/" + name
    ethernets = {}
    for name in sorted(files):
        text = _read(system, files[name]) or ""
        section = (_yaml_blocks(text).get("network") or {}).get("ethernets") or {}
        if isinstance(section, dict):
            for ident, conf in section.items():
                if isinstance(conf, dict):
                    ethernets[ident] = (files[name], conf)
    links = {}
    for ident, (_path, conf) in ethernets.items():
        if isinstance(conf.get("link"), tuple):
            links.setdefault(conf["link"][0], []).append(ident)
    items = []
    for ident, (path, conf) in sorted(ethernets.items()):
        explicit = conf.get("virtual-function-count")
        vfs = sorted(links.get(ident, []))
        if not isinstance(explicit, tuple) and not vfs:
            continue
        count = _parse_int(explicit[0]) if isinstance(explicit, tuple) else len(vfs)
        match = conf.get("match") if isinstance(conf.get("match"), dict) else {}
        name_pat = match.get("name", (None,))[0] if match else None
        mac = (match.get("macaddress", ("",))[0] or "").lower() if match else ""
        set_name = conf.get("set-name", (None,))[0] if isinstance(conf.get("set-name"), tuple) else None
        targets = [p for p in pfs if (name_pat and _glob(name_pat, p["netdev"])) or (mac and p["mac"] == mac)
                   or (not match and p["netdev"] == ident) or (set_name and p["netdev"] == set_name)]
        if not targets:
            continue
        lines = [explicit[1]] if isinstance(explicit, tuple) else []
        blocker = ("netplan defines VFs on it (%s)" % ", ".join(vfs)) if vfs else None
        items.append(_item("netplan", path, lines, "%s: virtual-function-count %s" % (ident, count),
                           dict((p["pci"], count) for p in targets), True,
                           "netplan: creates the VFs of ethernets.%s at boot" % ident,
                           None if blocker else {"method": "comment", "target": path}, blocker))
    return items


def _echo_targets(pfs, text):
    """[(count, [pci] or None)] of every `echo N > .../sriov_numvfs` in text."""
    return [(int(m.group(1)), _pf_for_target(pfs, m.group(2))) for m in ECHO_NUMVFS_RE.finditer(text)]


def _script_item(kind, path, lines_text, pfs, active, how, disable, blocker):
    counts, certain = {}, True
    for count, target in _echo_targets(pfs, lines_text):
        if target is None:
            certain = False
            target = [p["pci"] for p in pfs]
        for pci in target:
            counts[pci] = count
    if not counts:
        return None
    return _item(kind, path, [], lines_text, counts, active, how, disable, blocker, certain)


def _scan_systemd(system, pfs):
    items = []
    units = _first_wins(system, SYSTEMD_DIRS, ".service")
    wants = [d for d in _list(system, "/etc/systemd/system") if d.endswith(".wants") or d.endswith(".requires")]
    for name, path in sorted(units.items()):
        text = _read(system, path) or ""
        fragments = []
        for line in text.split("\n"):
            match = re.match(r"^\s*Exec(?:Start|StartPre|StartPost)\s*=\s*[-@+!:]*(.*)$", line)
            if not match:
                continue
            command = match.group(1).strip()
            program = command.split()[0] if command.split() else ""
            body = command
            if program.startswith("/") and os.path.basename(program) not in ("sh", "bash", "dash", "env"):
                body = _read(system, program) or command
            fragments.append(body)
        joined = "\n".join(fragments)
        if "sriov_numvfs" not in joined:
            continue
        enabled = any(system.exists("/etc/systemd/system/%s/%s" % (d, name)) for d in wants)
        dedicated = all("sriov_numvfs" in line or not line.strip() or line.strip().startswith("#")
                        or line.strip() in ("set -e", "exit 0")
                        for body in fragments for line in body.split("\n"))
        blocker = None if dedicated else "the unit does other things too"
        item = _script_item("systemd", path, joined, pfs, enabled, "systemd unit %s: writes sriov_numvfs" % name,
                            {"method": "systemctl_disable", "unit": name} if dedicated else None, blocker)
        if item:
            items.append(item)
    return items


def _scan_rc_local(system, pfs):
    items = []
    for path in RC_LOCAL_PATHS:
        if path == "/etc/rc.local" and system.is_link(path):
            continue  # RHEL: a link to /etc/rc.d/rc.local
        text = _read(system, path) or ""
        for number, line in enumerate(text.split("\n"), 1):
            if "sriov_numvfs" in line and not line.strip().startswith("#"):
                checker = getattr(system, "is_executable", None)
                item = _script_item("rc.local", path, line, pfs, checker(path) if checker else True,
                                    "rc.local (run at boot when executable)", {"method": "comment", "target": path},
                                    None)
                if item:
                    item["line"], item["lines"] = number, [number]
                    items.append(item)
    return items


def _scan_modprobe(system, pfs, param_forms):
    items = []
    for _name, path in sorted(_first_wins(system, MODPROBE_DIRS, ".conf").items()):
        if path == MODPROBE_CONF_PATH:
            continue
        text = _read(system, path) or ""
        for number, line in enumerate(text.split("\n"), 1):
            words = line.split("#", 1)[0].split()
            if len(words) < 3 or words[0] != "options":
                continue
            for word in words[2:]:
                if not word.startswith("max_vfs="):
                    continue
                values = [_parse_int(v) for v in word[len("max_vfs="):].split(",") if v]
                ports = sorted(p["pci"] for p in pfs if p["driver"] == words[1])
                form = param_forms.get(words[1]) or ("array" if len(values) > 1 else "single")
                counts = _max_vfs_values(values, ports, form)
                if counts:
                    items.append(_item("modprobe", path, [number], line, counts, True,
                                       "module option: %s creates max_vfs VFs when it loads" % words[1], None,
                                       "a module option for every %s port; remove max_vfs from %s by hand "
                                       "(and rebuild the initramfs when %s is in it)" % (words[1], path, words[1])))
    return items


def _scan_cmdline(system, pfs, param_forms):
    items = []
    for token in (_read(system, "/proc/cmdline") or "").split():
        match = re.match(r"^([A-Za-z0-9_]+)\.max_vfs=([0-9,]+)$", token)
        if not match:
            continue
        values = [_parse_int(v) for v in match.group(2).split(",") if v]
        ports = sorted(p["pci"] for p in pfs if p["driver"] == match.group(1))
        counts = _max_vfs_values(values, ports, param_forms.get(match.group(1)) or "single")
        if counts:
            items.append(_item("cmdline", "/proc/cmdline", [], token, counts, True,
                               "kernel command line: %s creates max_vfs VFs when it loads" % match.group(1),
                               None, "a kernel argument; remove it with a kernel_args change"))
    return items


def _boot_sources(system, pfs, param_forms):
    items = []
    for scan in (_scan_udev, _scan_networkmanager, _scan_ifcfg, _scan_netplan, _scan_systemd, _scan_rc_local):
        items.extend(scan(system, pfs))
    items.extend(_scan_modprobe(system, pfs, param_forms))
    items.extend(_scan_cmdline(system, pfs, param_forms))
    return items


def _conflicting(items, pci, count):
    """Active sources that set another count than count on pci at boot."""
    return [i for i in items if i["active"] and pci in i["counts"] and i["counts"][pci] != count]


def _describe_source(item):
    where = "%s:%s" % (item["path"], item["line"]) if item["line"] else item["path"]
    return "%s (%s: %s)" % (where, item["kind"], item["text"][:120])


def _comment_lines(text, numbers):
    lines = text.split("\n")
    for number in numbers:
        if 0 < number <= len(lines) and not lines[number - 1].startswith(DISABLED_PREFIX):
            lines[number - 1] = DISABLED_PREFIX + lines[number - 1]
    return "\n".join(lines)


def _comment_nm_section(text):
    out, inside = [], False
    for line in text.split("\n"):
        if line.strip().startswith("["):
            inside = line.strip() == "[sriov]"
        out.append(DISABLED_PREFIX + line if inside and line.strip() else line)
    return "\n".join(out)


def _disable_sources(system, items, txn, actions):
    """take_over: switch off other boot configuration (backed up, undone on a later failure)."""
    for item in items:
        method = item["disable"]["method"]
        target = item["disable"].get("target")
        if method in ("comment", "nm_section"):
            txn.backup(target, actions)
            text = system.read_text(target)
            new = _comment_nm_section(text) if method == "nm_section" else _comment_lines(text, item["lines"])
            txn.write(target, new, "other VF configuration", mode=None)
            actions.append("disabled %s" % _describe_source(item))
        elif method == "mask":
            text = _read(system, item["path"]) or ""
            txn.write(target, _comment_lines(text, item["lines"]), "udev rule override")
            actions.append("disabled %s by overriding it with %s" % (_describe_source(item), target))
        elif method == "systemctl_disable":
            rc, out, err = system.run(["systemctl", "disable", item["disable"]["unit"]], QUERY_TIMEOUT)
            if rc != 0:
                raise AgentError("other_boot_config_unsupported", "systemctl disable %s failed (%s): %s" % (
                    item["disable"]["unit"], rc, (err or out).strip()[-300:]), {"source": item})
            txn.undo.append(["systemctl", "enable", item["disable"]["unit"]])
            actions.append("disabled %s: systemctl disable %s (undo: systemctl enable %s)" % (
                _describe_source(item), item["disable"]["unit"], item["disable"]["unit"]))
    if any(i["disable"]["method"] == "nm_section" for i in items) and system.which("nmcli"):
        system.run(["nmcli", "connection", "reload"], QUERY_TIMEOUT)
        txn.undo.append(["nmcli", "connection", "reload"])
        actions.append("made NetworkManager re-read its connections: nmcli connection reload")


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
    """The IOMMU the running kernel uses, and whether the firmware describes one at all: without
    an ACPI DMAR (Intel VT-d) or IVRS (AMD-Vi) table no kernel argument can turn it on."""
    classes = _list(system, "/sys/class/iommu")
    groups = _list(system, "/sys/kernel/iommu_groups")
    readable = system.is_dir(ACPI_TABLES)
    tables = _list(system, ACPI_TABLES)
    dmar, ivrs = "DMAR" in tables, "IVRS" in tables
    return {"active": bool(classes or groups), "devices": classes, "groups": len(groups),
            "firmware": {"acpi_tables_readable": readable, "dmar": dmar, "ivrs": ivrs,
                         "table": "DMAR" if dmar else ("IVRS" if ivrs else None),
                         "present": (dmar or ivrs) if readable else None}}


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


def _vfs_of(system, dev, usage, reserved=None, uses=None, settings=None, persisted=None):
    """The PF's VFs; settings ({index: ip settings}) and persisted (the PF's managed VF state) add
    what iproute2 reports and what the console persisted."""
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
            "used_via": (uses or {}).get(pci, []),
            "reserved_by": sorted((reserved or {}).get(pci, [])),
            "driver_override": _driver_override(system, link),
        })
        vfs[-1].update((settings or {}).get(vfs[-1]["index"]) or _empty_vf_settings())
        vfs[-1]["persisted_settings"] = ((persisted or {}).get("vfs") or {}).get(str(vfs[-1]["index"]))
        vfs[-1]["persisted_driver"] = ((persisted or {}).get("drivers") or {}).get(str(vfs[-1]["index"]))
    vfs.sort(key=lambda vf: vf["index"])
    return vfs


class _Inventory(object):
    """What one inventory (or the checks of set_vfs) needs to know about the host, read once."""

    def __init__(self, system, defined_guests=True, deadline=None):
        self.system = system
        self.deadline = deadline
        self.release = _kernel_release(system)
        self.legacy = _is_legacy_kernel(self.release)
        self.vf_index = _vf_index(system)
        self.guests = _guests(system, self.vf_index, defined=defined_guests)
        self.usage = _usage_by_pci(self.guests["guests"])
        self.uses = _uses_by_pci(self.guests["guests"])
        self.reserved = _usage_by_pci(self.guests["defined"])
        self.topology = _net_topology(system)
        self.param = {}
        if self.legacy:
            drivers = set(_link_base(system, "%s/%s/device/driver" % (SYS_NET, n)) for n in _list(system, SYS_NET))
            for driver in sorted(d for d in drivers if d in LEGACY_MAX_VFS):
                self.param[driver] = _max_vfs_param(system, driver)
        self.forms = dict((d, p["form"]) for d, p in self.param.items() if p["form"])
        self.managed = _managed_counts(system, self.legacy, self.forms)
        self.vf_state = _read_vf_state(system)
        self._ip = {}
        self._sources = None
        self._pfs = None
        self._facts = {}  # pci -> (totalvfs, numvfs, busy): one bounded read per PF and run

    def pf_descriptors(self):
        """[{pci, netdev, driver, mac, vendor_id, device_id, dev}] of every PF (with or without a netdev)."""
        if self._pfs is not None:
            return self._pfs
        system = self.system
        found = {}
        for name in _list(system, SYS_NET):
            dev = "%s/%s/device" % (SYS_NET, name)
            if not system.exists(dev) or system.exists(dev + "/physfn"):
                continue
            driver = _link_base(system, dev + "/driver")
            if not system.exists(dev + "/sriov_totalvfs") and not (self.legacy and driver in LEGACY_MAX_VFS):
                continue
            pci = _link_base(system, dev)
            found[pci] = {"pci": pci, "netdev": name, "driver": driver, "dev": dev,
                          "mac": (_read(system, "%s/%s/address" % (SYS_NET, name)) or "").lower() or None,
                          "vendor_id": _hex_id(system, dev + "/vendor"), "device_id": _hex_id(system, dev + "/device")}
        for pci, dev in _pci_functions(system):
            if pci in found or not system.exists(dev + "/sriov_totalvfs") or system.exists(dev + "/physfn"):
                continue
            found[pci] = {"pci": pci, "netdev": _netdev_of(system, dev), "driver": _link_base(system, dev + "/driver"),
                          "dev": dev, "mac": None, "vendor_id": _hex_id(system, dev + "/vendor"),
                          "device_id": _hex_id(system, dev + "/device")}
        self._pfs = [found[p] for p in sorted(found)]
        return self._pfs

    def ip_vfs(self, netdev):
        """{index: settings} iproute2 reports for the PF netdev (one `ip` run per PF), or None."""
        if netdev not in self._ip:
            self._ip[netdev] = _ip_link_vfs(self.system, netdev)
        return self._ip[netdev]

    def vfs(self, dev, pci, netdev):
        return _vfs_of(self.system, dev, self.usage, self.reserved, self.uses, self.ip_vfs(netdev),
                       self.vf_state.get(pci))

    def sources(self):
        if self._sources is None:
            self._sources = _boot_sources(self.system, self.pf_descriptors(), self.forms)
        return self._sources

    def sources_for(self, pci):
        return [s for s in self.sources() if pci in s["counts"]]


def _sriov_facts(inv, dev, driver, deadline=None):
    pci = _link_base(inv.system, dev) or dev
    if pci not in inv._facts:
        inv._facts[pci] = _read_sriov_facts(inv.system, dev, driver, inv.legacy, deadline or inv.deadline)
    return inv._facts[pci]


def _read_sriov_facts(system, dev, driver, legacy, deadline=None):
    totalvfs = _read_int(system, dev + "/sriov_totalvfs")
    numvfs, busy = (None, False)
    if system.exists(dev + "/sriov_numvfs"):
        numvfs, busy = _read_numvfs(system, dev, deadline)
    if legacy and driver in LEGACY_MAX_VFS:
        if totalvfs is None:
            totalvfs = LEGACY_MAX_VFS[driver]
        if numvfs is None and not busy:
            numvfs = len([e for e in _list(system, dev) if re.match(r"^virtfn\d+$", e)])
    return totalvfs, numvfs, busy


def _pf_conflict(inv, pci):
    """Does another active boot source set a different count than the persisted one?"""
    if pci not in inv.managed:
        return False
    return bool(_conflicting(inv.sources(), pci, inv.managed[pci]))


def _nic(inv, name, have_ethtool):
    system = inv.system
    base = SYS_NET + "/" + name
    dev = base + "/device"
    pci = _link_base(system, dev)
    driver = _link_base(system, dev + "/driver")
    ethtool = _ethtool_info(system, name, have_ethtool)
    speed = _read_int(system, base + "/speed")
    is_vf = system.exists(dev + "/physfn")
    totalvfs, numvfs, busy = (None, None, False) if is_vf else _sriov_facts(inv, dev, driver)
    vfs = [] if is_vf else inv.vfs(dev, pci, name)
    has_capability = (not is_vf) and totalvfs is not None and (system.exists(dev + "/sriov_numvfs") or inv.legacy)
    capable = has_capability and totalvfs > 0
    nic = {
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
        "sriov_capability": has_capability,
        "sriov_not_capable_reason": _not_capable_reason(totalvfs, driver) if has_capability else None,
        "sriov_totalvfs": totalvfs,
        "sriov_numvfs": numvfs,
        "sriov_vf_device_id": None if is_vf else _sriov_vf_device(system, dev),
        "device_busy": busy,
        "is_vf": is_vf,
        "physfn": _link_base(system, dev + "/physfn") if is_vf else None,
        "vfs": vfs,
        "managed": (pci in inv.managed) if not is_vf else False,
        "persisted_count": inv.managed.get(pci) if not is_vf else None,
        "link": _link_facts(inv.topology, name, driver),
    }
    if not is_vf:
        nic.update(_pf_extras(inv, dev, pci, name if has_capability else None))
    if has_capability:
        nic["other_config"] = inv.sources_for(pci)
        nic["persisted_conflict"] = _pf_conflict(inv, pci)
        if inv.legacy and driver in inv.param:
            nic["max_vfs_param"] = inv.param[driver]
    return nic


def _sriov_pf(inv, pf):
    """One SR-IOV capable PCI function, whether or not the host has a network interface for it."""
    system = inv.system
    dev = pf["dev"]
    totalvfs, numvfs, busy = _sriov_facts(inv, dev, pf["driver"])
    reason = _not_capable_reason(totalvfs, pf["driver"])
    return {
        "pci_address": pf["pci"], "netdev": pf["netdev"], "driver": pf["driver"],
        "state": _binding(pf["driver"], pf["netdev"]),
        "vendor_id": pf["vendor_id"], "device_id": pf["device_id"], "pci_class": _read(system, dev + "/class"),
        "sriov_totalvfs": totalvfs, "sriov_numvfs": numvfs, "sriov_vf_device_id": _sriov_vf_device(system, dev),
        "device_busy": busy, "capable_now": totalvfs is not None and totalvfs > 0, "not_capable_reason": reason,
        "vfs": inv.vfs(dev, pf["pci"], pf["netdev"]),
        "managed": pf["pci"] in inv.managed, "persisted_count": inv.managed.get(pf["pci"]),
        "other_config": inv.sources_for(pf["pci"]),
        **_pf_extras(inv, dev, pf["pci"], pf["netdev"])
    }


def _boot_config(system, grub):
    bls = _bls_active(system, grub)
    hooks = [h for h in KERNEL_INSTALL_HOOKS if "/etc/kernel/cmdline" in (_read(system, h) or "")]
    kernelopts = None
    if bls and system.which("grub2-editenv"):
        out = _run_ok(system, ["grub2-editenv", "-", "list"])
        for line in (out or "").splitlines():
            if line.startswith("kernelopts="):
                kernelopts = line[len("kernelopts="):]
    return {"bls": bls, "kernel_cmdline_file": KERNEL_CMDLINE_FILE,
            "kernel_cmdline": _read(system, KERNEL_CMDLINE_FILE), "kernel_install_reads_it": bool(hooks),
            "grubenv_kernelopts": kernelopts}


def op_inventory(system, args, deadline=None):
    inv = _Inventory(system, deadline=deadline)
    grub = _grub_effective(system)
    have_ethtool = bool(system.which("ethtool"))
    nics = []
    for name in _list(system, SYS_NET):
        if system.exists("%s/%s/device" % (SYS_NET, name)):
            nics.append(_nic(inv, name, have_ethtool))
    listed = set(n["pci_address"] for n in nics)
    guests = inv.guests
    networks, networks_error = _libvirt_networks(system, guests, inv.vf_index)
    result = {
        "hostname": _read(system, "/proc/sys/kernel/hostname"),
        "machine_id": _read(system, "/etc/machine-id"),
        "boot_id": _read(system, "/proc/sys/kernel/random/boot_id"),
        "kernel_release": inv.release,
        "legacy_kernel": inv.legacy,
        "os": _os_release(system),
        "cpu_vendor": _cpu_vendor(system),
        "cmdline": _read(system, "/proc/cmdline"),
        "grub": {
            "cmdline_linux": grub["values"].get("GRUB_CMDLINE_LINUX"),
            "cmdline_linux_source": grub["sources"].get("GRUB_CMDLINE_LINUX"),
            "cmdline_linux_default": grub["values"].get(GRUB_VAR),
            "cmdline_linux_default_source": grub["sources"].get(GRUB_VAR),
            "files": grub["files"],
        },
        "grub_tool": _choose_grub_tool(system, grub),
        "grub_tools": _grub_tools(system),
        "boot_config": _boot_config(system, grub),
        "iommu": _iommu(system),
        "virsh": guests["available"],
        "guests": guests["guests"],
        "guests_error": guests["error"],
        "defined_guests": guests["defined"],
        "defined_guests_error": guests["defined_error"],
        "libvirt_networks": networks,
        "libvirt_networks_error": networks_error,
        "persistence_file": MODPROBE_CONF_PATH if inv.legacy else UDEV_RULES_PATH,
        "ssh_connection": inv.topology["ssh"],
        "default_route_devices": inv.topology["default_route_devices"],
        "nics": nics,
        "sriov_pfs": [_sriov_pf(inv, pf) for pf in inv.pf_descriptors()],
        "other_vf_config": inv.sources(),
        "pfs_without_netdev": sorted(p["pci"] for p in inv.pf_descriptors() if p["pci"] not in listed),
    }
    if inv.legacy:
        result["legacy_max_vfs"] = dict((d, dict(p, ports=_legacy_ports(system, d))) for d, p in inv.param.items())
    return result


# ---------------------------------------------------------------------------------------------
# set_vfs
# ---------------------------------------------------------------------------------------------

# sriov_numvfs_store() and the drivers' sriov_configure(): what each errno means to an operator.
WRITE_ERRORS = {
    errno.EBUSY: ("ebusy", "The device is busy (EBUSY): the kernel refused to change the VF count."),
    errno.ENOMEM: ("enomem", "The kernel could not allocate the VFs (ENOMEM): there is no room for the VFs' "
                             "memory windows (BARs) behind the PCI bridge, which usually means SR-IOV is disabled "
                             "in the BIOS or the kernel needs pci=realloc. Enable SR-IOV (and 'MMIO above 4G') in "
                             "the BIOS, or add pci=realloc, then reboot."),
    errno.ENOSPC: ("enospc", "The driver ran out of resources for that many VFs (ENOSPC): interrupt vectors (MSI-X) "
                             "or queues are exhausted. Ask for fewer VFs, or free vectors (fewer PF queues)."),
    errno.EAGAIN: ("driver_busy", "The driver kept refusing with EAGAIN: another operation is pending on the PF "
                                  "(i40e: a VF reset or an earlier VF change). Wait until it has finished and retry."),
    errno.ENOENT: ("no_sriov_driver", "The kernel has no driver to configure SR-IOV on this PF (ENOENT): no driver "
                                      "is bound, or the bound driver cannot configure VFs through sysfs. Bind the PF "
                                      "to its network driver; on kernels older than 3.8 use the driver's max_vfs."),
    errno.ERANGE: ("exceeds_total", "More VFs than the device allows now (ERANGE: above sriov_totalvfs). Ask for at "
                                    "most sriov_totalvfs VFs."),
    errno.EROFS: ("readonly_fs", "The file system is read-only (EROFS)."),
    errno.EINVAL: ("einval", "The kernel rejected the value (EINVAL)."),
    errno.EACCES: ("permission_denied", "Permission denied: the agent must run as root."),
    errno.EPERM: ("permission_denied", "Operation not permitted: the agent must run as root."),
    errno.ETIMEDOUT: ("write_timeout", "The write to sriov_numvfs did not complete in time: the driver is still "
                                       "working on it (or waiting for something) and the write cannot be cancelled."),
}

SET_VFS_ARGS = ("pf", "pci_address", "count", "persist", "take_over", "allow_guest_impact", "force", "wait_seconds",
                "allow_autostart_impact", "allow_management_link", "apply_to_all_ports", "mtu")


def _set_vfs_request(args):
    pf = args.get("pf")
    req = {
        "pf": None if pf is None else _valid_ifname(pf, "pf"),
        "pci_address": _valid_pci(args.get("pci_address"), "pci_address"),
        "count": _valid_count(args.get("count"), "count"),
        "persist": _valid_bool(args.get("persist"), "persist", True),
    }
    # take_over skips only the "externally managed" and "other boot configuration" refusals;
    # allow_guest_impact only the guest checks (running and autostart guests). force is the
    # deprecated alias for both.
    force = _valid_bool(args.get("force"), "force", False)
    req["take_over"] = _valid_bool(args.get("take_over"), "take_over", False) or force
    req["allow_guest_impact"] = _valid_bool(args.get("allow_guest_impact"), "allow_guest_impact", False) or force
    req["allow_autostart_impact"] = _valid_bool(
        args.get("allow_autostart_impact"), "allow_autostart_impact", False) or req["allow_guest_impact"]
    req["allow_management_link"] = _valid_bool(args.get("allow_management_link"), "allow_management_link", False)
    req["apply_to_all_ports"] = _valid_bool(args.get("apply_to_all_ports"), "apply_to_all_ports", False)
    wait_seconds = args.get("wait_seconds", DEFAULT_WAIT_SECONDS)
    if isinstance(wait_seconds, bool) or not isinstance(wait_seconds, (int, float)) or not (
            0 <= wait_seconds <= MAX_WAIT_SECONDS_ARG):
        raise _bad("wait_seconds must be a number between 0 and %d" % MAX_WAIT_SECONDS_ARG,
                   field="wait_seconds", value=repr(wait_seconds))
    req["wait_seconds"] = min(float(wait_seconds), MAX_WAIT_SECONDS)
    return req


def _netdev_by_pci(system, pci):
    for name in _list(system, SYS_NET):
        if _link_base(system, "%s/%s/device" % (SYS_NET, name)) == pci:
            return name
    return None


def _resolve_target(system, req):
    """-> {"pf": netdev or None, "pci", "dev"}: the PF by its interface name, or by its PCI address
    alone (a PF without a network interface)."""
    pf, pci = req["pf"], req["pci_address"]
    pci_dev = SYS_PCI + "/" + pci
    if pf is not None and system.exists(SYS_NET + "/" + pf):
        dev = SYS_NET + "/" + pf + "/device"
        if not system.exists(dev):
            raise AgentError("not_sriov_capable", "%s is not a PCI network device (no device link)." % pf, {"pf": pf})
        actual = _link_base(system, dev)
        if actual != pci:
            raise AgentError("pf_mismatch", "%s is the PCI device %s, not %s as expected: the interface was "
                             "renamed or the hardware changed. Refresh the inventory." % (pf, actual, pci),
                             {"pf": pf, "expected_pci_address": pci, "actual_pci_address": actual})
        if system.exists(dev + "/physfn"):
            raise AgentError("not_sriov_capable", "%s (%s) is itself a virtual function." % (pf, actual),
                             {"pf": pf, "pci_address": actual})
        return {"pf": pf, "pci": pci, "dev": dev}
    netdev = _netdev_by_pci(system, pci)
    if not system.exists(pci_dev) and netdev is None:
        if pf is not None:
            raise AgentError("no_such_pf", "There is no network interface named %s, and no PCI function %s, on "
                             "this host." % (pf, pci), {"pf": pf, "pci_address": pci})
        raise AgentError("no_such_pf", "There is no PCI function %s on this host." % pci, {"pci_address": pci})
    if pf is not None and netdev is not None:
        raise AgentError("pf_mismatch", "%s is now the interface %s, not %s as expected: the interface was renamed. "
                         "Refresh the inventory." % (pci, netdev, pf),
                         {"pf": pf, "actual_pf": netdev, "pci_address": pci})
    dev = (SYS_NET + "/" + netdev + "/device") if netdev else pci_dev
    if system.exists(dev + "/physfn"):
        raise AgentError("not_sriov_capable", "%s is itself a virtual function." % pci, {"pci_address": pci})
    return {"pf": netdev, "pci": pci, "dev": dev}


def _label(target):
    return "%s (%s)" % (target["pf"], target["pci"]) if target["pf"] else target["pci"]


def _check_binding(system, target, driver):
    """A PF the host does not drive cannot change VFs, or must not be touched."""
    state = _binding(driver, target["pf"])
    label = _label(target)
    if state == "no_driver":
        raise AgentError("pf_no_driver", "%s has no driver bound, so the kernel cannot change its VFs (writing "
                         "sriov_numvfs answers ENOENT without a driver). Bind it to its network driver first, "
                         "then retry." % label, {"pci_address": target["pci"], "state": state})
    if state in ("vfio", "pci-stub"):
        raise AgentError("pf_bound_to_vfio", "%s is bound to %s: it is handed to a guest or to a userspace driver "
                         "(DPDK), and SR-IOV Console does not change the VFs of such a PF. Give it back to its "
                         "network driver first if that is what you want." % (label, driver),
                         {"pci_address": target["pci"], "state": state, "driver": driver})


def _pf_state(system, target, inv, legacy, deadline=None):
    dev = target["dev"]
    vfs = _vfs_of(system, dev, inv.usage, inv.reserved, inv.uses)
    driver = _link_base(system, dev + "/driver")
    busy = False
    if legacy:
        numvfs = len(vfs)
    else:
        numvfs, busy = _read_numvfs(system, dev, deadline)
    totalvfs = _read_int(system, dev + "/sriov_totalvfs")
    if legacy and totalvfs is None:
        totalvfs = LEGACY_MAX_VFS.get(driver)
    return {"pf": target["pf"], "pci_address": target["pci"], "driver": driver, "sriov_numvfs": numvfs,
            "sriov_totalvfs": totalvfs, "persisted_count": inv.managed.get(target["pci"]), "vfs": vfs,
            "device_busy": busy}


def _busy_vfs(system, before, inv):
    """The VFs of the PF that a guest or a passthrough driver holds: what a blocked write waits for."""
    held = []
    for vf in before["vfs"]:
        if vf["driver"] in PASSTHROUGH_DRIVERS or vf["used_by"]:
            held.append({"pci_address": vf["pci_address"], "driver": vf["driver"],
                         "guests": vf["used_by"] or inv.usage.get(vf["pci_address"], [])})
    return held


def _device_busy(target, pending, held, numvfs_path):
    if held:
        names = ", ".join("%s (%s%s)" % (h["pci_address"], h["driver"] or "no driver",
                                        ", used by " + "/".join(h["guests"]) if h["guests"] else "") for h in held)
        why = ("the kernel is waiting for a guest to release VF %s: vfio-pci asks QEMU to let the device go (QEMU "
               "unplugs it from the guest if the guest agrees)" % names)
    else:
        why = "the driver has not finished (it may be waiting for firmware or another operation)"
    if pending is None:
        head = "%s is busy: reading its sriov_numvfs blocks, so an earlier change of its VFs is still pending" % (
            _label(target))
    else:
        head = "Writing %d to sriov_numvfs of %s did not finish in time" % (pending, _label(target))
    state = ("The write cannot be cancelled: it stays pending in the kernel, which holds the PF's device lock until "
             "it completes; reads of sriov_numvfs and every other change of this PF wait until then. It completes "
             "by itself once what it waits for is released, and the PF then has the new count.")
    return AgentError("device_busy", "%s; %s. %s" % (head, why, state),
                      {"pf": target["pf"], "pci_address": target["pci"], "path": numvfs_path, "write_pending": True,
                       "pending_value": pending, "waiting_for": held, "host_state": state})


def _write_numvfs(system, path, value, target, deadline):
    """Write sriov_numvfs within the budget; EAGAIN is retried with back-off. -> retries."""
    pauses = list(EAGAIN_BACKOFF)
    retries = 0
    cap = getattr(system, "write_timeout", SYSFS_WRITE_TIMEOUT)
    while True:
        timeout = deadline.bound(cap)
        if deadline.left() - BUDGET_RESERVE < MIN_WRITE_SECONDS:
            raise AgentError("budget_exhausted", "Not writing %d to sriov_numvfs of %s: the %d s the agent has for "
                             "this operation are used up (the earlier steps took them)." % (
                                 value, _label(target), AGENT_BUDGET),
                             {"pf": target["pf"], "pci_address": target["pci"], "value": value, "path": path})
        try:
            writer = getattr(system, "write_sysfs", None)
            if writer is not None:
                writer(path, "%d\n" % value, timeout)
            else:
                system.write_text(path, "%d\n" % value)
            return retries
        except OSError as exc:
            room = deadline.left() - BUDGET_RESERVE - MIN_WRITE_SECONDS
            if exc.errno == errno.EAGAIN and pauses and room > pauses[0]:
                system.sleep(pauses.pop(0))
                retries += 1
                continue
            code, text = WRITE_ERRORS.get(exc.errno, ("write_failed", "Writing sriov_numvfs failed."))
            if exc.errno == errno.EAGAIN:
                text += " (%d tries over %.1f s)" % (retries + 1, sum(EAGAIN_BACKOFF[:retries]))
            raise AgentError(code, "%s (%s, writing %d to %s: %s)" % (
                text, _label(target), value, path, exc.strerror or exc), {
                "pf": target["pf"], "pci_address": target["pci"], "path": path, "value": value,
                "errno": _errno_name(exc.errno), "strerror": exc.strerror, "retries": retries}) from None


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


def _wait_vfs(system, target, count, wait_seconds, actions):
    """Wait for the kernel to create (or remove) the VFs -> whether every VF that will get a network
    interface has one (information only: passthrough hosts have none, and that is not a failure)."""
    deadline = system.monotonic() + wait_seconds
    while True:
        ready, extra, netdev_pending = _vfs_ready(system, target["dev"], count)
        if ready == count and extra == 0 and netdev_pending == 0:
            return True
        if system.monotonic() >= deadline:
            if ready == count and extra == 0:
                return False
            raise AgentError("vf_timeout", "%s: expected %d VFs, found %d (and %d surplus) after %.1f s. The VF count "
                             "was written; the kernel did not create or remove the VFs in time." % (
                                 _label(target), count, ready, extra, wait_seconds),
                             {"pf": target["pf"], "pci_address": target["pci"], "expected": count, "ready": ready,
                              "surplus": extra, "actions": actions})
        system.sleep(0.1)


def _ensure_udev(system, pci, count, actions, txn, others=None):
    """Record count for pci (and, after a take-over of a shared rule, the other PFs' counts)."""
    exists, counts, foreign = _read_udev(system)
    new = dict(counts)
    if count:
        new[pci] = count
    else:
        new.pop(pci, None)
    for other, value in sorted((others or {}).items()):
        if other not in new and value:
            new[other] = value
    if (exists and new == counts) or (not exists and not new):
        return
    txn.write(UDEV_RULES_PATH, _render_udev(new, foreign), "persistence file")
    if count:
        actions.append("persisted %d VFs for %s in %s" % (count, pci, UDEV_RULES_PATH))
    elif pci in counts:
        actions.append("removed the persisted VF count of %s from %s" % (pci, UDEV_RULES_PATH))
    for other, value in sorted((others or {}).items()):
        if other not in counts and value:
            actions.append("persisted %d VFs for %s in %s (the count the disabled rule gave it)" % (
                value, other, UDEV_RULES_PATH))


def _guest_impact(req, target, before, count, reset_first, inv):
    """Refuse a change that removes VFs running guests use (or may use)."""
    affected = before["vfs"] if reset_first else [vf for vf in before["vfs"] if vf["index"] >= count]
    if not affected or req["allow_guest_impact"]:
        return
    guests = inv.guests
    label = _label(target)
    if guests["guests"] is None:
        raise AgentError("guest_check_failed", "Cannot tell whether running guests use the VFs of %s that this "
                         "change removes: %s. Allow guest impact to proceed anyway." % (
                             target["pf"] or target["pci"], guests["error"]),
                         {"pf": target["pf"], "error": guests["error"]})
    in_use = []
    for vf in affected:
        used_by = list(vf["used_by"])
        if not used_by and vf["driver"] in PASSTHROUGH_DRIVERS:
            # Defence in depth: a VF handed to vfio-pci / pci-stub is meant for a guest even
            # when no running guest that virsh knows claims it.
            used_by = ["<unknown: bound to %s>" % vf["driver"]]
        if used_by:
            in_use.append({"index": vf["index"], "pci_address": vf["pci_address"], "used_by": used_by,
                           "used_via": vf.get("used_via", [])})
    if in_use:
        names = sorted(set(g for vf in in_use for g in vf["used_by"]))
        raise AgentError("vfs_in_use", "%s: this change removes VFs used by running guests: %s. Stop or migrate "
                         "them, or allow guest impact." % (label, ", ".join(names)),
                         {"pf": target["pf"], "pci_address": target["pci"], "guests": names, "vfs": in_use})


def _autostart_impact(req, target, before, count, inv):
    """Stopped guests that start at boot and whose VF this change removes: -> warnings, or refuse."""
    removed = set(vf["pci_address"] for vf in before["vfs"] if vf["index"] >= count)
    if not removed:
        return []
    guests = inv.guests
    if guests["defined"] is None:
        if req["allow_autostart_impact"]:
            return ["cannot tell which stopped guests start at boot (%s)" % guests["defined_error"]]
        raise AgentError("guest_check_failed", "Cannot tell whether guests that start at boot use the VFs of %s "
                         "that this change removes: %s. Allow autostart impact to proceed anyway." % (
                             _label(target), guests["defined_error"]),
                         {"pf": target["pf"], "error": guests["defined_error"]})
    hit = {}
    for pci in sorted(removed):
        for name in inv.reserved.get(pci, []):
            hit.setdefault(name, []).append(pci)
    everyone = (guests["guests"] or []) + guests["defined"]
    for pool in guests["networks"].values():
        members = set(pool["vf_pci"])
        if not members & removed:
            continue
        demand = sum(g["networks"].count(pool["name"]) for g in everyone)
        if len(members - removed) < demand:
            for guest in guests["defined"]:
                if pool["name"] in guest["networks"]:
                    hit.setdefault(guest["name"], []).append("a VF of network %s" % pool["name"])
    if not hit:
        return []
    text = "%s: this change removes VFs that guests starting at boot use: %s; they will not start" % (
        _label(target), "; ".join("%s (%s)" % (n, ", ".join(v)) for n, v in sorted(hit.items())))
    if req["allow_autostart_impact"]:
        return [text + " (allowed by the request)"]
    raise AgentError("autostart_guests", text + ". Change or disable those guests, or allow autostart impact.",
                     {"pf": target["pf"], "pci_address": target["pci"], "guests": sorted(hit),
                      "vfs": dict((n, v) for n, v in hit.items())})


def _management_check(req, target, link, drops):
    if not drops or not link or not link["management"] or req["allow_management_link"]:
        return
    raise AgentError("management_link", "%s carries the SSH connection SR-IOV Console manages this host over: "
                     "changing its VF count drops its link %s%s, and the host may not be reachable afterwards. "
                     "Use another PF, or set allow_management_link if a console on the host is at hand." % (
                         _label(target), "twice" if drops == 2 else "once",
                         (" for about %d s each" % link["link_drop_seconds"]) if link["link_drop_seconds"] else ""),
                     {"pf": target["pf"], "pci_address": target["pci"], "link": link, "link_drops": drops})


def _other_config_plan(req, target, count, inv):
    """Other boot sources that would fight the persisted count -> (to disable, counts to keep for
    the other PFs of a disabled shared udev rule); refuses when they cannot be handled."""
    if not req["persist"]:
        return [], {}
    conflicts = _conflicting(inv.sources(), target["pci"], count)
    if not conflicts:
        return [], {}
    names = "; ".join(_describe_source(c) for c in conflicts)
    details = {"pf": target["pf"], "pci_address": target["pci"], "other_config": conflicts}
    if not req["take_over"]:
        raise AgentError("other_boot_config", "%s: other boot configuration sets its VF count too: %s. Both would "
                         "run at boot and the count would depend on which comes last. Remove it, or use take_over "
                         "to disable it (backed up)." % (_label(target), names), details)
    blocked = [c for c in conflicts if c["disable"] is None]
    keep = {}
    for item in conflicts:
        for other, value in item["counts"].items():
            if other == target["pci"] or item["disable"] is None:
                continue
            if item["kind"] != "udev" or value is None:
                blocked.append(item)
            else:
                keep[other] = value
    if blocked:
        raise AgentError("other_boot_config_unsupported", "%s: cannot take over from %s: %s. Change it by hand." % (
            _label(target), "; ".join(_describe_source(b) for b in blocked),
            "; ".join(sorted(set(b["disable_blocker"] or "it also sets the VF count of other PFs" for b in blocked)))),
            details)
    return conflicts, keep


def op_set_vfs(system, args, deadline):
    """The VF count (_set_vfs_count), then the PF MTU and the persisted state of re-created VFs."""
    mtu = args.get("mtu")
    if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= 9216):
        raise _bad("mtu must be an integer from 68 to 9216", field="mtu", value=repr(mtu))
    if mtu is not None:
        _mtu_check(system, _set_vfs_request(args), mtu)
    held = _hold_autoprobe(system, args, deadline)
    try:
        result = _set_vfs_count(system, args, deadline)
        result = _set_vfs_after(system, args, result, mtu, deadline)
    except AgentError as exc:
        if held is not None:
            exc.details.setdefault("actions", []).extend(_release_autoprobe(system, held, deadline))
        raise
    if held is not None:
        result["actions"][:0] = held["actions"]
        result["actions"].extend(_release_autoprobe(system, held, deadline))
    return result


# sysfs-bus-pci sriov_drivers_autoprobe, kernel pci_device_can_probe(): with 0, a new VF is probed
# by no driver, except the one its driver_override names (drivers_probe). Written before the
# sriov_numvfs write on a PF with a persisted VF driver, so that the VF's own driver does not take
# it first (Documentation/networking/device_drivers/ethernet/amd/pds_vfio_pci.rst "Prevent non-vfio
# VF driver from probing the VF device"); the previous value is written back afterwards and the
# VFs left without a driver are probed then (their kernel match).
def _hold_autoprobe(system, args, deadline):
    try:
        target = _resolve_target(system, _set_vfs_request(args))
    except AgentError:
        return None  # _set_vfs_count reports it
    drivers = (_read_vf_state(system).get(target["pci"]) or {}).get("drivers") or {}
    count = args.get("count")
    if not any(d != "default" for d in drivers.values()) or isinstance(count, bool) or not isinstance(count, int) \
            or not count:
        return None
    path = target["dev"] + "/sriov_drivers_autoprobe"
    previous = _read_int(system, path)
    numvfs, busy = _read_numvfs(system, target["dev"], deadline)
    if previous != 1 or busy or count == numvfs:
        return None
    try:
        system.write_text(path, "0\n")
    except OSError:
        return None
    return {"dev": target["dev"], "path": path, "previous": previous, "count": count,
            "actions": ["wrote 0 to %s (VFs with a persisted driver are bound by that driver only)" % path]}


def _release_autoprobe(system, held, deadline):
    actions = []
    try:
        system.write_text(held["path"], "%d\n" % held["previous"])
        actions.append("wrote %d back to %s" % (held["previous"], held["path"]))
    except OSError as exc:
        return ["could not write %s back: %s" % (held["path"], exc.strerror or exc)]
    for entry in _list(system, held["dev"]):
        if re.match(r"^virtfn\d+$", entry) and _link_base(system, held["dev"] + "/" + entry + "/driver") is None:
            vf_pci = _link_base(system, held["dev"] + "/" + entry)
            try:
                _sysfs_write(system, DRIVERS_PROBE, vf_pci, deadline)
                actions.append("probed %s (%s)" % (vf_pci, _link_base(system, SYS_PCI + "/" + vf_pci + "/driver")
                                                   or "no driver matches it"))
            except OSError as exc:
                actions.append("probing %s failed: %s" % (vf_pci, exc.strerror or exc))
    return actions


def _mtu_check(system, req, mtu):
    """An MTU change resets many PF drivers (igb_change_mtu: down and up again, the link flaps):
    refused on a bond/bridge port, whose MTU its master decides, and on the PF that carries the
    management connection unless allow_management_link."""
    target = _resolve_target(system, req)
    pf = target["pf"]
    if pf is None:
        raise AgentError("pf_no_netdev", "%s has no network interface, so it has no MTU to set." % target["pci"],
                         {"pci_address": target["pci"]})
    if _read_int(system, "%s/%s/mtu" % (SYS_NET, pf)) == mtu:
        return
    link = _link_facts(_net_topology(system), pf, _link_base(system, target["dev"] + "/driver"))
    if link["master"]:
        raise AgentError("pf_enslaved", "%s is a port of %s %s: its MTU follows the master's. Set the MTU of %s "
                         "instead." % (pf, link["master"]["kind"] or "device", link["master"]["name"],
                                       link["master"]["name"]),
                         {"pf": pf, "pci_address": target["pci"], "master": link["master"]})
    if link["management"] and not req["allow_management_link"]:
        raise AgentError("management_link", "%s carries the SSH connection SR-IOV Console manages this host over: "
                         "changing its MTU resets the PF (its link drops), and a path MTU mismatch may cut the "
                         "session. Set allow_management_link if a console on the host is at hand." % pf,
                         {"pf": pf, "pci_address": target["pci"], "link": link, "mtu": mtu})


def _set_vfs_after(system, args, result, mtu, deadline):
    pf, pci, actions = result["pf"], result["pci_address"], result["actions"]
    persist = _valid_bool(args.get("persist"), "persist", True)
    mtu_path = "%s/%s/mtu" % (SYS_NET, pf) if pf else None
    result.setdefault("before", {})["mtu"] = _read_int(system, mtu_path) if mtu_path else None
    if result["count"] and result["before"].get("sriov_numvfs") != result["count"] and not result.get(
            "reboot_required"):
        # New VFs start with the PF driver's defaults and no driver_override: the VF units run the
        # installed agent for them too, this run does not wait for it.
        result.setdefault("warnings", []).extend(_apply_persisted_pf(system, pci, deadline, actions))
    if mtu is not None and result["before"]["mtu"] != mtu:
        rc, out, err = system.run(["ip", "link", "set", "dev", pf, "mtu", str(mtu)], QUERY_TIMEOUT)
        if rc != 0:
            raise AgentError("mtu_failed", "%s: the VF count is applied, but setting the MTU to %d failed: %s" % (
                pf, mtu, (err or out).strip()[-300:]), {"pf": pf, "pci_address": pci, "mtu": mtu, "actions": actions})
        actions.append("ip link set dev %s mtu %d" % (pf, mtu))
    result.setdefault("after", {})["mtu"] = _read_int(system, mtu_path) if mtu_path else None
    state = _read_vf_state(system)
    if mtu is not None and (persist or (state.get(pci) or {}).get("mtu") is not None):
        state[pci] = dict(state.get(pci) or {}, mtu=mtu if persist else None)  # not persisted: dropped
        txn = _FileTxn(system)
        try:
            ok, _reason = _save_vf_state(system, state, txn, actions)
        except AgentError:
            txn.rollback(actions)
            raise
        if persist and result.get("persisted") is not None:
            result["persisted"] = bool(result["persisted"] and ok)
    return result


def _set_vfs_count(system, args, deadline):
    req = _set_vfs_request(args)
    target = _resolve_target(system, req)
    count = req["count"]
    dev = target["dev"]
    release = _kernel_release(system)
    driver = _link_base(system, dev + "/driver")
    numvfs_path = dev + "/sriov_numvfs"
    # Feature detection: sriov_numvfs present -> the sysfs route, whatever the version says
    # (vendor kernels backport it); absent on a kernel older than 3.8 -> max_vfs.
    legacy = _is_legacy_kernel(release) and not system.exists(numvfs_path)
    label = _label(target)
    if legacy:
        if driver not in LEGACY_MAX_VFS:
            raise AgentError("not_sriov_capable", "%s uses driver %s, which has no max_vfs parameter on this kernel "
                             "(%s)." % (label, driver, release),
                             {"pf": target["pf"], "pci_address": target["pci"], "driver": driver, "kernel": release})
    elif not system.exists(numvfs_path):
        raise AgentError("not_sriov_capable", "%s (driver %s) is not SR-IOV capable (no sriov_numvfs)." % (
            label, driver), {"pf": target["pf"], "pci_address": target["pci"], "driver": driver})
    _check_binding(system, target, driver)
    inv = _Inventory(system, deadline=deadline)
    before = _pf_state(system, target, inv, legacy, deadline)
    if before["device_busy"]:
        raise _device_busy(target, None, _busy_vfs(system, before, inv), numvfs_path)
    current, total = before["sriov_numvfs"], before["sriov_totalvfs"]
    if current is None:
        raise AgentError("read_failed", "Cannot read %s." % numvfs_path, {"path": numvfs_path})
    if total is None:
        raise AgentError("not_sriov_capable", "%s reports no sriov_totalvfs." % label,
                         {"pf": target["pf"], "pci_address": target["pci"]})
    if total == 0:
        raise AgentError("not_capable_now", "%s cannot have VFs now: %s" % (label, _not_capable_reason(0, driver)),
                         {"pf": target["pf"], "pci_address": target["pci"], "sriov_totalvfs": 0})
    if count > total:
        raise AgentError("exceeds_total", "%s supports at most %d VFs; %d were requested." % (label, total, count),
                         {"pf": target["pf"], "pci_address": target["pci"], "requested": count,
                          "sriov_totalvfs": total})
    if legacy:
        return _set_vfs_legacy(system, req, target, driver, before, inv, release)
    return _set_vfs_sysfs(system, req, target, before, inv, deadline)


def _set_vfs_sysfs(system, req, target, before, inv, deadline):
    count, current, pci = req["count"], before["sriov_numvfs"], target["pci"]
    unmanaged = current > 0 and pci not in inv.managed
    reset_first = current > 0 and count > 0 and count != current
    drops = 0 if count == current else (2 if reset_first else 1)
    link = _link_facts(inv.topology, target["pf"], before["driver"])
    warnings = []
    persist_skipped = None
    if count != current:
        if unmanaged and not req["take_over"]:
            raise AgentError("externally_managed", "%s already has %d VFs that SR-IOV Console did not configure (not "
                             "in %s). Refusing to change them; use take_over to take them over." % (
                                 _label(target), current, UDEV_RULES_PATH),
                             {"pf": target["pf"], "pci_address": pci, "sriov_numvfs": current})
        _guest_impact(req, target, before, count, reset_first, inv)
        warnings.extend(_autostart_impact(req, target, before, count, inv))
        _management_check(req, target, link, drops)
    elif req["persist"] and unmanaged and not req["take_over"] and inv.managed.get(pci) != count:
        # Equal count on a PF someone else configured: recording it would silently adopt the PF.
        persist_skipped = "externally_managed"
    to_disable, keep = _other_config_plan(req, target, count, inv) if persist_skipped is None else ([], {})

    actions = []
    txn = _FileTxn(system)
    vf_netdevs_ready = None
    try:
        if to_disable:
            _disable_sources(system, to_disable, txn, actions)
        # Ownership first: persist the new count BEFORE the sysfs write, so that a persistence
        # failure cannot leave VFs the console created without the console's record (which would
        # make them "externally managed" later). Rolled back if the write fails.
        if req["persist"] and persist_skipped is None:
            _ensure_udev(system, pci, count, actions, txn, keep)
    except AgentError:
        txn.rollback(actions)
        raise
    if count != current:
        # A failed write rolls the files back (_set_vfs_failed); once the kernel took the count,
        # the records stay, whatever happens while waiting for the VFs.
        vf_netdevs_ready = _apply_count(system, req, target, before, inv, deadline, txn, actions, reset_first)
    return _set_vfs_result(system, req, target, before, inv, actions, warnings, link, drops, to_disable,
                           vf_netdevs_ready, persist_skipped)


def _apply_count(system, req, target, before, inv, deadline, txn, actions, reset_first):
    count, current = req["count"], before["sriov_numvfs"]
    numvfs_path = target["dev"] + "/sriov_numvfs"
    label = _label(target)
    wrote_zero = False
    try:
        if reset_first:
            _write_numvfs(system, numvfs_path, 0, target, deadline)
            wrote_zero = True
            actions.append("wrote 0 to sriov_numvfs of %s first: the kernel refuses to change a non-zero VF count "
                           "to another non-zero count (EBUSY)" % label)
        retries = _write_numvfs(system, numvfs_path, count, target, deadline)
        actions.append("wrote %d to sriov_numvfs of %s (was %d)%s" % (
            count, label, 0 if reset_first else current,
            "" if not retries else " after %d EAGAIN retr%s" % (retries, "y" if retries == 1 else "ies")))
    except AgentError as exc:
        _set_vfs_failed(system, exc, target, before, inv, wrote_zero, txn, actions, deadline)
        raise
    enabled, busy = _read_numvfs(system, target["dev"], deadline)
    if busy:
        raise _device_busy(target, None, _busy_vfs(system, before, inv), numvfs_path)
    if count and enabled is not None and enabled < count:
        _partial_enable(system, req, target, enabled, txn, actions)
    wait = min(req["wait_seconds"], deadline.bound(MAX_WAIT_SECONDS))
    return _wait_vfs(system, target, count, wait, actions)


def _partial_enable(system, req, target, enabled, txn, actions):
    """sriov_numvfs_store() succeeds when the driver enables fewer VFs than asked ("%d VFs requested;
    only %d enabled"): report it, and persist only what exists."""
    count = req["count"]
    if req["persist"]:
        _ensure_udev(system, target["pci"], enabled, actions, txn)
    raise AgentError("partial_enable", "%s: %d VFs were asked for, the driver enabled only %d (%d missing). %s The "
                     "missing %d are not persisted. Usual causes: not enough queues, interrupt vectors or firmware "
                     "resources for that many VFs; ask for at most %d." % (
                         _label(target), count, enabled, count - enabled,
                         ("%d VFs are persisted." % enabled) if req["persist"] and enabled else "", count - enabled,
                         enabled),
                     {"pf": target["pf"], "pci_address": target["pci"], "requested": count, "enabled": enabled,
                      "missing": count - enabled, "persisted_count": enabled if req["persist"] else None,
                      "actions": list(actions)})


def _set_vfs_result(system, req, target, before, inv, actions, warnings, link, drops, disabled, ready, skipped):
    count, pci = req["count"], target["pci"]
    managed_after = _managed_counts(system, False)
    after_inv = _Inventory(system, defined_guests=False) if (disabled or actions) else inv
    after = _pf_state(system, target, after_inv, False)
    remaining = _conflicting(_boot_sources(system, inv.pf_descriptors(), inv.forms), pci, count)
    result = {
        "pf": target["pf"], "pci_address": pci, "count": count, "before": before, "after": after,
        "actions": actions, "reboot_required": False,
        "persisted": (managed_after.get(pci, 0) == count and not remaining) if req["persist"] else None,
        "persistence_file": UDEV_RULES_PATH, "vf_netdevs_ready": ready,
        "link": link, "link_drops": drops, "warnings": warnings,
        "disabled_other_config": disabled, "other_config": [i for i in _boot_sources(
            system, inv.pf_descriptors(), inv.forms) if pci in i["counts"]],
    }
    if skipped is not None:
        result["persisted"] = False
        result["reason"] = skipped
    elif req["persist"] and remaining:
        result["reason"] = "other_boot_config"
    return result


def _set_vfs_failed(system, exc, target, before, inv, wrote_zero, txn, actions, deadline):
    """A sysfs write failed: say exactly what state the PF is in now, try to put the previous count
    back when the reset to 0 succeeded, and roll back the files written beforehand."""
    numvfs_path = target["dev"] + "/sriov_numvfs"
    before_count = before["sriov_numvfs"]
    value = exc.details.get("value")
    label = _label(target)
    if value == 0 and exc.details.get("errno") in ("EPERM", "EINVAL", "EBUSY") and _is_root():
        exc.code = "vfs_assigned"
        exc.message = ("The driver refuses to free VFs that are assigned to guests (%s writing 0 to sriov_numvfs of "
                       "%s). Detach the VFs from the guests first." % (exc.details.get("errno"), label))
    pending = exc.details.get("errno") == "ETIMEDOUT"
    if pending:
        held = _busy_vfs(system, before, inv)
        busy = _device_busy(target, value, held, numvfs_path)
        if held:
            exc.code, exc.message = busy.code, busy.message
        exc.details.update(busy.details)
    failed_at, _busy = _read_numvfs(system, target["dev"], deadline)
    now = failed_at
    if wrote_zero and failed_at == 0 and not pending:
        try:
            _write_numvfs(system, numvfs_path, before_count, target, deadline)
            actions.append("restored the previous count: wrote %d to sriov_numvfs of %s after writing %d failed" % (
                before_count, label, value))
        except AgentError as restore_exc:
            actions.append("could not restore the previous count %d of %s: %s" % (
                before_count, label, restore_exc.message))
        now, _busy = _read_numvfs(system, target["dev"], deadline)
    txn.rollback(actions)
    exc.details["actions"] = list(actions)
    exc.details["sriov_numvfs_before"] = before_count
    exc.details["sriov_numvfs_after_failure"] = failed_at
    exc.details["sriov_numvfs_now"] = now
    exc.details["partially_applied"] = now != before_count
    exc.message = "%s now has %s VFs (had %d). %s" % (
        target["pf"] or target["pci"], "an unknown number of" if now is None else now, before_count, exc.message)
    exc.args = (exc.message,)


def _is_root():
    geteuid = getattr(os, "geteuid", None)
    return geteuid is None or geteuid() == 0


def _set_vfs_legacy(system, req, target, driver, before, inv, release):
    """Kernels < 3.8: the count is the driver's max_vfs module option, applied at the next boot."""
    count, current, pci = req["count"], before["sriov_numvfs"], target["pci"]
    param = inv.param.get(driver) or _max_vfs_param(system, driver)
    if not param["form"]:
        raise AgentError("max_vfs_type_unknown", "Cannot tell how %s takes max_vfs on this kernel (%s). Writing the "
                         "wrong form (a list where the driver takes one number) keeps %s from loading at boot, so "
                         "nothing was written." % (driver, param["error"], driver),
                         {"pf": target["pf"], "pci_address": pci, "driver": driver, "error": param["error"]})
    if count != current and current > 0 and pci not in inv.managed and not req["take_over"]:
        raise AgentError("externally_managed", "%s already has %d VFs that SR-IOV Console did not configure (not "
                         "in %s). Refusing to change them; use take_over to take them over." % (
                             _label(target), current, MODPROBE_CONF_PATH),
                         {"pf": target["pf"], "pci_address": pci, "sriov_numvfs": current})
    _other_config_plan(req, target, count, inv)
    ports = _legacy_ports(system, driver)
    if pci not in ports:
        ports = sorted(set(ports) | {pci})
    exists, drivers, foreign = _read_modprobe(system)
    planned = _max_vfs_values(drivers.get(driver, []), ports, param["form"]) if driver in drivers else {}
    for port in ports:
        if port not in planned:
            port_dev = SYS_NET + "/" + (_netdev_by_pci(system, port) or "") + "/device"
            planned[port] = len([e for e in _list(system, port_dev) if re.match(r"^virtfn\d+$", e)])
    if param["form"] == "single":
        others = dict((p, c) for p, c in planned.items() if p != pci and c != count)
        if others and not req["apply_to_all_ports"]:
            raise AgentError("max_vfs_applies_to_all_ports", "%s takes max_vfs as one number (%s) for every port on "
                             "this kernel: %d VFs on %s means %d on %s too (now %s). Ask for the same count on every "
                             "%s port (set apply_to_all_ports), or use a kernel of 3.8 or newer." % (
                                 driver, param["type"], count, _label(target), count, ", ".join(sorted(others)),
                                 ", ".join("%s: %d" % (p, c) for p, c in sorted(others.items())), driver),
                             {"pf": target["pf"], "pci_address": pci, "driver": driver, "param_type": param["type"],
                              "other_ports": others})
        values = [count]
        new_counts = dict((p, count) for p in ports)
    else:
        new_counts = dict(planned, **{pci: count})
        values = [new_counts[p] for p in ports]
    for port, new in sorted(new_counts.items()):
        port_before = before if port == pci else {"vfs": _vfs_of(system, SYS_NET + "/" + (
            _netdev_by_pci(system, port) or "") + "/device", inv.usage, inv.reserved, inv.uses)}
        port_target = {"pf": _netdev_by_pci(system, port), "pci": port, "dev": None}
        if new != planned.get(port):
            _guest_impact(req, port_target, port_before, new, False, inv)
    warnings = []
    for port, new in sorted(new_counts.items()):
        if port == pci:
            warnings.extend(_autostart_impact(req, target, before, new, inv))
    actions = []
    txn = _FileTxn(system)
    initramfs = None
    new_drivers = dict(drivers)
    new_drivers[driver] = values
    if not (exists and new_drivers == drivers):
        txn.write(MODPROBE_CONF_PATH, _render_modprobe(new_drivers, foreign), "modprobe.d file")
        actions.append("wrote 'options %s max_vfs=%s' to %s (%s); the count applies after a reboot (kernel older "
                       "than 3.8)" % (driver, ",".join(str(v) for v in values), MODPROBE_CONF_PATH,
                                      "one value for every %s port: the parameter is %s" % (driver, param["type"])
                                      if param["form"] == "single" else
                                      "ports in PCI order: %s; the parameter is %s" % (
                                          ", ".join(ports), param["type"])))
        initramfs = _refresh_initramfs(system, release, driver, txn, actions)
    managed_after = _managed_counts(system, True, dict(inv.forms, **{driver: param["form"]}))
    stale = initramfs is not None and initramfs["contains_driver"] is True and not initramfs["regenerated"]
    after = _pf_state(system, target, inv, True)
    after["persisted_count"] = managed_after.get(pci)
    result = {
        "pf": target["pf"], "pci_address": pci, "count": count, "before": before, "after": after,
        "actions": actions, "reboot_required": count != current,
        "persisted": managed_after.get(pci, 0) == count and not stale,
        "persistence_file": MODPROBE_CONF_PATH, "vf_netdevs_ready": None, "warnings": warnings,
        "max_vfs": {"driver": driver, "param_type": param["type"], "form": param["form"],
                    "value": ",".join(str(v) for v in values), "ports": new_counts,
                    "applies_to_all_ports": param["form"] == "single"},
        "initramfs": initramfs, "link_drops": 0,
    }
    if stale:
        result["reason"] = "initramfs_stale"
    return result


# ---------------------------------------------------------------------------------------------
# VF operations: shared helpers (targets, guests, the managed VF state and its udev rules)
# ---------------------------------------------------------------------------------------------


def _vf_target(system, args, need_netdev):
    """The PF of a VF operation (as set_vfs addresses it) and its VFs {index: {pci_address, dev}}."""
    pf = args.get("pf")
    req = {"pf": None if pf is None else _valid_ifname(pf, "pf"),
           "pci_address": _valid_pci(args.get("pci_address"), "pci_address")}
    target = _resolve_target(system, req)
    if need_netdev and target["pf"] is None:
        raise AgentError("pf_no_netdev", "%s has no network interface: the PF driver holds the VF settings, and "
                         "`ip link set dev <pf> vf N` needs the PF's interface. Bind the PF to its network driver "
                         "first." % target["pci"], {"pci_address": target["pci"]})
    vfs = {}
    for entry in _list(system, target["dev"]):
        match = re.match(r"^virtfn(\d+)$", entry)
        if match:
            link = target["dev"] + "/" + entry
            vfs[int(match.group(1))] = {"pci_address": _link_base(system, link), "dev": SYS_PCI + "/" + (
                _link_base(system, link) or "")}
    target["vfs"] = vfs
    return target


def _no_such_vf(target, indexes):
    missing = sorted(set(i for i in indexes if i not in target["vfs"]))
    if missing:
        raise AgentError("no_such_vf", "%s has %d VFs (0-%d); there is no VF %s. Create the VFs first (set_vfs)." % (
            _label(target), len(target["vfs"]), len(target["vfs"]) - 1, ", ".join(str(i) for i in missing)),
            {"pf": target["pf"], "pci_address": target["pci"], "missing": missing,
             "sriov_numvfs": len(target["vfs"])})


def _guest_check(target, inv, indexes, allow, what):
    """Refuse to change VFs a running guest uses (vf_in_use), or when that cannot be known
    (guest_check_failed), unless allowed -> warnings."""
    guests = inv.guests["guests"]
    if guests is None:
        if allow:
            return ["cannot tell whether running guests use these VFs (%s)" % inv.guests["error"]]
        raise AgentError("guest_check_failed", "Cannot tell whether running guests use the VFs of %s that this change "
                         "touches: %s. Allow guest impact to proceed anyway." % (_label(target), inv.guests["error"]),
                         {"pf": target["pf"], "pci_address": target["pci"], "error": inv.guests["error"]})
    in_use = []
    for index in sorted(indexes):
        names = inv.usage.get(target["vfs"][index]["pci_address"], [])
        if names:
            in_use.append({"index": index, "pci_address": target["vfs"][index]["pci_address"], "used_by": names})
    if not in_use:
        return []
    names = sorted(set(n for vf in in_use for n in vf["used_by"]))
    text = "%s: %s VF %s used by running guest%s %s" % (
        _label(target), what, ", ".join(str(v["index"]) for v in in_use), "" if len(names) == 1 else "s",
        ", ".join(names))
    if allow:
        return [text + " (allowed by the request)"]
    raise AgentError("vf_in_use", text + ". Stop or migrate the guest, or allow guest impact.",
                     {"pf": target["pf"], "pci_address": target["pci"], "guests": names, "vfs": in_use})


def _vf_pci_of(system, pf_dev, index):
    """The PCI address of VF index: its virtfn link, else the PF's routing ID + sriov_offset +
    index * sriov_stride (PCIe SR-IOV: First VF Offset, VF Stride; sysfs-bus-pci)."""
    pci = _link_base(system, "%s/virtfn%d" % (pf_dev, index))
    if pci:
        return pci
    offset, stride = _read_int(system, pf_dev + "/sriov_offset"), _read_int(system, pf_dev + "/sriov_stride")
    pf = _link_base(system, pf_dev)
    if offset is None or stride is None or not pf or not PCI_RE.match(pf):
        return None
    domain, bus, rest = pf.split(":")
    slot, func = rest.split(".")
    rid = (int(bus, 16) << 8) + (int(slot, 16) << 3) + int(func) + offset + index * stride
    return "%s:%02x:%02x.%x" % (domain, rid >> 8, (rid >> 3) & 0x1f, rid & 7)


def _own_source(system):
    """This agent's bytes, for the copy the units run: what the System seam says it runs (simfleet), the
    file when run as a script, else what the bootstrap decompressed (remote.protocol.BOOTSTRAP:
    `a`, checked against its sha256 `s`)."""
    getter = getattr(system, "agent_source", None)
    source = getter() if getter is not None else None
    if source:
        return source
    path = globals().get("__file__")
    if path and os.path.isfile(path):
        with open(path, "rb") as f:
            return f.read()
    main = sys.modules.get("__main__")
    data, digest = getattr(main, "a", None), getattr(main, "s", None)
    if isinstance(data, bytes) and isinstance(digest, bytes) and hashlib.sha256(data).hexdigest().encode() == digest:
        return data
    return None


def _system_python(system):
    for path in SYSTEM_PYTHONS:
        if system.which(path):
            return path
    return SYSTEM_PYTHONS[0]


def _boot_files(system, source):
    """(path, text, mode, what) of the files that bring the persisted state back, in the order they
    are installed: the agent copy first, the udev rule last (nothing starts a unit before the
    program it runs is there)."""
    python = _system_python(system)
    return [(AGENT_COPY_PATH, source, 0o755, "agent copy"),
            (VF_UNIT_PATH, VF_UNIT_FORMAT.format(python=python), 0o644, "VF systemd unit"),
            (BOOT_UNIT_PATH, BOOT_UNIT_FORMAT.format(python=python), 0o644, "boot systemd unit"),
            (VF_RULES_PATH, VF_RULES_HEADER + VF_RULE + "\n", 0o644, "VF udev rule")]


def _systemctl(system, argv, txn, actions, undo=None):
    """systemctl through the seam; a host without it (no systemd) is said, not failed."""
    if not system.which("systemctl"):
        actions.append("systemctl is not installed: `systemctl %s` not run" % " ".join(argv))
        return
    rc, _out, err = system.run(["systemctl"] + argv, QUERY_TIMEOUT)
    if rc != 0:
        raise AgentError("write_failed", "systemctl %s failed, so the persisted VF state would not come back at "
                         "boot: %s" % (" ".join(argv), (err or "").strip()[-300:]),
                         {"argv": ["systemctl"] + argv, "stderr": (err or "").strip()[-500:],
                          "actions": list(actions)})
    actions.append("systemctl " + " ".join(argv))
    if undo is not None:
        txn.undo.append(["systemctl"] + undo)


def _install_boot_files(system, source, txn, actions):
    changed = False
    for path, text, mode, what in _boot_files(system, source):
        current = _read(system, path)
        if current is not None and current == text.strip():
            continue
        if current is not None and path != AGENT_COPY_PATH and MANAGED_MARKER not in current:
            txn.backup(path, actions)  # a file of that name the console did not write
        txn.write(path, text, what, mode=mode)
        actions.append("installed %s" % path)
        changed = changed or path != AGENT_COPY_PATH
    if changed:
        _systemctl(system, ["daemon-reload"], txn, actions)
    if changed or not system.exists(SYSTEMD_UNIT_DIR + "/multi-user.target.wants/" + BOOT_UNIT):
        _systemctl(system, ["enable", BOOT_UNIT], txn, actions, undo=["disable", BOOT_UNIT])


def _remove_boot_files(system, txn, actions):
    """The rule first (no new unit starts), the units, the state, the agent copy, then the
    directories the console made when they are empty."""
    if system.exists(BOOT_UNIT_PATH):
        _systemctl(system, ["disable", BOOT_UNIT], txn, actions, undo=["enable", BOOT_UNIT])
    for path in (VF_RULES_PATH, VF_UNIT_PATH, BOOT_UNIT_PATH, VF_STATE_PATH, AGENT_COPY_PATH):
        if system.exists(path) and (path in (VF_STATE_PATH, AGENT_COPY_PATH) or
                                    MANAGED_MARKER in (_read(system, path) or "")):
            txn.remove(path)
            actions.append("removed %s (nothing persisted any more)" % path)
        if system.exists(path + BACKUP_SUFFIX):  # the file of that name that was there before the console's
            txn.write(path, system.read_text(path + BACKUP_SUFFIX), "restored file")
            txn.remove(path + BACKUP_SUFFIX)
            actions.append("restored %s from %s" % (path, path + BACKUP_SUFFIX))
    remove_dir = getattr(system, "remove_dir", None)
    for directory in (os.path.dirname(VF_STATE_PATH), AGENT_COPY_DIR):
        if remove_dir is not None and system.is_dir(directory) and not _list(system, directory):
            try:
                remove_dir(directory)
                actions.append("removed the empty directory %s" % directory)
            except OSError:
                pass


def _prune_state(state):
    out = {}
    for pf, entry in state.items():
        kept = dict((k, v) for k, v in entry.items() if v)
        if kept:
            out[pf] = kept
    return out


def _save_vf_state(system, state, txn, actions):
    """Write the managed VF state and install what applies it at boot and on VF add events (or
    remove all of it when nothing is persisted) -> (persisted, reason or None)."""
    state = _prune_state(state)
    old = _read_vf_state(system)
    if not state:
        _remove_boot_files(system, txn, actions)
        return True, None
    source = _own_source(system)
    if source is None:
        return False, "agent_copy_unavailable"
    doc = {"comment": MANAGED_MARKER + ". Do not edit: this file is rewritten by the console. VF settings, "
                      "drivers and PF MTUs per PF PCI address and VF index, applied by " + BOOT_UNIT + " and " +
                      VF_UNIT + ".", "version": 1, "pfs": state}
    if state != old:
        txn.write(VF_STATE_PATH, json.dumps(doc, indent=1, sort_keys=True) + "\n", "VF state file")
        actions.append("persisted the VF state in %s" % VF_STATE_PATH)
    _install_boot_files(system, source.decode("utf-8", "surrogateescape"), txn, actions)
    return True, None


def _persist_entries(system, pci, section, updates, removals, txn, actions):
    """Merge {index: value} into state[pci][section], drop removals -> (persisted, reason)."""
    state = _read_vf_state(system)
    entry = dict(state.get(pci) or {})
    values = dict(entry.get(section) or {})
    for index, value in updates.items():
        values[str(index)] = value
    for index in removals:
        values.pop(str(index), None)
    entry[section] = values
    state[pci] = entry
    return _save_vf_state(system, state, txn, actions)


# ---------------------------------------------------------------------------------------------
# vf_config: per-VF settings through the PF driver (ip link set dev <pf> vf N ...)
# ---------------------------------------------------------------------------------------------

VF_CONFIG_ARGS = ("pf", "pci_address", "vfs", "persist", "allow_guest_impact")
# ip-link(8): ip link set dev DEV vf NUM [mac LLADDR] [vlan VLANID [qos VLAN-QOS]] [max_tx_rate
# TXRATE] [min_tx_rate TXRATE] [spoofchk on|off] [state auto|enable|disable] [trust on|off]
APPLY_ORDER = ("mac", "vlan", "spoofchk", "trust", "link_state", "max_tx_rate", "min_tx_rate")


def _valid_vf_entry(item, position):
    field = "vfs[%d]" % position
    if not isinstance(item, dict):
        raise _bad("%s must be an object" % field, field=field)
    unknown = sorted(set(item) - set(("index",) + VF_FIELDS))
    if unknown:
        raise _bad("%s has unknown settings: %s (allowed: %s)" % (field, ", ".join(unknown), ", ".join(VF_FIELDS)),
                   field=field, unknown=unknown)
    want = {"index": _valid_count(item.get("index"), field + ".index")}
    for key, limit in (("vlan", 4095), ("qos", 7), ("max_tx_rate", 10 ** 7), ("min_tx_rate", 10 ** 7)):
        if item.get(key) is not None:
            want[key] = _valid_count(item[key], "%s.%s" % (field, key))
            if want[key] > limit:
                raise _bad("%s.%s must be at most %d" % (field, key, limit), field=field + "." + key)
    for key in ("spoofchk", "trust"):
        if item.get(key) is not None:
            want[key] = _valid_bool(item[key], "%s.%s" % (field, key), None)
    if item.get("link_state") is not None:
        if item["link_state"] not in LINK_STATES:
            raise _bad("%s.link_state must be one of %s" % (field, ", ".join(LINK_STATES)), field=field + ".link_state")
        want["link_state"] = item["link_state"]
    if item.get("mac") is not None:
        want["mac"] = _valid_mac(item["mac"], field + ".mac")
    if want.get("qos") and not want.get("vlan"):
        raise _bad("%s.qos needs a vlan other than 0 in the same entry (802.1p priority of the VF's VLAN)" % field,
                   field=field + ".qos")
    if want.get("min_tx_rate") and want.get("max_tx_rate") and want["min_tx_rate"] > want["max_tx_rate"]:
        raise _bad("%s: min_tx_rate must not exceed max_tx_rate" % field, field=field)
    return want


def _valid_mac(value, field):
    if value == "stable":
        return value
    text = value.lower() if isinstance(value, str) else None
    if text is None or not MAC_RE.match(text) or int(text[:2], 16) & 1 or text == NULL_MAC:
        raise _bad("%s must be \"stable\" or a unicast MAC address like 02:00:00:00:00:01" % field, field=field,
                   value=value if isinstance(value, str) else repr(value))
    return text


def _vf_config_request(args):
    vfs = args.get("vfs")
    if not isinstance(vfs, list) or not vfs:
        raise _bad("vfs must be a non-empty list of {index, settings...}", field="vfs")
    wants = [_valid_vf_entry(item, n) for n, item in enumerate(vfs)]
    indexes = [w["index"] for w in wants]
    if len(set(indexes)) != len(indexes):
        raise _bad("vfs names a VF index twice", field="vfs", indexes=indexes)
    return {"vfs": wants, "persist": _valid_bool(args.get("persist"), "persist", True),
            "allow_guest_impact": _valid_bool(args.get("allow_guest_impact"), "allow_guest_impact", False)}


def _stable_mac(system, vf_pci):
    """A locally administered unicast MAC from the host's machine id and the VF's PCI address:
    sha256("<machine-id>:<vf pci>"), first 6 bytes, first octet (b & 0xfc) | 0x02. Hosts cloned
    with the same /etc/machine-id (machine-id(5): it must be unique, an image ships it empty) get
    the same MACs for the same VF addresses; docs/agent.md says so, the derivation is the console's
    contract."""
    machine_id = _read(system, "/etc/machine-id") or ""
    digest = bytearray(hashlib.sha256(("%s:%s" % (machine_id, vf_pci)).encode("ascii")).digest()[:6])
    digest[0] = (digest[0] & 0xfc) | 0x02
    return ":".join("%02x" % b for b in digest)


def _setting_value(current, key):
    return current.get("admin_mac") if key == "mac" else current.get(key)


def _vf_changes(want, current):
    """{key: (want, got)} of the settings that differ (qos travels with vlan)."""
    changes = {}
    for key in VF_FIELDS:
        if key in want and want[key] != _setting_value(current, key):
            changes[key] = (want[key], _setting_value(current, key))
    if "qos" in changes and "vlan" not in changes:
        changes["vlan"] = (want.get("vlan", current.get("vlan")), current.get("vlan"))
    return changes


def _ip_words(key, want, merged):
    if key == "vlan":
        qos = merged.get("qos") or 0
        return ["vlan", str(want)] + (["qos", str(qos)] if want and qos else [])
    if key in ("spoofchk", "trust"):
        return [key, "on" if want else "off"]
    if key == "link_state":
        return ["state", want]
    return [key, str(want)]


def _set_vf(system, target, index, key, words):
    argv = ["ip", "link", "set", "dev", target["pf"], "vf", str(index)] + words
    rc, out, err = system.run(argv, QUERY_TIMEOUT)
    if rc == 0:
        return " ".join(argv)
    text = (err or out).strip()[-300:] or "exit status %s" % rc
    unsupported = "not supported" in text.lower()
    raise AgentError("vf_setting_unsupported", "%s VF %d: the PF driver %s %s (%s: %s)." % (
        _label(target), index, "does not support" if unsupported else "refused", key, " ".join(argv), text),
        {"pf": target["pf"], "pci_address": target["pci"], "index": index, "field": key, "argv": argv,
         "stderr": text, "unsupported": unsupported})


def _apply_vf(system, target, index, want, current, actions, done):
    """Apply the changed settings of one VF in APPLY_ORDER; done gets (key, previous value, qos)."""
    merged = dict(current, **dict((k, v) for k, v in want.items() if k != "mac"))
    changes = _vf_changes(want, current)
    order = list(APPLY_ORDER)
    if "min_tx_rate" in changes and (changes["min_tx_rate"][1] or 0) > (changes["min_tx_rate"][0] or 0):
        order.remove("min_tx_rate")
        order.insert(order.index("max_tx_rate"), "min_tx_rate")  # lower the minimum before the maximum
    for key in order:
        if key in changes:
            actions.append(_set_vf(system, target, index, key, _ip_words(key, changes[key][0], merged)))
            done.append((key, changes[key][1], current.get("qos")))


def _undo_vf(system, target, index, done, actions):
    for key, previous, qos in reversed(done):
        if previous is None:
            continue
        try:
            actions.append("restored: " + _set_vf(system, target, index, key, _ip_words(
                key, previous, {"qos": qos})))
        except AgentError as exc:
            actions.append("could not restore %s of VF %d: %s" % (key, index, exc.message))


def _verify_vfs(system, target, wants):
    after = _ip_link_vfs(system, target["pf"]) or {}
    for want in wants:
        got = after.get(want["index"]) or {}
        for key in VF_FIELDS:
            if key in want and _setting_value(got, key) != want[key]:
                raise AgentError("vf_verify_failed", "%s VF %d: %s is %r after the change, not %r: the PF driver did "
                                 "not keep it." % (_label(target), want["index"], key, _setting_value(got, key),
                                                   want[key]),
                                 {"pf": target["pf"], "pci_address": target["pci"], "index": want["index"],
                                  "field": key, "want": want[key], "got": _setting_value(got, key)})
    return after


def _reported(settings, indexes):
    return dict((str(i), settings.get(i)) for i in sorted(indexes))


def op_vf_config(system, args, deadline):
    req = _vf_config_request(args)
    target = _vf_target(system, args, need_netdev=True)
    _check_binding(system, target, _link_base(system, target["dev"] + "/driver"))
    _no_such_vf(target, [w["index"] for w in req["vfs"]])
    inv = _Inventory(system, defined_guests=False, deadline=deadline)
    before = inv.ip_vfs(target["pf"])
    if before is None:
        raise AgentError("vf_settings_unknown", "`ip -j -d link show dev %s` did not report the VF settings (iproute2 "
                         "without JSON output, or the PF driver does not report VFs)." % target["pf"],
                         {"pf": target["pf"], "pci_address": target["pci"]})
    for want in req["vfs"]:
        if want.get("mac") == "stable":
            want["mac"] = _stable_mac(system, target["vfs"][want["index"]]["pci_address"])
    changing = [w["index"] for w in req["vfs"] if _vf_changes(w, before.get(w["index"]) or {})]
    warnings = _guest_check(target, inv, changing, req["allow_guest_impact"], "this change sets")
    warnings.extend(_libvirt_decides(system, target, inv, [w for w in req["vfs"] if "mac" in w or "vlan" in w]))
    actions = []
    for want in req["vfs"]:
        done = []
        try:
            _apply_vf(system, target, want["index"], want, before.get(want["index"]) or {}, actions, done)
            if done:
                _verify_vfs(system, target, [want])
        except AgentError as exc:
            _undo_vf(system, target, want["index"], done, actions)
            exc.details["actions"] = list(actions)
            raise
    after = _verify_vfs(system, target, req["vfs"])
    persisted, reason = _persist_vf_settings(system, target, req, actions)
    indexes = [w["index"] for w in req["vfs"]]
    result = {"pf": target["pf"], "pci_address": target["pci"], "before": {"vfs": _reported(before, indexes)},
              "after": {"vfs": _reported(after, indexes)}, "actions": actions, "changed": bool(changing),
              "persisted": persisted, "persistence_file": VF_STATE_PATH, "warnings": warnings,
              "reboot_required": False}
    if reason:
        result["reason"] = reason
    return result


def _libvirt_decides(system, target, inv, wants):
    """Warnings for MAC/VLAN requests on VFs libvirt hands out: for <interface type='hostdev'> and
    hostdev networks libvirt sets the VF's MAC to the guest's and its VLAN to the XML's <vlan> (0
    without one) when the guest starts, and puts the previous values back when it stops
    (formatdomain "PCI Passthrough", formatnetwork "Setting VLAN tag")."""
    if not wants:
        return []
    networks, _error = _libvirt_networks(system, inv.guests, inv.vf_index)
    pools = [n["name"] for n in networks if n.get("mode") == "hostdev" and target["pf"] in (n.get("pfs") or [])]
    out = []
    for want in wants:
        vf_pci = target["vfs"][want["index"]]["pci_address"]
        by = ["network " + name for name in pools] + ["guest %s (hostdev)" % u["guest"] for u in inv.uses.get(
            vf_pci, []) if u["via"] == "hostdev"]
        if by:
            out.append("VF %d is handed out by libvirt (%s): while a guest has it, libvirt sets its MAC to the guest's "
                       "and its VLAN to the guest or network XML's <vlan><tag id=.../></vlan> (none: 0), and restores "
                       "these values afterwards" % (want["index"], ", ".join(by)))
    return out


def _persist_vf_settings(system, target, req, actions):
    """persist: merge the requested settings into the VF's persisted ones; else drop them."""
    state = (_read_vf_state(system).get(target["pci"]) or {}).get("vfs") or {}
    updates, removals = {}, []
    for want in req["vfs"]:
        if req["persist"]:
            merged = dict(state.get(str(want["index"])) or {})
            merged.update((k, v) for k, v in want.items() if k != "index")
            updates[want["index"]] = merged
        else:
            removals.append(want["index"])
    txn = _FileTxn(system)
    try:
        persisted, reason = _persist_entries(system, target["pci"], "vfs", updates, removals, txn, actions)
    except AgentError as exc:
        txn.rollback(actions)
        exc.details["actions"] = list(actions)
        exc.message += " The live settings were applied; they are not persisted."
        raise
    return (persisted if req["persist"] else False), reason


# ---------------------------------------------------------------------------------------------
# vf_driver: bind VF ranges to vfio-pci or a VF netdev driver (sysfs driver_override)
# ---------------------------------------------------------------------------------------------

VF_DRIVER_ARGS = ("pf", "pci_address", "ranges", "persist", "allow_guest_impact")
DRIVER_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
SYS_PCI_DRIVERS = "/sys/bus/pci/drivers"
# sysfs-bus-pci: writing a device's address to drivers_probe makes the PCI core probe it again
# (only a driver named by its driver_override may take it; an empty driver_override means the
# kernel's own ID match); drivers/<name>/unbind releases it. Writing driver_override neither
# unbinds nor loads the driver.
DRIVERS_PROBE = "/sys/bus/pci/drivers_probe"


def _vf_driver_request(args):
    ranges = args.get("ranges")
    if not isinstance(ranges, list) or not ranges:
        raise _bad("ranges must be a non-empty list of {first, last, driver}", field="ranges")
    out = []
    for n, item in enumerate(ranges):
        field = "ranges[%d]" % n
        if not isinstance(item, dict) or sorted(item) != ["driver", "first", "last"]:
            raise _bad("%s must be {first, last, driver}" % field, field=field)
        first, last = _valid_count(item["first"], field + ".first"), _valid_count(item["last"], field + ".last")
        driver = item["driver"]
        if last < first:
            raise _bad("%s: last (%d) is before first (%d)" % (field, last, first), field=field)
        if not isinstance(driver, str) or not DRIVER_NAME_RE.match(driver):
            raise _bad("%s.driver must be vfio-pci, a VF driver name (igbvf, iavf, ixgbevf, mlx5_core, ...) or "
                       "default" % field, field=field + ".driver", value=repr(driver))
        out.append({"first": first, "last": last, "driver": driver})
    ordered = sorted(out, key=lambda r: r["first"])
    for prev, cur in [(ordered[n - 1], ordered[n]) for n in range(1, len(ordered))]:
        if cur["first"] <= prev["last"]:
            raise _bad("ranges overlap: VFs %d-%d and %d-%d" % (prev["first"], prev["last"], cur["first"], cur["last"]),
                       field="ranges", reason="overlapping_ranges")
    return {"ranges": out, "persist": _valid_bool(args.get("persist"), "persist", True),
            "allow_guest_impact": _valid_bool(args.get("allow_guest_impact"), "allow_guest_impact", False)}


def _bind_needed(current, override, driver):
    if driver == "default":
        return override is not None or current is None or current in PASSTHROUGH_DRIVERS
    return override != driver or current != driver


def _ensure_driver(system, driver, actions):
    """A driver that is not loaded has no /sys/bus/pci/drivers/<name>: load it (vfio-pci is a module)."""
    if system.is_dir(SYS_PCI_DRIVERS + "/" + driver):
        return
    rc, _out, err = system.run(["modprobe", driver], QUERY_TIMEOUT) if system.which("modprobe") else (
        127, "", "modprobe is not installed")
    if rc == 0:
        actions.append("loaded the %s module (modprobe %s)" % (driver, driver))
    if not system.is_dir(SYS_PCI_DRIVERS + "/" + driver):
        raise AgentError("driver_unavailable", "The driver %s is not loaded and `modprobe %s` did not load it (%s): "
                         "no VF can be bound to it." % (driver, driver, (err or "").strip()[-200:] or rc),
                         {"driver": driver, "stderr": (err or "").strip()[-500:]})


def _sysfs_write(system, path, value, deadline):
    """A bounded write: unbinding a VF that vfio-pci gives to a guest waits until QEMU releases it."""
    writer = getattr(system, "write_sysfs", None)
    if writer is None:
        return system.write_text(path, value)
    return writer(path, value, max(MIN_WRITE_SECONDS, deadline.bound(getattr(system, "write_timeout",
                                                                            SYSFS_WRITE_TIMEOUT))))


BIND_VERIFY_SECONDS = 2.0


def _bind_vf(system, vf_pci, driver, deadline, actions):
    """driver_override first, then unbind whatever is bound if it is not the wanted driver, then
    drivers_probe, then a short verify poll -> whether anything was done. The kernel probes a new VF
    right after its add event (holding the device lock), so the driver read before the override was
    written may be stale: it is read again after. "default" clears the override and lets the kernel's
    own match bind the VF again. A failure puts the previous override back and probes again, so the
    VF is not left without a driver."""
    dev = SYS_PCI + "/" + vf_pci
    current, override = _link_base(system, dev + "/driver"), _driver_override(system, dev)
    if not _bind_needed(current, override, driver):
        return False
    wanted = None if driver == "default" else driver
    if wanted == "vfio-pci" and not system.exists(dev + "/iommu_group"):
        raise AgentError("vf_bind_failed", "VF %s has no IOMMU group, so vfio-pci cannot take it: turn the IOMMU "
                         "on first (kernel_args intel_iommu=on / amd_iommu=on, then reboot)." % vf_pci,
                         {"pci_address": vf_pci, "driver": driver, "step": "iommu_group", "bound": current})
    if wanted is not None:
        _ensure_driver(system, wanted, actions)
    step = "driver_override"
    try:
        if override != wanted:
            _sysfs_write(system, dev + "/driver_override", (wanted or "") + "\n", deadline)
            actions.append("set driver_override of %s to %s" % (vf_pci, wanted or "(none)"))
        bound = _link_base(system, dev + "/driver")
        if bound is not None and bound != wanted:
            step = "unbind"
            _sysfs_write(system, "%s/%s/unbind" % (SYS_PCI_DRIVERS, bound), vf_pci, deadline)
            actions.append("unbound %s from %s" % (vf_pci, bound))
        if _link_base(system, dev + "/driver") is None:
            step = "drivers_probe"
            _sysfs_write(system, DRIVERS_PROBE, vf_pci, deadline)
            actions.append("probed %s (%s)" % (vf_pci, DRIVERS_PROBE))
    except OSError as exc:
        _restore_binding(system, vf_pci, override, deadline, actions)
        raise AgentError("vf_bind_failed", "Binding VF %s to %s failed at %s: %s." % (
            vf_pci, driver, step, exc.strerror or exc), {"pci_address": vf_pci, "driver": driver, "step": step,
                                                          "errno": _errno_name(exc.errno)}) from None
    now = _poll_driver(system, dev, wanted)
    if wanted is not None and now != wanted:
        _restore_binding(system, vf_pci, override, deadline, actions)
        raise AgentError("vf_bind_failed", "VF %s is bound to %s after the probe, not %s." % (vf_pci, now, wanted),
                         {"pci_address": vf_pci, "driver": driver, "bound": now, "step": "verify"})
    return True


def _poll_driver(system, dev, wanted):
    """The driver link, read again for a moment while it is not the wanted one (a probe the kernel
    runs asynchronously, e.g. a driver with PROBE_PREFER_ASYNCHRONOUS, binds a little later)."""
    end = system.monotonic() + BIND_VERIFY_SECONDS
    while True:
        now = _link_base(system, dev + "/driver")
        if wanted is None or now == wanted or system.monotonic() >= end:
            return now
        system.sleep(0.1)


def _restore_binding(system, vf_pci, override, deadline, actions):
    """Put the previous driver_override back and probe a VF left without a driver (best effort)."""
    dev = SYS_PCI + "/" + vf_pci
    try:
        if _driver_override(system, dev) != override:
            _sysfs_write(system, dev + "/driver_override", (override or "") + "\n", deadline)
            actions.append("restored driver_override of %s to %s" % (vf_pci, override or "(none)"))
        if _link_base(system, dev + "/driver") is None:
            _sysfs_write(system, DRIVERS_PROBE, vf_pci, deadline)
            actions.append("probed %s again (%s)" % (vf_pci, _link_base(system, dev + "/driver") or "no driver"))
    except OSError as exc:
        actions.append("could not restore the driver of %s: %s" % (vf_pci, exc.strerror or exc))


def _host_uses(system, inv, vf, guest_names):
    """What on the host itself uses a VF (rebinding it would pull it away) -> [str]."""
    uses = ["%s has its VFIO group open" % who for who in _vfio_openers(system, vf["pci_address"])
            if not guest_names]  # a libvirt guest's QEMU is named by the guest check
    driver = _link_base(system, vf["dev"] + "/driver")
    netdevs = _list(system, vf["dev"] + "/net")
    if driver and driver not in PASSTHROUGH_DRIVERS and not netdevs:
        # a netdev driver always registers an interface; none here means it lives in another
        # network namespace (a container's) -- ip-netns(8), `ip link set dev X netns N`
        uses.append("bound to %s, but its interface is not in this network namespace (a container?)" % driver)
    for name in netdevs:
        link = _link_facts(inv.topology, name, driver)
        if link["master"]:
            uses.append("%s is enslaved to %s %s" % (name, link["master"]["kind"] or "device", link["master"]["name"]))
        uses.extend("%s carries %s" % (a["dev"], a["address"]) for a in link["addresses"])
        uses.extend("%s %s is stacked on %s" % (d["kind"] or "device", d["name"], name) for d in link["stacked"]
                    if not (link["master"] and d["name"] == link["master"]["name"]))
    return uses


def _host_use_check(system, target, inv, indexes, allow):
    """Refuse to rebind VFs the host itself uses -- a DPDK or hand-started QEMU process holding the
    VFIO group, a VF interface with addresses or in a bond/bridge, an interface moved into another
    namespace -- unless allowed (vf_in_use) -> warnings."""
    found = []
    for index in sorted(indexes):
        vf = target["vfs"][index]
        uses = _host_uses(system, inv, vf, inv.usage.get(vf["pci_address"]))
        if uses:
            found.append({"index": index, "pci_address": vf["pci_address"], "used_by": uses})
    if not found:
        return []
    text = "%s: the host uses VF %s (%s)" % (_label(target), ", ".join(str(v["index"]) for v in found),
                                             "; ".join(u for v in found for u in v["used_by"]))
    if allow:
        return [text + " (allowed by the request)"]
    raise AgentError("vf_in_use", text + ". Stop what uses it first, or allow guest impact.",
                     {"pf": target["pf"], "pci_address": target["pci"], "guests": [], "vfs": found})


def _driver_state(system, target, indexes):
    vfs = {}
    for index in sorted(indexes):
        dev = target["vfs"][index]["dev"]
        vfs[str(index)] = {"pci_address": target["vfs"][index]["pci_address"],
                           "driver": _link_base(system, dev + "/driver"),
                           "driver_override": _driver_override(system, dev)}
    return {"vfs": vfs, "sriov_drivers_autoprobe": _read_int(system, target["dev"] + "/sriov_drivers_autoprobe")}


def op_vf_driver(system, args, deadline):
    req = _vf_driver_request(args)
    target = _vf_target(system, args, need_netdev=False)
    wanted = dict((i, r["driver"]) for r in req["ranges"] for i in range(r["first"], r["last"] + 1))
    _no_such_vf(target, wanted)
    before = _driver_state(system, target, wanted)
    changing = [i for i in sorted(wanted) if _bind_needed(
        before["vfs"][str(i)]["driver"], before["vfs"][str(i)]["driver_override"], wanted[i])]
    inv = _Inventory(system, defined_guests=False, deadline=deadline)
    warnings = _guest_check(target, inv, changing, req["allow_guest_impact"], "this change rebinds")
    warnings.extend(_host_use_check(system, target, inv, changing, req["allow_guest_impact"]))
    actions = []
    for index in changing:
        vf_pci = target["vfs"][index]["pci_address"]
        try:
            with _vf_lock(system, vf_pci, deadline):
                _bind_vf(system, vf_pci, wanted[index], deadline, actions)
        except AgentError as exc:
            exc.details["actions"] = list(actions)
            raise
    after = _driver_state(system, target, wanted)
    for index in changing:
        if after["vfs"][str(index)]["driver"] is None:
            warnings.append("VF %d has no driver after the re-probe: no driver matches it (blacklisted, or "
                            "sriov_drivers_autoprobe is 0 and nothing was asked)" % index)
    updates = dict((i, d) for i, d in wanted.items() if d != "default") if req["persist"] else {}
    txn = _FileTxn(system)
    try:
        persisted, reason = _persist_entries(system, target["pci"], "drivers", updates,
                                             [i for i in wanted if i not in updates], txn, actions)
    except AgentError as exc:
        txn.rollback(actions)
        exc.details["actions"] = list(actions)
        raise
    result = {"pf": target["pf"], "pci_address": target["pci"], "before": before, "after": after,
              "actions": actions, "changed": bool(changing), "persisted": persisted and req["persist"],
              "persistence_file": VF_STATE_PATH, "warnings": warnings, "reboot_required": False}
    if reason:
        result["reason"] = reason
    return result


# ---------------------------------------------------------------------------------------------
# libvirt_network: a VF pool (libvirt network with <forward mode='hostdev'><pf dev=.../>)
# ---------------------------------------------------------------------------------------------

LIBVIRT_NETWORK_ARGS = ("name", "pf", "pci_address", "state", "autostart")
NETWORK_XML_DIR = "/run/sriov-console"


def _libvirt_network_request(args):
    name = args.get("name")
    if not isinstance(name, str) or not NETWORK_NAME_RE.match(name):
        raise _bad("name must be 1-50 characters from A-Z a-z 0-9 _ . -", field="name",
                   value=name if isinstance(name, str) else repr(name))
    state = args.get("state", "present")
    if state not in ("present", "absent"):
        raise _bad("state must be present or absent", field="state", value=repr(state))
    return {"name": name, "state": state, "autostart": _valid_bool(args.get("autostart"), "autostart", True)}


def _pool_xml(name, pf):
    """formatnetwork: a hostdev pool of the PF's VFs (managed='yes': libvirt binds a VF to vfio-pci
    when a guest gets it), marked as the console's in <metadata>."""
    return ("<network>\n  <name>%s</name>\n  <metadata>\n    <sc:managed xmlns:sc=\"%s\">%s</sc:managed>\n"
            "  </metadata>\n  <forward mode='hostdev' managed='yes'>\n    <pf dev='%s'/>\n  </forward>\n"
            "</network>\n" % (name, NETWORK_MARKER_NS, MANAGED_MARKER, pf))


def _network_now(system, name):
    """-> the network's pool, state and mark, or None when libvirt has no such network."""
    names = [n.strip() for n in _virsh(system, ["net-list", "--all", "--name"]).splitlines()]
    if name not in names:
        return None
    pool = _network_pool(system, name, _vf_index(system))
    pool.update(_net_info(system, name))
    return pool


def _network_users(system, name):
    """Running guests and stopped guests that start at boot whose interfaces name the network."""
    guests = _guests(system, defined=True)
    if guests["guests"] is None or guests["defined"] is None:
        raise _GuestsUnknown(guests["error"] or guests["defined_error"])
    return sorted(set(g["name"] for g in guests["guests"] + guests["defined"] if name in g["networks"]))


def _virsh_step(system, argv, code, what, actions):
    rc, out, err = system.run(["virsh"] + argv, QUERY_TIMEOUT)
    if rc != 0:
        text = (err or out).strip()[-500:]
        raise AgentError(code, "%s failed: %s" % (what, text or "exit status %s" % rc),
                         {"argv": ["virsh"] + argv, "stderr": text, "actions": list(actions)})
    actions.append("virsh " + " ".join(argv))


def _define_pool(system, req, pf, actions):
    path = "%s/%s.xml" % (NETWORK_XML_DIR, req["name"])
    _write_file(system, path, _pool_xml(req["name"], pf), "network definition", mode=0o600)
    try:
        _virsh_step(system, ["net-define", path], "network_define_failed", "Defining network %s" % req["name"],
                    actions)
    finally:
        try:
            system.remove(path)
        except OSError:
            pass


def _network_present(system, req, existing, actions):
    target = _vf_target(system, req["args"], need_netdev=True)
    pf, name = target["pf"], req["name"]
    same = existing is not None and existing["mode"] == "hostdev" and existing["pfs"] == [pf]
    if existing is not None and not same and not existing["managed"]:
        raise AgentError("network_exists", "A libvirt network named %s already exists (forward mode %s, %s) and SR-IOV "
                         "Console did not define it. Choose another name, or remove it by hand." % (
                             name, existing["mode"], ", ".join(existing["pfs"]) or "no PF"),
                         {"name": name, "existing": existing})
    if same and not existing["managed"]:
        # an administrator's network: its state and autostart are theirs
        return ["A libvirt network %s over %s already exists and SR-IOV Console did not define it: left as it is "
                "(active %s, autostart %s)." % (name, pf, existing["active"], existing["autostart"])]
    if existing is not None and not same and existing["active"]:
        users = _network_users(system, name)
        if users:
            raise AgentError("network_in_use", "Network %s is used by %s: redefining it over %s needs a restart of "
                             "the network." % (name, ", ".join(users), pf), {"name": name, "guests": users})
        _virsh_step(system, ["net-destroy", name], "network_stop_failed", "Stopping network %s" % name, actions)
    if not same:
        _define_pool(system, req, pf, actions)
    now = _network_now(system, name)
    if not now["active"]:
        try:
            _virsh_step(system, ["net-start", name], "network_start_failed", "Starting network %s" % name, actions)
        except AgentError:
            if existing is None:  # do not leave behind a definition this run made
                system.run(["virsh", "net-undefine", name], QUERY_TIMEOUT)
                actions.append("virsh net-undefine %s (it did not start)" % name)
            raise
    if now["autostart"] != req["autostart"]:
        _virsh_step(system, ["net-autostart", name] + ([] if req["autostart"] else ["--disable"]),
                    "network_autostart_failed", "Setting autostart of network %s" % name, actions)
    return []


def _network_absent(system, req, existing, actions):
    name = req["name"]
    if existing is None:
        return
    if not existing["managed"]:
        raise AgentError("network_not_managed", "The libvirt network %s was not defined by SR-IOV Console; it is left "
                         "alone. Remove it by hand if that is what you want." % name, {"name": name})
    users = _network_users(system, name)
    if users:
        raise AgentError("network_in_use", "Network %s is used by %s (running, or starting at boot): not removing it. "
                         "Move those guests to another network first." % (name, ", ".join(users)),
                         {"name": name, "guests": users})
    if existing["active"]:
        _virsh_step(system, ["net-destroy", name], "network_stop_failed", "Stopping network %s" % name, actions)
    if existing.get("persistent") is not False:
        _virsh_step(system, ["net-undefine", name], "network_undefine_failed", "Undefining network %s" % name,
                    actions)


def op_libvirt_network(system, args, deadline):
    req = _libvirt_network_request(args)
    req["args"] = args
    if not system.which("virsh"):
        raise AgentError("virsh_missing", "virsh is not installed: libvirt networks cannot be managed here.", {})
    actions, warnings = [], []
    try:
        existing = _network_now(system, req["name"])
        if req["state"] == "present":
            warnings = _network_present(system, req, existing, actions)
        else:
            _network_absent(system, req, existing, actions)
        after = _network_now(system, req["name"])
    except _GuestsUnknown as exc:
        raise AgentError("guest_check_failed", "Cannot read libvirt's networks or guests: %s" % exc,
                         {"error": str(exc), "actions": actions}) from None
    if req["state"] == "present" and not warnings and not (
            after and after["active"] and after["autostart"] == req["autostart"]):
        raise AgentError("network_verify_failed", "Network %s is not active with autostart %s after the change." % (
            req["name"], "on" if req["autostart"] else "off"), {"name": req["name"], "after": after,
                                                                "actions": actions})
    return {"name": req["name"], "state": req["state"], "before": existing, "after": after, "actions": actions,
            "changed": bool(actions), "persisted": True, "warnings": warnings, "reboot_required": False}


# ---------------------------------------------------------------------------------------------
# apply_persisted: what the boot and VF units run (the installed copy)
# ---------------------------------------------------------------------------------------------

APPLY_PERSISTED_ARGS = ("vf_pci", "all")
SETTLE_TIMEOUT = 60


def _vf_home(system, vf_pci):
    """-> (PF pci, PF device dir, VF index) from the VF's physfn link and the PF's virtfnN links."""
    pf = _link_base(system, SYS_PCI + "/" + vf_pci + "/physfn")
    if not pf:
        return None
    pf_dev = SYS_PCI + "/" + pf
    for entry in _list(system, pf_dev):
        match = re.match(r"^virtfn(\d+)$", entry)
        if match and _link_base(system, pf_dev + "/" + entry) == vf_pci:
            return pf, pf_dev, int(match.group(1))
    return None


VF_LOCK_DIR = "sriov-console"  # under /run
VF_LOCK_TIMEOUT = 20.0
LIBVIRT_DAEMONS = ("libvirtd", "virtqemud")


def _vf_lock(system, vf_pci, deadline):
    """One run at a time per VF (/run/sriov-console/vf-<pci>.lock): the VF unit, the boot unit and an
    SSH run that re-creates or rebinds the VF would otherwise interleave their sysfs writes."""
    lock = getattr(system, "lock", None)
    if lock is None:
        return _FdLock(None)
    try:
        return lock("%s/vf-%s.lock" % (VF_LOCK_DIR, vf_pci), max(0.0, min(VF_LOCK_TIMEOUT, deadline.left() - 10)))
    except OSError as exc:
        raise AgentError("busy", "Another run is changing VF %s (%s)." % (vf_pci, exc.strerror or exc),
                         {"pci_address": vf_pci, "errno": _errno_name(exc.errno)}) from None


def _vfio_openers(system, vf_pci):
    """Processes that have the VF's VFIO group open (/proc/<pid>/fd/* -> /dev/vfio/<group>): QEMU of
    libvirt or started by hand, DPDK. Unbinding vfio-pci under them waits, uninterruptibly at the
    end, until they let go (vfio_unregister_group_dev)."""
    group = _link_base(system, "%s/%s/iommu_group" % (SYS_PCI, vf_pci))
    if not group:
        return []
    found = []
    for pid in _list(system, "/proc"):
        if not pid.isdigit():
            continue
        for fd in _list(system, "/proc/%s/fd" % pid):
            try:
                target = system.read_link("/proc/%s/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target == "/dev/vfio/" + group:
                found.append("%s (pid %s)" % (_read(system, "/proc/%s/comm" % pid) or "?", pid))
                break
    return found


def _libvirt_running(system):
    """Whether a libvirt daemon runs: asking virsh before it does would start it through its socket
    (libvirtd.socket), and the boot unit is ordered before it."""
    return any(_read(system, "/proc/%s/comm" % p) in LIBVIRT_DAEMONS for p in _list(system, "/proc") if p.isdigit())


def _apply_usage(system):
    """{VF pci: [guest names]} of running libvirt guests, or None when libvirt runs but cannot say."""
    if not _libvirt_running(system) or not system.which("virsh"):
        return {}
    guests = _guests(system)
    return None if guests["guests"] is None else _usage_by_pci(guests["guests"])


def _vf_holders(system, vf_pci, usage):
    """Why a VF must be left as it is now (a re-issued add event reaches VFs guests hold) -> [str]."""
    if usage is None:
        return ["libvirt cannot say which guests use it"]
    holders = ["running guest %s" % name for name in usage.get(vf_pci, [])]
    return holders + ["%s has its VFIO group open" % who for who in _vfio_openers(system, vf_pci)]


def _apply_persisted_vf(system, pf, pf_dev, index, entry, deadline, actions, usage, skipped):
    """One VF's persisted state, unless something uses the VF (left as it is, in skipped) -> errors."""
    vf_pci = _link_base(system, "%s/virtfn%d" % (pf_dev, index))
    if not vf_pci:
        return []
    try:
        with _vf_lock(system, vf_pci, deadline):
            holders = _vf_holders(system, vf_pci, usage)
            if holders:
                skipped.append({"pf_pci": pf, "index": index, "pci_address": vf_pci, "in_use": holders})
                return []
            return _apply_persisted_vf_now(system, pf, pf_dev, index, entry, deadline, actions)
    except AgentError as exc:
        return [exc.message]


def _rate_needs_link(system, netdev, exc):
    """ixgbe_ndo_set_vf_bw and igb_ndo_set_vf_bw (82576) answer EINVAL for a rate while the PF link
    is down (they check the link speed); at VF add time the PF often has no carrier yet. The rates
    are applied last (APPLY_ORDER), so only they are deferred."""
    return (exc.details.get("field") in ("max_tx_rate", "min_tx_rate")
            and "invalid argument" in (exc.details.get("stderr") or "").lower()
            and _read(system, "%s/%s/carrier" % (SYS_NET, netdev)) == "0")


def _apply_persisted_vf_now(system, pf, pf_dev, index, entry, deadline, actions):
    """The persisted settings (through the PF driver) and then the driver of one VF -> errors."""
    errors = []
    settings = (entry.get("vfs") or {}).get(str(index))
    netdev = _netdev_of(system, pf_dev)
    if settings and netdev:
        target = {"pf": netdev, "pci": pf, "dev": pf_dev}
        try:
            # the file is root's, but it is still checked as a request would be
            want = _valid_vf_entry(dict(settings, index=index) if isinstance(settings, dict) else None, index)
            if want.get("mac") == "stable":
                want["mac"] = _stable_mac(system, _link_base(system, "%s/virtfn%d" % (pf_dev, index)))
            _apply_vf(system, target, index, want, (_ip_link_vfs(system, netdev) or {}).get(index) or {}, actions, [])
        except AgentError as exc:
            if _rate_needs_link(system, netdev, exc):
                actions.append("deferred %s of %s VF %d: the PF link is down" % (exc.details["field"], netdev, index))
            else:
                errors.append(exc.message)
    elif settings:
        errors.append("%s VF %d: the PF has no network interface, the settings cannot be applied" % (pf, index))
    driver = (entry.get("drivers") or {}).get(str(index))
    vf_pci = _link_base(system, "%s/virtfn%d" % (pf_dev, index))
    if driver and not (isinstance(driver, str) and DRIVER_NAME_RE.match(driver)):
        errors.append("%s VF %d: the persisted driver %r is not a driver name" % (pf, index, driver))
    elif driver and vf_pci:
        try:
            _bind_vf(system, vf_pci, driver, deadline, actions)
        except AgentError as exc:
            errors.append(exc.message)
    return errors


def _apply_persisted_pf(system, pci, deadline, actions, indexes=None, skipped=None):
    """Apply every persisted VF setting and driver of PF pci whose VF exists -> errors."""
    entry = _read_vf_state(system).get(pci) or {}
    pf_dev = SYS_PCI + "/" + pci
    errors = []
    known = set(int(i) for i in list(entry.get("vfs") or {}) + list(entry.get("drivers") or {}))
    wanted = [i for i in sorted(known if indexes is None else known & set(indexes))
              if system.exists("%s/virtfn%d" % (pf_dev, i))]
    usage = _apply_usage(system) if wanted else {}
    for index in wanted:
        errors.extend(_apply_persisted_vf(system, pci, pf_dev, index, entry, deadline, actions, usage,
                                          [] if skipped is None else skipped))
    return errors


def _apply_persisted_mtu(system, pci, entry, actions):
    """The PF's persisted MTU: set by this step rather than by a udev rule on the PF's net device
    (a KERNELS== match would also hit every other net device below that PCI function, e.g. mlx5
    representors) -> errors."""
    mtu = _int_or(entry.get("mtu"), None)
    pf = _netdev_of(system, SYS_PCI + "/" + pci)
    if mtu is None:
        return []
    if pf is None:
        return ["%s: the PF has no network interface, its MTU %d cannot be set" % (pci, mtu)]
    if _read_int(system, "%s/%s/mtu" % (SYS_NET, pf)) == mtu:
        return []
    rc, out, err = system.run(["ip", "link", "set", "dev", pf, "mtu", str(mtu)], QUERY_TIMEOUT)
    if rc != 0:
        return ["%s: setting the MTU to %d failed: %s" % (pf, mtu, (err or out).strip()[-300:])]
    actions.append("ip link set dev %s mtu %d" % (pf, mtu))
    return []


def _apply_everything(system, deadline, actions, skipped):
    """The boot unit: wait until udev has handled the queued add events (the VFs the boot
    configuration created, their drivers' probes), then every persisted PF MTU and VF."""
    errors = []
    if system.which("udevadm"):
        rc, _out, err = system.run(["udevadm", "settle", "--timeout=%d" % SETTLE_TIMEOUT], SETTLE_TIMEOUT + 10)
        if rc != 0:
            errors.append("udevadm settle: %s" % ((err or "").strip()[-200:] or "exit status %s" % rc))
    for pci, entry in sorted(_read_vf_state(system).items()):
        if not PCI_RE.match(pci) or not isinstance(entry, dict):
            errors.append("%r in %s is not a PF PCI address" % (pci, VF_STATE_PATH))
            continue
        errors.extend(_apply_persisted_mtu(system, pci, entry, actions))
        errors.extend(_apply_persisted_pf(system, pci, deadline, actions, skipped=skipped))
    return errors


def op_apply_persisted(system, args, deadline):
    vf_pci, everything = args.get("vf_pci"), _valid_bool(args.get("all"), "all", False)
    if (vf_pci is None) == (not everything):
        raise _bad("give vf_pci (the VF the kernel added) or all: true (the boot unit)", field="vf_pci")
    actions, skipped = [], []
    if vf_pci is not None:
        home = _vf_home(system, _valid_pci(vf_pci, "vf_pci"))
        if home is None:
            return {"applied": False, "reason": "not_a_vf", "actions": [], "errors": [], "skipped": []}
        errors = _apply_persisted_pf(system, home[0], deadline, actions, [home[2]], skipped)
    else:
        errors = _apply_everything(system, deadline, actions, skipped)
    # a VF in use is left as it is: a guest, QEMU or DPDK holds it (a re-issued add event, e.g.
    # `udevadm trigger --action=add`, reaches VFs in use); the next boot applies the state
    return {"applied": bool(actions), "actions": actions, "errors": errors, "skipped": skipped}


# ---------------------------------------------------------------------------------------------
# GRUB defaults parsing and editing
# ---------------------------------------------------------------------------------------------


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


def _host_pf_ids(system):
    """The network PCI functions the host drives itself (not VFs, not handed to a passthrough
    driver), with their vendor/device/subsystem ids."""
    found = []
    functions = _pci_functions(system) or [(_link_base(system, SYS_NET + "/" + n + "/device"),
                                            SYS_NET + "/" + n + "/device") for n in _list(system, SYS_NET)
                                           if system.exists(SYS_NET + "/" + n + "/device")]
    for pci, dev in functions:
        klass = (_read(system, dev + "/class") or "0x02").lower()
        driver = _link_base(system, dev + "/driver")
        if not pci or system.exists(dev + "/physfn") or not klass.startswith("0x02") or driver is None or \
                driver in PASSTHROUGH_DRIVERS:
            continue
        found.append({"pci_address": pci, "driver": driver, "netdev": _netdev_of(system, dev),
                      "vendor": _hex_id(system, dev + "/vendor"), "device": _hex_id(system, dev + "/device"),
                      "subvendor": _hex_id(system, dev + "/subsystem_vendor"),
                      "subdevice": _hex_id(system, dev + "/subsystem_device"),
                      "vf_device": _sriov_vf_device(system, dev)})
    return found


def _check_passthrough_ids(system, add):
    """vfio-pci.ids / pci-stub.ids bind every function with a listed id at boot: an id of a PF the
    host drives takes the host's own ports away (the VFs have ids of their own)."""
    requested = [a for a in add if _karg_key(a) in PASSTHROUGH_ID_KARGS and "=" in a]
    if not requested:
        return
    host = _host_pf_ids(system)
    for item in requested:
        key, _sep, value = item.partition("=")
        hits = []
        for spec in value.split(","):
            match = PCI_ID_RE.match(spec)
            if not match:
                continue
            vendor, device, subvendor, subdevice = [g.lower() if g else None for g in match.groups()]
            for pf in host:
                if pf["vendor"] == vendor and pf["device"] == device and subvendor in (None, "ffff", pf["subvendor"]) \
                        and subdevice in (None, "ffff", pf["subdevice"]):
                    hits.append(dict(pf, id="%s:%s" % (vendor, device)))
        if hits:
            vf_ids = sorted(set("%s:%s" % (h["vendor"], h["vf_device"]) for h in hits if h["vf_device"]))
            raise AgentError("vfio_ids_match_host_pf", "%s would hand %s to %s at boot: %s %s the host's own "
                             "network port%s. Give the VFs' ids instead%s." % (
                                 item, ", ".join("%s (%s, %s)" % (h["pci_address"], h["netdev"] or h["driver"],
                                                                 h["id"]) for h in hits),
                                 key.split(".")[0], "they are" if len(hits) > 1 else "it is",
                                 "" if len(hits) > 1 else "", "s" if len(hits) > 1 else "",
                                 (" (%s)" % ", ".join(vf_ids)) if vf_ids else ""),
                             {"argument": item, "matches": hits, "vf_ids": vf_ids})


def _default_entry_options(system):
    """The options of the BLS entry the next boot uses ($kernelopts expanded), else /proc/cmdline
    without BOOT_IMAGE/initrd (what kernel-install falls back to)."""
    out = _run_ok(system, ["grubby", "--default-kernel"])
    kernel = (out or "").strip()
    kernelopts = _grubenv_kernelopts(system)
    for name in _list(system, "/boot/loader/entries"):
        text = _read(system, "/boot/loader/entries/" + name) or ""
        linux = re.search(r"^linux\s+(\S+)", text, re.M)
        options = re.search(r"^options\s+(.*)$", text, re.M)
        if linux and options and kernel and (kernel == linux.group(1) or kernel.endswith(linux.group(1))):
            value = options.group(1)
            if "$kernelopts" in value and kernelopts is not None:
                value = value.replace("$kernelopts", kernelopts)
            return value
    tokens = [t for t in (_read(system, "/proc/cmdline") or "").split()
              if not t.startswith("BOOT_IMAGE=") and not t.startswith("initrd=")]
    return " ".join(tokens) or None


def _grubenv_kernelopts(system):
    out = _run_ok(system, ["grub2-editenv", "-", "list"])
    for line in (out or "").splitlines():
        if line.startswith("kernelopts="):
            return line[len("kernelopts="):]
    return None


def _bls_followups(system, add, remove_keys, remove_exact, actions):
    """grubby --update-kernel=ALL edits today's BLS entries; whether it also edits kernelopts,
    GRUB_CMDLINE_LINUX or /etc/kernel/cmdline depends on its version (grubby 8.40-37 started
    updating kernelopts, 8.40-41 GRUB_CMDLINE_LINUX). Kernels installed later take their options
    from /etc/kernel/cmdline (kernel-install's 20-grub.install, else /proc/cmdline) or, in RHEL 8
    entries, from $kernelopts in the GRUB environment block: make both say what the entries say."""
    facts = {"kernel_cmdline": None, "kernel_cmdline_changed": False, "kernelopts": None, "kernelopts_changed": False}
    current = _read(system, KERNEL_CMDLINE_FILE)
    hooked = any(KERNEL_CMDLINE_FILE in (_read(system, h) or "") for h in KERNEL_INSTALL_HOOKS)
    if current is not None or hooked:
        base = current if current is not None else _default_entry_options(system)
        if base is not None:
            new = _edit_tokens(base.strip(), add, remove_keys, remove_exact, True, set()).strip()
            facts["kernel_cmdline"] = new
            if current is None or new.split() != current.split():
                if current is not None:
                    _write_file(system, KERNEL_CMDLINE_FILE + BACKUP_SUFFIX, current, "backup", mode=None)
                _write_file(system, KERNEL_CMDLINE_FILE, new + "\n", "kernel-install command line", mode=None)
                facts["kernel_cmdline_changed"] = True
                actions.append("%s %s for kernels installed later (kernel-install reads it): %r" % (
                    "edited" if current is not None else "wrote", KERNEL_CMDLINE_FILE, new))
    if system.which("grub2-editenv"):
        kernelopts = _grubenv_kernelopts(system)
        if kernelopts is not None:
            new = _edit_tokens(kernelopts.strip(), add, remove_keys, remove_exact, True, set()).strip()
            facts["kernelopts"] = new
            if new.split() != kernelopts.split():
                argv = ["grub2-editenv", "-", "set", "kernelopts=" + new]
                rc, out, err = system.run(argv, QUERY_TIMEOUT)
                if rc != 0:
                    raise AgentError("boot_config_incomplete", "The arguments are in today's boot entries and the GRUB "
                                     "defaults, but %s failed (%s), so kernels installed later (their entries use "
                                     "$kernelopts) would boot without them. Fix it and run the change again." % (
                                         " ".join(argv[:3]), rc), {"argv": argv, "stderr": (err or out)[-2000:],
                                                                   "actions": list(actions)})
                facts["kernelopts_changed"] = True
                actions.append("set kernelopts in the GRUB environment block (entries of kernels installed later "
                               "use $kernelopts): %r" % new)
    return facts


def _grubby_options(system):
    """grubby's own flags: never let it rewrite GRUB_CMDLINE_LINUX (the agent owns the GRUB
    defaults; grubby 8.40-41 and later edit them unless told not to)."""
    out = _run_ok(system, ["grubby", "--help"]) or ""
    return ["--no-etc-grub-update"] if "--no-etc-grub-update" in out else []


def op_kernel_args(system, args, deadline=None):
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
    _check_passthrough_ids(system, add)

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
        if tool == "grubby" and _bls_active(system, grub):
            argv[2:2] = _grubby_options(system)
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
    followups = None
    if _choose_grub_tool(system, grub) == "grubby" and _bls_active(system, grub):
        followups = _bls_followups(system, add, remove_keys, remove_exact, actions)
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
        "later_kernels": followups,
        "iommu_firmware": _iommu(system)["firmware"],
    }


# ---------------------------------------------------------------------------------------------
# reboot
# ---------------------------------------------------------------------------------------------


def op_reboot(system, args, deadline=None):
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
# Entry points: the operations, one function each, and their arguments
# ---------------------------------------------------------------------------------------------

# name -> (handler(system, args, deadline), allowed argument names, runs under the host lock)
OPERATION_TABLE = (
    ("inventory", op_inventory, (), False),
    ("set_vfs", op_set_vfs, SET_VFS_ARGS, True),
    ("kernel_args", op_kernel_args, ("add", "remove", "regenerate"), True),
    ("reboot", op_reboot, ("refuse_if_guests", "expected_boot_id"), True),
    ("vf_config", op_vf_config, VF_CONFIG_ARGS, True),
    ("vf_driver", op_vf_driver, VF_DRIVER_ARGS, True),
    ("libvirt_network", op_libvirt_network, LIBVIRT_NETWORK_ARGS, True),
    # run by the boot and VF units while an SSH run may hold the host lock (a set_vfs that re-creates
    # the VFs waits for nothing of theirs); per-VF locks serialise them
    ("apply_persisted", op_apply_persisted, APPLY_PERSISTED_ARGS, False),
)
OPERATIONS = tuple(name for name, _h, _a, _l in OPERATION_TABLE)
HANDLERS = dict((name, handler) for name, handler, _a, _l in OPERATION_TABLE)
ARG_KEYS = dict((name, args) for name, _h, args, _l in OPERATION_TABLE)
LOCKED_OPERATIONS = tuple(name for name, _h, _a, locked in OPERATION_TABLE if locked)


def _host_lock(system, op, deadline):
    """One mutating agent run per host at a time (two runs could otherwise lose a persisted count)."""
    lock = getattr(system, "lock", None)
    if lock is None:  # a System seam without locking (older simulators)
        return _FdLock(None)
    try:
        return lock(LOCK_NAME, max(0.0, min(LOCK_TIMEOUT, deadline.left() - 2 * BUDGET_RESERVE)))
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


def _checked_request(request):
    """-> (op, request_id, args) of a well-formed request; raises AgentError otherwise."""
    raw_id = request.get("request_id")
    if raw_id is None or isinstance(raw_id, str):
        request_id = raw_id
    elif isinstance(raw_id, int) and not isinstance(raw_id, bool):
        request_id = str(raw_id)
    else:
        raise AgentError("bad_request", "request_id must be a string.", {})
    raw_op = request.get("op")
    op = raw_op if isinstance(raw_op, str) and len(raw_op) <= 64 else None
    return op, request_id


def run_payload(request_bytes, system):
    """Run one request against system -> (exit_status, stdout_text, stderr_text). Never raises."""
    op = None
    request_id = None
    try:
        try:
            deadline = Deadline(system, AGENT_BUDGET)
            ensure_path = getattr(system, "ensure_path", None)
            if ensure_path is not None:
                ensure_path(DEFAULT_PATH)
            request = _parse_request(request_bytes)
            op, request_id = _checked_request(request)
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
                with _host_lock(system, op, deadline):
                    result = HANDLERS[op](system, args, deadline)
            else:
                result = HANDLERS[op](system, args, deadline)
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
    parser.add_argument("--vf", default=None, help="apply_persisted: the VF (PCI address) the kernel added")
    parser.add_argument("--boot", action="store_true", help="apply_persisted: every persisted PF and VF (at boot)")
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
    if options.vf is not None:  # the VF unit: sriov_agent.py --vf %i apply_persisted
        args = dict(args, vf_pci=options.vf)
    if options.boot:  # the boot unit: sriov_agent.py --boot apply_persisted
        args = dict(args, all=True)
    request = json.dumps({"op": options.operation, "args": args, "request_id": options.request_id})
    status, out, err = run_payload(request.encode("utf-8"), System(options.root))
    sys.stdout.write(out)
    sys.stdout.flush()
    if err:
        sys.stderr.write(err)
    return status


if __name__ == "__main__":
    sys.exit(main())
