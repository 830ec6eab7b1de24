"""The hosts app's Celery tasks, by name, published after commit (console/dispatch.py)."""

from console.dispatch import Ticket, after_commit

DISCOVER_HOST = "hosts.tasks.discover_host"
DISCOVER_CHUNK = "hosts.tasks.discover_chunk"
DISCOVER_FLEET = "hosts.tasks.discover_fleet"


def discover_host(host_id: int, actor_id: int | None) -> Ticket:
    return after_commit(DISCOVER_HOST, (host_id, actor_id))


def discover_chunk(host_ids: list[int], actor_id: int | None = None) -> Ticket:
    return after_commit(DISCOVER_CHUNK, (host_ids, actor_id))


def discover_fleet() -> Ticket:
    return after_commit(DISCOVER_FLEET)
