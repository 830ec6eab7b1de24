"""Notification tests: a real SMTP server, a webhook receiver and a Celery worker configured for
them through the environment (the worker is a separate process and reads its settings there)."""

import pytest

from tests.conftest import WorkerProcess, make_user
from tests.notifications.servers import SmtpServer, WebhookReceiver


def purge_queue():
    from console.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(app.conf.task_default_queue)


@pytest.fixture(scope="module")
def smtp():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def empty_inbox(request):
    if "smtp" in request.fixturenames:
        request.getfixturevalue("smtp").inbox.messages.clear()


@pytest.fixture
def receiver():
    server = WebhookReceiver().start()
    yield server
    server.stop()


def email_env(port: int) -> dict:
    return {"EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(port), "EMAIL_TIMEOUT": "5",
            "NOTIFY_RETRY_BASE_SECONDS": "0.2", "NOTIFY_RETRY_MAX_SECONDS": "1", "NOTIFY_MAX_ATTEMPTS": "3",
            "NOTIFY_WEBHOOK_TIMEOUT": "3", "CONSOLE_BASE_URL": "https://console.example.test"}


def stop_worker(worker: WorkerProcess) -> None:
    """No graceful shutdown needed (nothing it holds matters after the test): kill it at once."""
    worker.kill()
    worker.log.close()


def start_worker(db_name, log_path, env: dict) -> WorkerProcess:
    """A worker whose environment carries `env` (it reads its settings there)."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        purge_queue()
        return WorkerProcess(db_name, log_path).start()


@pytest.fixture
def notify_worker(transactional_db, smtp, settings, tmp_path):
    """A real worker sending e-mail to `smtp`, and the test process's settings agreeing with it.

    One per test, killed before the test's database is flushed: a worker still busy with the
    test's last tasks (a retry, a rollout) would otherwise hold locks the flush needs."""
    from django.db import connection

    env = email_env(smtp.port)
    settings.NOTIFY_EMAIL_ENABLED = True
    settings.CONSOLE_BASE_URL = env["CONSOLE_BASE_URL"]
    worker = start_worker(connection.settings_dict["NAME"], tmp_path / "celery-worker.log", env)
    yield worker
    stop_worker(worker)
    purge_queue()


@pytest.fixture
def people(db):
    """A requester, approvers (one opted out of approval mail), an admin, a viewer; all with e-mail."""
    from notifications.models import Subscription

    found = {
        "otto": make_user("otto", "operator", email="otto@example.test"),
        "anna": make_user("anna", "approver", email="anna@example.test"),
        "arne": make_user("arne", "approver", email="arne@example.test"),
        "ada": make_user("ada", "admin", email="ada@example.test"),
        "vera": make_user("vera", "viewer", email="vera@example.test"),
    }
    Subscription.objects.create(user=found["arne"], approval_needed=False)
    return found
