"""Asking for discovery: one pending discovery per host, and a broker that is down or frozen
never turns a refresh into a 500 or a lost request (the message waits in the outbox)."""

import pytest
import redis
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from console.dispatch import BROKER_DOWN, flush_outbox
from console.models import OutboxMessage
from hosts import services
from hosts.models import Credential, Hypervisor
from hosts.tasks import discover_fleet
from tests.conftest import require_or_skip
from tests.redis_server import RedisServer, publishing_to

HTMX = {"HTTP_HX_REQUEST": "true"}


def _hosts(n):
    credential = Credential.objects.create(name="k", username="root", public_key="ssh-ed25519 AAAA k")
    return [Hypervisor.objects.create(name=f"hv{i}", address=f"10.0.0.{i}", credential=credential)
            for i in range(1, n + 1)]


def _queued(server: RedisServer) -> list:
    client = redis.Redis.from_url(server.url)
    return [k.decode() for k in client.keys("*") if client.type(k) == b"list" and client.llen(k)]


@pytest.fixture
def own_redis(tmp_path):
    import shutil

    require_or_skip(shutil.which("redis-server") is not None, "redis-server is not installed")
    server = RedisServer(tmp_path / "redis.log").start()
    with publishing_to(server.url):
        yield server
    server.kill()


def test_refresh_with_the_broker_down_is_kept_and_sent_later(transactional_db, client_for, operator, own_redis):
    host, other = _hosts(2)
    client = client_for(operator)
    ok = client.post(reverse("hosts:refresh", args=[host.pk]), **HTMX)
    assert ok.status_code == 200
    assert OutboxMessage.objects.count() == 0 and _queued(own_redis)

    own_redis.kill()
    down = client.post(reverse("hosts:refresh", args=[other.pk]), **HTMX)
    assert down.status_code == 503
    assert BROKER_DOWN in down.content.decode()
    kept = OutboxMessage.objects.get()
    assert kept.task == "hosts.tasks.discover_host" and kept.args == [other.pk, operator.pk]
    other.refresh_from_db()
    assert other.discovery_requested_at is not None  # still pending, not forgotten

    # A full-page (non-htmx) refresh says the same on the page it redirects to.
    Hypervisor.objects.filter(pk=other.pk).update(discovery_requested_at=None)
    page = client.post(reverse("hosts:refresh", args=[other.pk]), follow=True)
    assert BROKER_DOWN in page.content.decode()
    assert flush_outbox()["sent"] == 0  # still down: nothing lost, nothing sent

    restarted = RedisServer(own_redis.log_path, port=own_redis.port).start()
    try:
        result = flush_outbox()
        assert result["sent"] == 2 and result["waiting"] == 0
        assert OutboxMessage.objects.count() == 0
    finally:
        restarted.kill()


def test_refresh_with_the_broker_frozen_answers_within_the_bound(transactional_db, client_for, operator, own_redis):
    (host,) = _hosts(1)
    own_redis.freeze()
    try:
        response = client_for(operator).post(reverse("hosts:refresh", args=[host.pk]), **HTMX)
        # It answered while Redis is still frozen: the publish gave up instead of waiting.
        assert response.status_code == 503
        assert OutboxMessage.objects.filter(task="hosts.tasks.discover_host").count() == 1
    finally:
        own_redis.thaw()


def test_one_pending_discovery_per_host(transactional_db, operator, own_redis):
    host, other = _hosts(2)
    first = services.request_discovery(host, operator)
    assert first is not None and first.sent
    assert services.request_discovery(host, operator) is None  # already pending: not queued again
    assert len(_queued(own_redis)) == 1
    assert redis.Redis.from_url(own_redis.url).llen(_queued(own_redis)[0]) == 1

    # The fleet fan-out leaves the pending host out and marks the other one.
    assert discover_fleet.run(chunk_size=50) == 1
    other.refresh_from_db()
    assert other.discovery_requested_at is not None
    assert discover_fleet.run(chunk_size=50) == 0  # a burst queues nothing more

    # A pending mark older than DISCOVERY_PENDING_SECONDS is presumed lost: it may be queued again.
    stale = timezone.now() - timezone.timedelta(seconds=settings.DISCOVERY_PENDING_SECONDS + 1)
    Hypervisor.objects.filter(pk=host.pk).update(discovery_requested_at=stale)
    assert services.request_discovery(host, operator) is not None


def test_api_discover_with_the_broker_down_is_503_and_kept(transactional_db, operator, own_redis):
    from rest_framework.test import APIClient

    (host,) = _hosts(1)
    api = APIClient()
    api.force_authenticate(operator)
    own_redis.kill()
    response = api.post(f"/api/v1/hypervisors/{host.pk}/discover/")
    assert response.status_code == 503 and response.json()["detail"] == BROKER_DOWN
    assert OutboxMessage.objects.filter(task="hosts.tasks.discover_host", args=[host.pk, operator.pk]).exists()
    again = api.post(f"/api/v1/hypervisors/{host.pk}/discover/")
    assert again.status_code == 202 and "already queued" in again.json()["detail"]
