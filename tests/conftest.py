"""Fixtures shared by the whole suite: role users, and a real Celery worker process.

Real components: the database is PostgreSQL when DATABASE_URL says so (CI), the broker is Redis
when REDIS_URL is set (CI), otherwise SQLite and the filesystem broker under CONSOLE_VAR_DIR.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group

from tests.procs import spawn

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PASSWORD = "correct-horse-battery-staple-42"


def pytest_sessionstart(session):
    # In CI nothing that needs PostgreSQL or Redis may quietly fall back to SQLite or files.
    if IN_CI:
        engine = settings.DATABASES["default"]["ENGINE"]
        assert engine == "django.db.backends.postgresql", f"CI must run on PostgreSQL, got {engine}"
        assert settings.CELERY_BROKER_URL.startswith("redis://"), "CI must run Celery on Redis"
    drop_abandoned_test_databases()


def pytest_sessionfinish(session, exitstatus):
    from tests.procs import stop_reaper

    stop_reaper()


def drop_abandoned_test_databases():
    """PostgreSQL: drop the databases of earlier test runs on this machine whose pytest is gone
    (named test_sriov_<pid>_<random>; a live run's database is never touched)."""
    from tests.procs import alive

    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        return
    import psycopg

    params = settings.DATABASES["default"]
    try:
        conn = psycopg.connect(host=params.get("HOST") or None, port=params.get("PORT") or None,
                               user=params.get("USER") or None, password=params.get("PASSWORD") or None,
                               dbname="postgres", autocommit=True)
    except psycopg.Error:
        return  # pytest-django reports an unreachable server loudly when it creates the test database
    with conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'test_sriov_%'")]
        for name in names:
            pid = name.split("_")[2]
            if pid.isdigit() and not alive(int(pid)) and name != params.get("TEST", {}).get("NAME"):
                try:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                except psycopg.Error:
                    pass


def require_or_skip(condition: bool, reason: str) -> None:
    """Skip loudly on a developer machine; in CI a missing prerequisite is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def ensure_role_groups():
    """The role groups come from a migration; a transactional_db test's flush empties them, so a
    later test puts them back (same table as console/migrations/0002_roles.py)."""
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType

    from console.roles import PERMISSIONS, ROLE_PERMISSIONS

    content_type, _ = ContentType.objects.get_or_create(app_label="console", model="consolepermission")
    perms = {
        codename: Permission.objects.get_or_create(content_type=content_type, codename=codename,
                                                   defaults={"name": name})[0]
        for codename, name in PERMISSIONS.items()
    }
    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.set([perms[c] for c in codenames])


def register_sim_hosts(fleet, sims, credential_name=None):
    """Register simulated hosts with their keys pinned, discover them (each must answer ok) and
    return them by name. The shared set-up of the integration and browser tests."""
    from django.utils import timezone

    import remote
    from hosts.credentials import create_credential
    from hosts.discovery import discover_hosts
    from hosts.models import Hypervisor

    credential = create_credential(credential_name or f"simfleet-{sims[0].name}",
                                   fleet.client_private_key_path.read_text())
    created = [
        Hypervisor.objects.create(
            name=s.name, address=s.address, port=s.port, username=s.username, credential=credential,
            host_key=s.original_host_public_key, host_key_fingerprint=remote.fingerprint(s.original_host_public_key),
            host_key_accepted_at=timezone.now(),
        )
        for s in sims
    ]
    hosts = Hypervisor.objects.filter(pk__in=[h.pk for h in created]).order_by("name")
    outcomes = discover_hosts(hosts)
    assert [o.kind for o in outcomes] == ["ok"] * len(created), outcomes
    return list(hosts.all())


def make_user(username: str, *roles: str, **extra):
    from django.contrib.auth import get_user_model

    ensure_role_groups()
    user = get_user_model().objects.create_user(username=username, password=PASSWORD, **extra)
    user.groups.set(Group.objects.filter(name__in=roles))
    return user


@pytest.fixture
def viewer(db):
    return make_user("vera", "viewer")


@pytest.fixture
def operator(db):
    return make_user("otto", "operator")


@pytest.fixture
def approver(db):
    return make_user("anna", "approver")


@pytest.fixture
def second_approver(db):
    return make_user("arne", "approver")


@pytest.fixture
def auditor(db):
    return make_user("audrey", "auditor")


@pytest.fixture
def admin_user(db):
    return make_user("ada", "admin", is_staff=True)


@pytest.fixture
def client_for(client):
    """client_for(user) → a test client logged in as that user."""

    def login(user):
        client.force_login(user)
        return client

    return login


def _purge_broker():
    from console.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(app.conf.task_default_queue)


class WorkerProcess:
    """A real `celery worker` subprocess on the test database and the configured broker."""

    def __init__(self, db_name: str, log_path: Path, broker_url: str | None = None, env: dict | None = None):
        self.db_name = db_name
        self.log_path = log_path
        self.broker_url = broker_url  # another broker than the run's (a Redis the test owns)
        self.extra_env = env or {}
        self.proc = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self):
        env = dict(os.environ, DATABASE_NAME_OVERRIDE=str(self.db_name), PYTHONUNBUFFERED="1", **self.extra_env)
        if self.broker_url:
            env["CELERY_BROKER_URL"] = self.broker_url
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the worker's life
        # The test run's own queue (settings.CELERY_TASK_DEFAULT_QUEUE): a stray worker of another
        # run on the same Redis never takes this run's tasks, nor this worker theirs.
        self.proc = spawn(
            [sys.executable, "-m", "celery", "-A", "console", "worker", "--loglevel=INFO", "--pool=prefork",
             "--concurrency=4", "--without-gossip", "--without-mingle", "-n", f"test-{os.getpid()}@%h",
             "-Q", settings.CELERY_TASK_DEFAULT_QUEUE],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited early; see {self.log_path}")
            if b" ready." in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        raise RuntimeError(f"celery worker not ready after {timeout}s; see {self.log_path}")

    def kill(self):
        """SIGKILL the whole worker (main process and pool children), as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "log", None):
            self.log.close()


class BeatProcess:
    """A real `celery beat` subprocess (resumes stale host runs, kicks stalled rollouts)."""

    def __init__(self, log_path: Path, broker_url: str | None = None, env: dict | None = None):
        self.log_path = log_path
        self.env = dict(env or {})
        if broker_url:
            self.env["CELERY_BROKER_URL"] = broker_url
        self.proc = None

    def start(self):
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for beat's life
        schedule = self.log_path.with_name(self.log_path.stem + "-schedule")
        self.proc = spawn(
            [sys.executable, "-m", "celery", "-A", "console", "beat", "--loglevel=INFO", "-s", str(schedule)],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()


@pytest.fixture
def celery_worker(celery_worker_with):
    """Start a real worker for one test; tests using it see committed data (transactional_db)."""
    return celery_worker_with()


@pytest.fixture
def celery_worker_with(transactional_db, tmp_path):
    """celery_worker_with(**env) → a real worker started with extra environment variables."""
    from django.db import connection

    started = []

    def start(**env):
        _purge_broker()
        worker = WorkerProcess(connection.settings_dict["NAME"], tmp_path / f"celery-worker-{len(started)}.log",
                               env=env).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
