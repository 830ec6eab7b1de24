"""manage.py demo — the whole console on one machine, on a fresh clone (`make demo` runs this).

What it does, in order (everything under CONSOLE_VAR_DIR, default var/):

1. migrates the database (SQLite var/db.sqlite3 unless DATABASE_URL says otherwise) and collects
   static files;
2. creates the demo users admin, operator, approver, auditor and viewer (one per role; admin is
   also staff + superuser) with generated passwords kept in var/demo-users.json (mode 0600) and
   printed at every start;
3. starts a simulated fleet (`python -m simfleet serve --count N`, real SSH on 127.0.0.1) and waits
   for its inventory, makes a Credential from its client key and registers its hosts (idempotent:
   a re-run updates address/port);
4. starts a Celery worker and Celery beat on the embedded filesystem broker, with HOST_KEY_TOFU=1
   so that the first discovery pins each host's SSH key (audited; production leaves it off);
5. queues a first fleet discovery and runs the web server (runserver --noreload) on
   127.0.0.1:PORT; prints how to log in.

Ctrl-C (SIGINT) or SIGTERM stops every process it started (each in its own process group) and
exits 0. If one of them dies on its own, the others are stopped too and the exit status is 1.
"""

from __future__ import annotations

import csv
import ctypes
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

DEMO_USERS = (
    # username, role, what they can do
    ("admin", "admin", "everything, including host-key trust, credentials and /admin/"),
    ("operator", "operator", "register hosts, run discovery, draft changes"),
    ("approver", "approver", "approve or reject changes requested by others"),
    ("auditor", "auditor", "review and export the audit history"),
    ("viewer", "viewer", "read-only"),
)
CREDENTIAL_NAME = "simfleet-demo"
STOP_TIMEOUT = 15.0


def _die_with_demo() -> None:
    """Linux: the child gets SIGTERM when the demo process dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Interrupted(Exception):
    """Ctrl-C / SIGTERM while the demo was still starting."""


class Child:
    """A process the demo started, in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict, log_path: Path, cwd: Path):
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "ab")  # noqa: SIM115 - open for the child's life
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_demo,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal_group(self, sig) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        self.log.close()


class Command(BaseCommand):
    help = (
        "Run the demo: web + Celery worker + beat + a simulated fleet over SSH, on SQLite. Ctrl-C stops it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--hosts", type=int, default=24, help="simulated hypervisors (default 24)")
        parser.add_argument("--port", type=int, default=8000, help="web port on 127.0.0.1 (default 8000)")
        parser.add_argument(
            "--sim-base-port",
            type=int,
            default=2222,
            help="first SSH port of the simulated hosts (default 2222; 0 = any free ports)",
        )

    # -- orchestration ------------------------------------------------------------------------

    def handle(self, *args, hosts, port, sim_base_port, **options):
        if hosts < 1 or hosts > 5000:
            raise CommandError("--hosts must be between 1 and 5000")
        self.children: list[Child] = []
        self.stopping = False
        self.var = Path(settings.VAR_DIR).resolve()
        self.logs = self.var / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        root = Path(settings.BASE_DIR)
        logging.getLogger("kombu.connection").setLevel(logging.ERROR)  # "no hostname" (filesystem broker)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        status = 0
        try:
            self._say(f"SR-IOV Console demo — data in {self.var}")
            self._prepare_database()
            passwords = self._demo_users()
            env = self._child_env()
            fleet_dir = self.var / "simfleet"
            inventory = self._start_simfleet(root, env, fleet_dir, hosts, sim_base_port)
            registered = self._register_fleet(fleet_dir, inventory)
            self._purge_broker()
            self._start(
                root,
                env,
                "worker",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "console",
                    "worker",
                    "--loglevel=INFO",
                    "--concurrency=2",
                    "--without-gossip",
                    "--without-mingle",
                    "-n",
                    f"demo-{os.getpid()}@%h",
                ],
            )
            self._start(
                root,
                env,
                "beat",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "console",
                    "beat",
                    "--loglevel=INFO",
                    "-s",
                    str(self.var / "celerybeat-schedule"),
                ],
            )
            self._start(
                root,
                env,
                "web",
                [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            )
            from hosts import dispatch

            dispatch.discover_fleet()  # no transaction is open: published at once
            self._wait_for_web(port)
            self._banner(port, passwords, registered)
            status = self._supervise()
        except Interrupted:
            status = 0
        except CommandError:
            status = 1
            raise
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if status:
            raise CommandError(
                "a demo process stopped unexpectedly (see its log above); everything was stopped"
            )
        self._say("demo stopped; everything it started has exited.")

    def _on_signal(self, signum, frame):
        if self.stopping:
            return
        self.stopping = True
        self._say(f"\n{signal.Signals(signum).name}: stopping the demo ...")

    def _say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def _check_interrupted(self) -> None:
        if self.stopping:
            raise Interrupted

    # -- steps --------------------------------------------------------------------------------

    def _prepare_database(self) -> None:
        db = settings.DATABASES["default"]
        where = (
            db["NAME"]
            if db["ENGINE"].endswith("sqlite3")
            else f"{db['ENGINE'].rsplit('.', 1)[-1]} {db['NAME']}"
        )
        self._say(f"- database: {where} (migrating)")
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)

    def _demo_users(self) -> dict[str, str]:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group

        store = self.var / "demo-users.json"
        try:
            passwords = json.loads(store.read_text())
        except (OSError, ValueError):
            passwords = {}
        User = get_user_model()
        changed = False
        for username, role, _what in DEMO_USERS:
            user = User.objects.filter(username=username).first()
            if user is None or username not in passwords:
                passwords[username] = f"demo-{secrets.token_urlsafe(12)}"
                changed = True
                if user is None:
                    user = User(username=username)
                user.set_password(passwords[username])
            user.is_active = True
            user.is_staff = user.is_superuser = role == "admin"
            user.save()
            user.groups.set(Group.objects.filter(name=role))
        if changed or not store.exists():
            store.touch(mode=0o600)
            store.write_text(json.dumps(passwords, indent=2) + "\n")
        self._say(f"- demo users ready (passwords kept in {store})")
        return passwords

    def _child_env(self) -> dict:
        env = dict(os.environ)
        env["CONSOLE_VAR_DIR"] = str(self.var)
        env["HOST_KEY_TOFU"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
        return env

    def _start(self, root: Path, env: dict, name: str, argv: list[str]) -> Child:
        self._check_interrupted()
        child = Child(name, argv, env, self.logs / f"{name}.log", root)
        self.children.append(child)
        self._say(f"- started {name:<8} pid {child.pid:<7} log {child.log_path}")
        return child

    def _start_simfleet(self, root, env, fleet_dir: Path, count: int, base_port: int) -> Path:
        fleet_dir.mkdir(parents=True, exist_ok=True)
        inventory = fleet_dir / "inventory.csv"
        for stale in (inventory, fleet_dir / "fleet.json"):
            stale.unlink(missing_ok=True)
        child = self._start(
            root,
            env,
            "simfleet",
            [
                sys.executable,
                "-m",
                "simfleet",
                "serve",
                "--count",
                str(count),
                "--state-dir",
                str(fleet_dir),
                "--base-port",
                str(base_port),
            ],
        )
        deadline = time.monotonic() + 120
        while not inventory.exists():
            self._check_interrupted()
            if not child.alive():
                raise CommandError(
                    f"the simulated fleet exited at start; see {child.log_path}:\n" + _tail(child.log_path)
                )
            if time.monotonic() > deadline:
                raise CommandError(f"the simulated fleet did not start in 120 s; see {child.log_path}")
            time.sleep(0.1)
        return inventory

    def _register_fleet(self, fleet_dir: Path, inventory: Path) -> int:
        from hosts.credentials import create_credential, parse_private_key
        from hosts.models import Credential
        from hosts.services import import_hosts

        private_key = (fleet_dir / "client_key").read_text()
        credential = Credential.objects.filter(name=CREDENTIAL_NAME).first()
        if credential is None:
            credential = create_credential(CREDENTIAL_NAME, private_key, username="root")
        else:
            public, fingerprint = parse_private_key(private_key)
            if fingerprint != credential.fingerprint:
                credential.set_private_key(private_key, public, fingerprint)
                credential.save()
        with open(inventory, newline="") as handle:
            rows = [
                {
                    "line": number,
                    "name": row["name"],
                    "address": row["address"],
                    "port": row["port"],
                    "username": row["username"],
                    "labels": ["simfleet", row["profile"]],
                }
                for number, row in enumerate(csv.DictReader(handle), start=2)
            ]
        report = import_hosts(rows, None, credential, update_existing=True, source="demo simfleet inventory")
        from hosts.models import Hypervisor

        stale = Hypervisor.objects.filter(labels__name="simfleet").exclude(name__in=[r["name"] for r in rows])
        if stale.exists():
            self._say(
                f"  note: {stale.count()} simulated host(s) from an earlier, larger demo are not running "
                "now and will show as unreachable"
            )
        if report.errors:
            raise CommandError(
                "registering the simulated hosts failed:\n" + "\n".join(map(str, report.errors))
            )
        self._say(
            f"- simulated fleet: {len(rows)} hosts on 127.0.0.1 over SSH ({len(report.created)} newly "
            f"registered, {len(report.updated)} updated), credential {CREDENTIAL_NAME!r}"
        )
        return len(rows)

    def _purge_broker(self) -> None:
        """Drop tasks a previous demo left in the queue (e.g. killed mid-way)."""
        from console.celery import app

        try:
            with app.connection_for_write() as conn:
                conn.default_channel.queue_purge(app.conf.task_default_queue)
        except Exception as exc:  # the queue may not exist yet
            self._say(f"  (broker queue not purged: {exc})")

    def _wait_for_web(self, port: int) -> None:
        url = f"http://127.0.0.1:{port}/login/"
        deadline = time.monotonic() + 90
        web = next(c for c in self.children if c.name == "web")
        while True:
            self._check_interrupted()
            self._check_children()
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own URL
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise CommandError(f"the web server did not answer on {url}; see {web.log_path}")
            time.sleep(0.2)

    def _banner(self, port: int, passwords: dict, hosts: int) -> None:
        width = max(len(u) for u, _r, _w in DEMO_USERS)
        lines = [
            "",
            "=" * 78,
            f" SR-IOV Console demo is running: http://127.0.0.1:{port}/",
            "",
            f" Log in as (one user per role; passwords kept in {self.var / 'demo-users.json'}):",
        ]
        for username, _role, what in DEMO_USERS:
            lines.append(f"   {username:<{width}}  password: {passwords[username]:<24}  {what}")
        lines += [
            "",
            f" {hosts} simulated hypervisors answer over real SSH (simfleet); the first fleet",
            " discovery is queued now and Celery beat repeats it every "
            f"{os.environ.get('DISCOVERY_INTERVAL_MINUTES', '15')} minutes.",
            " Trust-on-first-use of SSH host keys is ON for this demo (HOST_KEY_TOFU=1 in the worker):",
            " each host's first key is pinned automatically and audited. Production leaves it off.",
            f" Logs: {self.logs}/ (web, worker, beat, simfleet)",
            "",
            " Press Ctrl-C to stop everything.",
            "=" * 78,
        ]
        self._say("\n".join(lines))

    def _check_children(self) -> None:
        for child in self.children:
            if not child.alive():
                raise CommandError(
                    f"{child.name} (pid {child.pid}) exited with status {child.proc.returncode}; "
                    f"see {child.log_path}:\n" + _tail(child.log_path)
                )

    def _supervise(self) -> int:
        while not self.stopping:
            for child in self.children:
                if not child.alive():
                    self.stderr.write(
                        f"{child.name} (pid {child.pid}) exited with status "
                        f"{child.proc.returncode}; see {child.log_path}:\n" + _tail(child.log_path)
                    )
                    return 1
            time.sleep(0.5)
        return 0

    def _stop_all(self) -> None:
        """SIGTERM each main process (web first, simfleet last), then SIGKILL what is left of its group."""
        order = {"web": 0, "beat": 1, "worker": 2, "simfleet": 3}
        children = sorted(self.children, key=lambda c: order.get(c.name, 9))
        for child in children:
            if child.alive():
                child.proc.terminate()  # the main process shuts its own helpers down (warm shutdown)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in children:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._say(f"  {child.name} did not stop in {STOP_TIMEOUT:g} s; killing it")
            # Whatever is left in the group (e.g. Celery pool processes) goes too.
            child.signal_group(signal.SIGKILL)
            try:
                child.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            child.close()
            self._say(f"- stopped {child.name}")
        self.children = []


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
