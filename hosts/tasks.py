"""Celery tasks for discovery.

    discover_host(host_id, actor_id=None)   on demand (the refresh button); idempotent
    discover_fleet()                        Celery beat (settings.CELERY_BEAT_SCHEDULE): fan-out in chunks
    discover_chunk(host_ids, actor_id=None) one chunk: SSH to up to DISCOVERY_CHUNK_SIZE hosts at once

Enqueue from web code through hosts.services.request_discovery(), which checks the permission,
marks the host and enqueues after the transaction commits.
"""

from celery import shared_task
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from console.roles import check_permission

from . import dispatch
from .discovery import discover_hosts
from .models import Hypervisor
from .services import claim_discovery

# How many hosts one task handles. Each task talks to its chunk concurrently (bounded by
# DISCOVERY_CONCURRENCY); several workers share a big fleet by taking different chunks.
DISCOVERY_CHUNK_SIZE = settings.DISCOVERY_CHUNK_SIZE


def _actor(actor_id):
    """The user a task acts for, permission checked; None for the system (beat)."""
    if actor_id is None:
        return None
    user = get_user_model().objects.filter(pk=actor_id).first()
    check_permission(user, "operate")  # a deleted/deactivated user is refused too
    return user


@shared_task(name="hosts.tasks.discover_host", acks_late=True, ignore_result=True)
def discover_host(host_id: int, actor_id: int | None = None) -> dict | None:
    """Discover one host now. Safe to run twice: discovery only records what it observes."""
    actor = _actor(actor_id)
    hosts = Hypervisor.objects.filter(pk=host_id)
    outcomes = discover_hosts(hosts, actor=actor)
    return {"host_id": host_id, "kind": outcomes[0].kind} if outcomes else None


@shared_task(name="hosts.tasks.discover_chunk", acks_late=True, ignore_result=True)
def discover_chunk(host_ids: list[int], actor_id: int | None = None) -> dict:
    actor = _actor(actor_id)
    outcomes = discover_hosts(Hypervisor.objects.filter(pk__in=host_ids).order_by("pk"), actor=actor)
    kinds: dict[str, int] = {}
    for outcome in outcomes:
        kinds[outcome.kind] = kinds.get(outcome.kind, 0) + 1
    return kinds


@shared_task(name="hosts.tasks.discover_fleet", acks_late=True, ignore_result=True)
def discover_fleet(chunk_size: int | None = None) -> int:
    """Periodic discovery of every host, one `discover_chunk` task per chunk of hosts.

    Hosts with a host-key mismatch are included: the SSH handshake refuses them again before
    anything runs, which keeps their status honest at no risk. Returns the number of chunks.
    """
    size = max(1, chunk_size or DISCOVERY_CHUNK_SIZE)
    # Hosts with a discovery already queued or running are left out: one pending per host.
    ids = claim_discovery(Hypervisor.objects.values_list("pk", flat=True), timezone.now())
    ids.sort()
    chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
    for chunk in chunks:
        dispatch.discover_chunk(chunk)
    return len(chunks)
