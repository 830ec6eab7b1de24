"""A real OpenSSH sshd "hypervisor" for testing the agent over real SSH (DESIGN.md §12).

sshd runs inside its own mount + UTS namespace (``unshare -m -u``) where

* a fake sysfs tree (HPE DL360 Gen9: eno1-4 tg3 without SR-IOV, eno49-52 igb with
  sriov_totalvfs 7 / sriov_numvfs 0) is bind-mounted over ``/sys``;
* fake files are bind-mounted over ``/proc/cmdline`` and ``/proc/sys/kernel/random/boot_id``,
  and the namespace gets its own hostname;
* an overlay is mounted over ``/etc`` (lower = the real /etc, upper = a temp dir), pre-seeded with
  ``/etc/default/grub``, two test users (``sriovtest`` with NOPASSWD sudo, ``sriovnopw`` without)
  and a sudoers drop-in, so every write lands in the temp dir;
* tmpfs over ``/boot`` and ``/run`` (sshd's privilege separation dir lives there);
* a directory of fake programs (update-grub, grub-mkconfig, reboot, shutdown, systemctl) is
  bind-mounted over ``/usr/local/bin`` (and ``/usr/local/sbin`` when it exists), which come
  before /usr/sbin on root's and sudo's PATH - so nothing can regenerate the real grub or reboot
  the machine.

The agent then runs with no ``--root`` at the real paths and nothing of the machine changes; when
sshd exits the namespace and all its mounts disappear. Requirements: root, ``unshare``
(util-linux), ``/usr/sbin/sshd`` (openssh-server), overlayfs; ``sudo`` for the non-root tests.
Use :func:`requirements_missing` to decide whether to skip.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from tests.procs import spawn

SSHD = "/usr/sbin/sshd"
UNSHARE = "/usr/bin/unshare"
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

GRUB_DEFAULT = textwrap.dedent(
    """\
    # If you change this file, run 'update-grub' afterwards to update
    # /boot/grub/grub.cfg.
    GRUB_DEFAULT=0
    GRUB_TIMEOUT=5
    GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
    GRUB_CMDLINE_LINUX_DEFAULT="quiet"
    GRUB_CMDLINE_LINUX="console=ttyS0"
    """
)
PROC_CMDLINE = "BOOT_IMAGE=/vmlinuz-6.1.0-18-amd64 root=/dev/mapper/vg0-root ro console=ttyS0 quiet\n"
HOSTNAME = "dl360-sshd"

# (name, pci address, driver, vendor, device, mac, sriov_totalvfs or None)
DL360_GEN9_NICS = [
    ("eno1", "0000:02:00.0", "tg3", "0x14e4", "0x1657", "94:18:82:00:00:01", None),
    ("eno2", "0000:02:00.1", "tg3", "0x14e4", "0x1657", "94:18:82:00:00:02", None),
    ("eno3", "0000:02:00.2", "tg3", "0x14e4", "0x1657", "94:18:82:00:00:03", None),
    ("eno4", "0000:02:00.3", "tg3", "0x14e4", "0x1657", "94:18:82:00:00:04", None),
    ("eno49", "0000:04:00.0", "igb", "0x8086", "0x1521", "94:18:82:00:01:31", 7),
    ("eno50", "0000:04:00.1", "igb", "0x8086", "0x1521", "94:18:82:00:01:32", 7),
    ("eno51", "0000:04:00.2", "igb", "0x8086", "0x1521", "94:18:82:00:01:33", 7),
    ("eno52", "0000:04:00.3", "igb", "0x8086", "0x1521", "94:18:82:00:01:34", 7),
]
_BRIDGE = {"0000:02": "0000:00:01.0", "0000:04": "0000:00:02.0"}


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def _link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def build_fake_sys(root: Path, nics=DL360_GEN9_NICS) -> None:
    """A small sysfs look-alike under `root` (which becomes /sys): class/net, devices, bus/pci."""
    for name, pci, driver, vendor, device, mac, totalvfs in nics:
        bridge = _BRIDGE[pci[:7]]
        dev_rel = f"devices/pci0000:00/{bridge}/{pci}"
        dev = root / dev_rel
        for attr, value in {
            "vendor": vendor,
            "device": device,
            "subsystem_vendor": "0x103c",
            "class": "0x020000",
            "numa_node": "0",
            "enable": "1",
        }.items():
            _write(dev / attr, value + "\n")
        if totalvfs is not None:
            _write(dev / "sriov_totalvfs", f"{totalvfs}\n", 0o444)
            _write(dev / "sriov_numvfs", "0\n")
            _write(dev / "sriov_drivers_autoprobe", "1\n")
            _write(dev / "sriov_offset", "128\n", 0o444)
            _write(dev / "sriov_stride", "4\n", 0o444)
            _write(dev / "sriov_vf_device", "1520\n", 0o444)
        _link(dev / "driver", f"../../../../bus/pci/drivers/{driver}")
        (root / "bus/pci/drivers" / driver).mkdir(parents=True, exist_ok=True)
        if not (root / "bus/pci/devices" / pci).is_symlink():
            _link(root / "bus/pci/devices" / pci, f"../../../{dev_rel}")
        net = dev / "net" / name
        for attr, value in {
            "address": mac,
            "operstate": "up" if name in ("eno1", "eno49") else "down",
            "mtu": "1500",
            "speed": "1000" if name in ("eno1", "eno49") else "-1",
            "carrier": "1" if name in ("eno1", "eno49") else "0",
            "ifindex": str(2 + DL360_GEN9_NICS.index((name, pci, driver, vendor, device, mac, totalvfs))),
            "type": "1",
            "addr_assign_type": "0",
        }.items():
            _write(net / attr, value + "\n")
        _link(net / "device", "../../../" + pci)
        _link(root / "class/net" / name, f"../../{dev_rel}/net/{name}")
    lo = root / "devices/virtual/net/lo"
    for attr, value in {"address": "00:00:00:00:00:00", "operstate": "unknown", "mtu": "65536",
                        "type": "772", "ifindex": "1"}.items():
        _write(lo / attr, value + "\n")
    _link(root / "class/net/lo", "../../devices/virtual/net/lo")
    (root / "class/iommu").mkdir(parents=True, exist_ok=True)
    (root / "kernel/iommu_groups").mkdir(parents=True, exist_ok=True)
    (root / "module").mkdir(parents=True, exist_ok=True)


FAKE_UPDATE_GRUB = """#!/bin/sh
# fake update-grub for the sshd test host: renders the effective cmdline into /boot/grub/grub.cfg
set -e
. /etc/default/grub
if [ -d /etc/default/grub.d ]; then
  for f in /etc/default/grub.d/*.cfg; do [ -e "$f" ] && . "$f"; done
fi
mkdir -p /boot/grub
out=/boot/grub/grub.cfg
[ "$1" = "-o" ] && out="$2"
printf 'menuentry "Debian" {\\n  linux /vmlinuz-6.1.0-18-amd64 root=/dev/mapper/vg0-root ro %s %s\\n}\\n' \
  "$GRUB_CMDLINE_LINUX" "$GRUB_CMDLINE_LINUX_DEFAULT" > "$out"
echo "$(basename "$0") $*" >> /boot/fake-tool-calls
echo "Generating grub configuration file ... done" >&2
"""

FAKE_REFUSE = """#!/bin/sh
# fake {name}: the sshd test host never reboots the machine
echo "{name} $*" >> /boot/fake-tool-calls
exit 0
"""


@dataclass
class SshdRequirements:
    missing: list[str]

    @property
    def ok(self) -> bool:
        return not self.missing

    def reason(self) -> str:
        return "sshd test host unavailable: " + "; ".join(self.missing)


def requirements_missing() -> SshdRequirements:
    missing = []
    if os.geteuid() != 0:
        missing.append("not running as root")
    if not os.path.exists(SSHD):
        missing.append(f"{SSHD} not found (apt-get install openssh-server)")
    if not shutil.which("unshare"):
        missing.append("unshare not found (util-linux)")
    try:
        if "overlay" not in Path("/proc/filesystems").read_text():
            missing.append("overlayfs not available")
    except OSError:
        missing.append("/proc/filesystems unreadable")
    if not missing:
        probe = subprocess.run(
            [shutil.which("unshare") or UNSHARE, "-m", "-u", "true"], capture_output=True, timeout=10
        )
        if probe.returncode != 0:
            missing.append("unshare -m -u not permitted: " + probe.stderr.decode(errors="replace").strip())
    return SshdRequirements(missing)


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _sha(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


class SshdHost:
    """One namespaced sshd. ``start()`` / ``stop()``, or use as a context manager."""

    USER_SUDO = "sriovtest"  # NOPASSWD sudo
    USER_NOPW = "sriovnopw"  # no sudoers entry -> sudo -n fails

    def __init__(self, address: str = "127.0.0.1", port: int | None = None, base_dir: str | None = None):
        self.address = address
        self.port = port or _free_port(address)
        self.dir = Path(tempfile.mkdtemp(prefix="sshd-host-", dir=base_dir))
        os.chmod(self.dir, 0o755)  # non-root users' sshd reads authorized_keys as that user
        self.boot_id = str(uuid.uuid4())
        self.hostname = HOSTNAME
        self.proc: subprocess.Popen | None = None
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.host_key_line = host_key.export_public_key().decode().split()[0] + " " + \
            host_key.export_public_key().decode().split()[1]
        self.client_key_text = client_key.export_private_key().decode()
        self.client_public_key_line = client_key.export_public_key().decode().strip()
        self._host_key = host_key
        self._real_etc_snapshot: dict[str, str | None] = {}

    # paths
    @property
    def etc_upper(self) -> Path:
        return self.dir / "etc-upper"

    @property
    def sys_root(self) -> Path:
        return self.dir / "sys"

    @property
    def log_path(self) -> Path:
        return self.dir / "sshd.log"

    def _prepare(self) -> None:
        d = self.dir
        key_path = d / "ssh_host_ed25519_key"
        key_path.write_bytes(self._host_key.export_private_key())
        os.chmod(key_path, 0o600)
        _write(d / "authorized_keys", self.client_public_key_line + "\n", 0o644)
        build_fake_sys(self.sys_root)
        _write(d / "proc/cmdline", PROC_CMDLINE, 0o444)
        _write(d / "proc/boot_id", self.boot_id + "\n", 0o444)
        (d / "etc-work").mkdir()
        upper = self.etc_upper
        upper.mkdir()
        _write(upper / "default/grub", GRUB_DEFAULT)
        # test users: appended copies of passwd/shadow/group in the overlay's upper dir
        uid = 61000
        passwd_lines = Path("/etc/passwd").read_text().splitlines()
        used = {line.split(":")[2] for line in passwd_lines if line.count(":") >= 2}
        while str(uid) in used or str(uid + 1) in used:
            uid += 2
        passwd = Path("/etc/passwd").read_text().rstrip("\n") + "\n"
        group = Path("/etc/group").read_text().rstrip("\n") + "\n"
        shadow = Path("/etc/shadow").read_text().rstrip("\n") + "\n" if Path("/etc/shadow").exists() else ""
        for i, user in enumerate((self.USER_SUDO, self.USER_NOPW)):
            passwd += f"{user}:x:{uid + i}:{uid + i}:sriov test:/nonexistent:/bin/sh\n"
            group += f"{user}:x:{uid + i}:\n"
            shadow += f"{user}:*:19000:0:99999:7:::\n"  # '*': no password, but not locked
        _write(upper / "passwd", passwd)
        _write(upper / "group", group)
        _write(upper / "shadow", shadow, 0o640)
        if _group_exists("shadow"):
            shutil.chown(upper / "shadow", group="shadow")
        _write(upper / "sudoers.d/sriov-console-test",
               f"{self.USER_SUDO} ALL=(root) NOPASSWD: ALL\nDefaults:{self.USER_SUDO} !requiretty\n", 0o440)
        _write(upper / "hostname", self.hostname + "\n")
        hosts = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else "127.0.0.1 localhost\n"
        _write(upper / "hosts", hosts.rstrip("\n") + f"\n127.0.1.1 {self.hostname}\n")
        # fake programs
        bin_dir = d / "fakebin"
        _write(bin_dir / "update-grub", FAKE_UPDATE_GRUB, 0o755)
        _write(bin_dir / "grub-mkconfig", FAKE_UPDATE_GRUB, 0o755)
        for name in ("reboot", "shutdown", "systemctl", "systemd-run"):
            _write(bin_dir / name, FAKE_REFUSE.format(name=name), 0o755)
        # sshd config
        _write(d / "sshd_config", textwrap.dedent(f"""\
            ListenAddress {self.address}:{self.port}
            HostKey {key_path}
            PidFile {d / 'sshd.pid'}
            AuthorizedKeysFile {d / 'authorized_keys'}
            StrictModes no
            UsePAM no
            PermitRootLogin prohibit-password
            PubkeyAuthentication yes
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            AllowUsers root {self.USER_SUDO} {self.USER_NOPW}
            MaxStartups 200:30:400
            MaxSessions 50
            LogLevel VERBOSE
            PrintMotd no
            """))
        local_bins = ["/usr/local/bin"] + (["/usr/local/sbin"] if os.path.isdir("/usr/local/sbin") else [])
        bind_bins = "\n".join(f"mount --bind {bin_dir} {p}" for p in local_bins)
        _write(d / "launch.sh", textwrap.dedent(f"""\
            #!/bin/sh
            # runs as PID-holder of a private mount+UTS namespace, then becomes sshd
            set -e
            mount --make-rprivate /
            hostname {self.hostname}
            mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={d / 'etc-work'} /etc
            mount --bind {d / 'proc/cmdline'} /proc/cmdline
            mount --bind {d / 'proc/boot_id'} /proc/sys/kernel/random/boot_id
            mount -t tmpfs -o mode=0755 tmpfs /boot
            mkdir -p /boot/grub
            mount -t tmpfs -o mode=0755 tmpfs /run
            mkdir -p /run/sshd
            chmod 0755 /run/sshd
            {bind_bins}
            mount --bind {self.sys_root} /sys
            exec {SSHD} -D -e -f {d / 'sshd_config'}
            """), 0o755)

    def start(self, timeout: float = 15.0) -> SshdHost:
        req = requirements_missing()
        if not req.ok:
            raise RuntimeError(req.reason())
        self._real_etc_snapshot = self.real_etc_snapshot()
        self._prepare()
        log = open(self.log_path, "wb")  # noqa: SIM115 - owned by the process lifetime
        self.proc = spawn(
            [shutil.which("unshare") or UNSHARE, "-m", "-u", "--propagation", "private", "/bin/sh",
             str(self.dir / "launch.sh")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"},  # nothing of the caller's env leaks into sessions
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd test host exited early:\n{self.log_text()}")
            try:
                with socket.create_connection((self.address, self.port), timeout=0.5) as s:
                    s.settimeout(2)
                    if s.recv(64).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd test host did not come up within {timeout}s:\n{self.log_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SshdHost:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # helpers for tests
    def target(self, username: str = "root", **overrides):
        from remote import HostTarget

        values = dict(
            name=f"sshd-{self.port}",
            address=self.address,
            port=self.port,
            username=username,
            private_key=self.client_key_text,
            known_host_key=self.host_key_line,
            connect_timeout=10.0,
            op_timeout=60.0,
        )
        values.update(overrides)
        return HostTarget(**values)

    def overlay_file(self, path: str) -> Path:
        """Where a write to /etc/<x> inside the namespace landed (the overlay's upper dir)."""
        assert path.startswith("/etc/")
        return self.etc_upper / path[len("/etc/"):]

    def ns_path(self, path: str) -> Path:
        """`path` as seen inside the sshd's mount namespace (via /proc/<pid>/root), e.g. /boot/..."""
        assert self.proc is not None and path.startswith("/")
        return Path(f"/proc/{self.proc.pid}/root") / path.lstrip("/")

    def sys_file(self, path: str) -> Path:
        assert path.startswith("/sys/")
        return self.sys_root / path[len("/sys/"):]

    @staticmethod
    def real_etc_snapshot() -> dict[str, str | None]:
        """Hashes of the real files the tests could touch, to prove the machine is unchanged."""
        paths = ["/etc/default/grub", "/etc/passwd", "/etc/shadow", "/etc/group", "/etc/hostname",
                 "/proc/cmdline"]
        snap = {p: _sha(p) for p in paths}
        for d in ("/etc/default/grub.d", "/etc/sudoers.d", "/etc/udev/rules.d", "/etc/modprobe.d",
                  "/etc/systemd/system", "/boot"):
            try:
                snap[d] = ",".join(sorted(os.listdir(d)))
            except FileNotFoundError:
                snap[d] = None
        return snap

    def real_etc_unchanged(self) -> bool:
        return self.real_etc_snapshot() == self._real_etc_snapshot


def _group_exists(name: str) -> bool:
    try:
        import grp

        grp.getgrnam(name)
        return True
    except KeyError:
        return False
