"""A test run owns what it uses on the shared PostgreSQL and Redis, and every process it starts
dies with it, also when pytest itself is SIGKILLed (a stray worker of a killed run once took the
tasks of the next run on the same Redis)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from tests.procs import alive

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def test_this_run_has_its_own_queue_and_database():
    run_id = settings.TEST_RUN_ID
    assert run_id and run_id.startswith(f"{os.getpid()}_")
    assert run_id in settings.CELERY_TASK_DEFAULT_QUEUE
    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        assert settings.DATABASES["default"]["NAME"] == f"test_sriov_{run_id}"
    if settings.CELERY_BROKER_URL.startswith("redis://"):
        assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] == f"sriov-test-{run_id}:"


@pytest.mark.timeout(240)
def test_worker_dies_when_pytest_is_killed(tmp_path, db):
    probe_out = tmp_path / "probe.json"
    env = {k: v for k, v in os.environ.items() if k not in ("CONSOLE_TEST_RUN_ID", "PYTEST_VERSION")}
    env.update(PROBE_OUT=str(probe_out), CONSOLE_VAR_DIR=str(tmp_path / "var"))
    inner = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/support/killed_run_probe.py"],
        cwd=ROOT, env=env, stdout=open(tmp_path / "inner.log", "wb"), stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while not probe_out.exists():
            assert inner.poll() is None, (tmp_path / "inner.log").read_text()
            assert time.monotonic() < deadline, "the inner run never started its worker"
            time.sleep(0.5)
        probe = json.loads(probe_out.read_text())
        assert probe["queue"] != settings.CELERY_TASK_DEFAULT_QUEUE, "two runs must not share a queue"
        assert probe["database"] != settings.DATABASES["default"]["NAME"]
        worker = probe["worker_pid"]
        assert alive(worker) and _group_alive(worker)
    finally:
        inner.send_signal(signal.SIGKILL)
        inner.wait()
    deadline = time.monotonic() + 30
    while _group_alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _group_alive(worker), "the killed run's Celery worker (or its pool) is still running"

    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        from django.db import connection

        from tests.conftest import drop_abandoned_test_databases

        drop_abandoned_test_databases()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [probe["database"]])
            assert cursor.fetchone() is None, "the killed run's database was not dropped by the next run"
