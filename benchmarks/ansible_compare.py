"""The anchor: the console's discovery next to Ansible, on the same real OpenSSH hosts.

    .venv/bin/pip install -e '.[bench]'          # ansible-core, pinned; not part of `make test`
    .venv/bin/python benchmarks/ansible_compare.py [--hosts 10] [--rounds 3] \\
        [--write benchmarks/results/ansible_compare.md]

Needs root, openssh-server and unshare: the hosts are tests/sshd_host.py's real sshd test hosts
(a fake /sys of an HPE DL360 Gen9, each in its own mount namespace on its own 127.0.0.x address).
Per round, interleaved so that load on the machine hits every contender alike:

* console transport: `remote.run_many_sync` of `inventory` (the SSH phase of discovery);
* console discovery: `hosts.discovery.discover_hosts` into the database of the settings (the
  DATABASE_URL you give, SQLite under var/bench otherwise), i.e. SSH + recording;
* ansible `-m setup` (gather facts) and ansible `-m script` running the same agent file
  (`sriov_agent.py inventory`), each cold (a new SSH connection per task, no pipelining, the
  client's default algorithms) and tuned (ControlPersist connections opened by an untimed warm-up,
  pipelining, curve25519 and AES-GCM).

Ansible runs with forks = number of hosts, strict host-key checking against a known_hosts file of
the test hosts. The table gives the median wall time of each and its ratio to the console's
transport and discovery. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
os.environ.setdefault("CONSOLE_VAR_DIR", str(ROOT / "var" / "bench"))

AGENT = ROOT / "agent" / "sriov_agent.py"
TUNED_SSH = ("-o ControlMaster=auto -o ControlPersist=120s -o KexAlgorithms=curve25519-sha256 "
             "-o Ciphers=aes128-gcm@openssh.com")
COLD_SSH = "-o ControlMaster=no -o ControlPath=none"


def start_hosts(count):
    from tests.sshd_host import SshdHost, requirements_missing

    missing = requirements_missing()
    if not missing.ok:
        sys.exit(missing.reason())
    hosts = []
    try:
        for i in range(count):
            hosts.append(SshdHost(address=f"127.0.{16 + i // 250}.{2 + i % 250}").start())
    except BaseException:
        for host in hosts:
            host.cleanup()
        raise
    return hosts


def write_ansible_files(hosts, workdir: Path):
    key = workdir / "id_ed25519"
    key.write_text(hosts[0].client_key_text)
    key.chmod(0o600)
    (workdir / "known_hosts").write_text(
        "".join(f"[{h.address}]:{h.port} {h.host_key_line}\n" for h in hosts)
    )
    lines = ["[fleet]"] + [
        f"h{i} ansible_host={h.address} ansible_port={h.port} ansible_user=root "
        f"ansible_ssh_private_key_file={key} ansible_python_interpreter=/usr/bin/python3"
        for i, h in enumerate(hosts)
    ]
    (workdir / "inventory.ini").write_text("\n".join(lines) + "\n")
    for host in hosts[1:]:  # one client key for all: the same authorized key on every host
        (host.dir / "authorized_keys").write_text(hosts[0].client_public_key_line + "\n")
    return workdir / "inventory.ini"


def ansible_env(workdir: Path, tuned: bool) -> dict:
    known = f"-o UserKnownHostsFile={workdir / 'known_hosts'} -o StrictHostKeyChecking=yes"
    return {
        **os.environ,
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_ARGS": f"{TUNED_SSH if tuned else COLD_SSH} {known}",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(workdir / "cp"),
        "ANSIBLE_PIPELINING": "True" if tuned else "False",
        "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp"),
        "ANSIBLE_REMOTE_TMP": "/tmp/.ansible-bench",
        "ANSIBLE_STDOUT_CALLBACK": "oneline",
        "ANSIBLE_GATHERING": "explicit",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_SYSTEM_WARNINGS": "False",
    }


def run_ansible(inventory: Path, module: str, arg: str | None, env: dict, forks: int) -> float:
    ansible = shutil.which("ansible", path=str(Path(sys.executable).parent)) or shutil.which("ansible")
    if ansible is None:
        sys.exit("ansible-core is not installed: pip install -e '.[bench]'")
    argv = [ansible, "fleet", "-i", str(inventory), "-f", str(forks), "-m", module]
    if arg:
        argv += ["-a", arg]
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"ansible -m {module} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    # A failed or unreachable host makes the exit status non-zero; the output has one line per host.
    assert proc.stdout.count(" | ") >= forks, proc.stdout[-3000:]
    return elapsed


def console_transport(targets) -> float:
    import remote

    started = time.perf_counter()
    results = remote.run_many_sync([(t, "inventory", {}) for t in targets], concurrency=len(targets))
    elapsed = time.perf_counter() - started
    bad = [(r.host, r.kind, r.message) for r in results if not r.ok]
    assert not bad, bad
    return elapsed


def register(hosts):
    import django

    django.setup()
    from django.core.management import call_command

    import remote
    from hosts.credentials import create_credential
    from hosts.models import Credential, Hypervisor

    call_command("migrate", verbosity=0)
    Hypervisor.objects.filter(credential__name="ansible-compare").delete()
    Credential.objects.filter(name="ansible-compare").delete()
    credential = create_credential("ansible-compare", hosts[0].client_key_text)
    return [
        Hypervisor.objects.create(
            name=f"sshd-{i}", address=h.address, port=h.port, username="root", credential=credential,
            host_key=h.host_key_line, host_key_fingerprint=remote.fingerprint(h.host_key_line),
        ).pk
        for i, h in enumerate(hosts)
    ]


def console_discovery(ids) -> float:
    from django.conf import settings

    from hosts.discovery import discover_hosts
    from hosts.models import Hypervisor

    concurrency = settings.DISCOVERY_CONCURRENCY
    started = time.perf_counter()
    outcomes = discover_hosts(Hypervisor.objects.filter(pk__in=ids).order_by("pk"))
    elapsed = time.perf_counter() - started
    assert all(o.ok for o in outcomes) and len(ids) <= concurrency, outcomes
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write", help="append the results as markdown to this file")
    args = ap.parse_args()

    hosts = start_hosts(args.hosts)
    timings: dict[str, list[float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="ansible-compare-") as tmp:
            workdir = Path(tmp)
            (workdir / "cp").mkdir()
            (workdir / "tmp").mkdir()
            inventory = write_ansible_files(hosts, workdir)
            targets = [h.target(name=f"sshd-{i}", private_key=hosts[0].client_key_text)
                       for i, h in enumerate(hosts)]
            ids = register(hosts)
            cold, tuned = ansible_env(workdir, tuned=False), ansible_env(workdir, tuned=True)
            script = f"{AGENT} inventory executable=/usr/bin/python3"
            contenders = {
                "console transport (remote.run_many_sync inventory)": lambda: console_transport(targets),
                "console discovery (discover_hosts, SSH + database)": lambda: console_discovery(ids),
                "ansible -m setup, cold": lambda: run_ansible(inventory, "setup", None, cold, args.hosts),
                "ansible -m script agent, cold": lambda: run_ansible(inventory, "script", script, cold, args.hosts),
                "ansible -m setup, ControlPersist + pipelining + curve25519":
                    lambda: run_ansible(inventory, "setup", None, tuned, args.hosts),
                "ansible -m script agent, ControlPersist + pipelining + curve25519":
                    lambda: run_ansible(inventory, "script", script, tuned, args.hosts),
            }
            run_ansible(inventory, "ping", None, tuned, args.hosts)  # warm-up: opens the persistent masters
            for _ in range(args.rounds):
                for name, run in contenders.items():
                    timings.setdefault(name, []).append(run())
    finally:
        for host in hosts:
            host.cleanup()

    medians = {name: statistics.median(values) for name, values in timings.items()}
    transport = medians["console transport (remote.run_many_sync inventory)"]
    discovery = medians["console discovery (discover_hosts, SSH + database)"]
    from django.db import connection

    lines = [
        f"### {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC — {args.hosts} real sshd hosts, "
        f"{args.rounds} interleaved rounds",
        "",
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"ansible-core {_ansible_version()}, OpenSSH {_openssh_version()}, console database "
        f"{connection.vendor}; Ansible forks = {args.hosts}.",
        "",
        "| contender | median | ÷ console transport | ÷ console discovery |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, seconds in medians.items():
        lines.append(f"| {name} | {seconds:.2f} s | {seconds / transport:.1f}× | {seconds / discovery:.1f}× |")
    print("\n".join(lines))
    if args.write:
        with open(args.write, "a") as out:
            out.write("\n".join(lines) + "\n\n")
    return 0


def _ansible_version() -> str:
    from importlib.metadata import version

    return version("ansible-core")


def _openssh_version() -> str:
    proc = subprocess.run(["ssh", "-V"], capture_output=True, text=True)
    return (proc.stderr or proc.stdout).strip().split(",")[0]


if __name__ == "__main__":
    sys.exit(main())
