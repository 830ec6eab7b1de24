"""The mail server is down: every e-mail delivery is retried, then given up; the change is not
touched. (Its own module: its worker points at a port where nothing listens.)"""

import pytest

from changes.models import ChangeRequest
from notifications.models import Delivery, DeliveryAttempt
from tests.notifications.conftest import email_env, purge_queue, start_worker, stop_worker
from tests.notifications.helpers import submitted_change
from tests.notifications.servers import free_port, wait_for


@pytest.fixture
def dead_smtp_worker(transactional_db, tmp_path, settings):
    from django.db import connection

    env = email_env(free_port())  # nothing listens there
    settings.NOTIFY_EMAIL_ENABLED = True
    worker = start_worker(connection.settings_dict["NAME"], tmp_path / "celery-worker.log", env)
    yield worker
    stop_worker(worker)
    purge_queue()


def test_an_unreachable_mail_server_fails_the_delivery_not_the_change(dead_smtp_worker, people):
    change = submitted_change(people["otto"])
    wait_for(lambda: Delivery.objects.filter(channel="email").count() == 2
             and not Delivery.objects.filter(state__in=Delivery.OPEN).exists(), what="e-mail deliveries to fail")
    assert set(Delivery.objects.values_list("state", flat=True)) == {"failed"}
    attempt = DeliveryAttempt.objects.filter(delivery__recipient="anna@example.test").order_by("number").last()
    assert attempt.number == 3 and "Connection refused" in attempt.error
    assert ChangeRequest.objects.get(pk=change.pk).state == ChangeRequest.State.SUBMITTED
