"""Discovery: run the agent's `inventory` on hypervisors and record what it saw.

    discover_hosts(hosts, *, actor=None) -> list[DiscoveryOutcome]
    apply_result(host_id, result, *, actor=None, target_key=None, started_at=None) -> DiscoveryOutcome
    build_target(host) -> remote.HostTarget

How it works: the SSH calls run concurrently on a background event loop (remote.run_many_batches,
at most settings.DISCOVERY_CONCURRENCY at once) while the calling thread records the results that
have arrived, a batch at a time (hosts/discovery/recording.py: one transaction per batch, rows
locked, only what changed written, in bulk). So the database work overlaps the SSH phase and
costs a few queries per batch, not per NIC. What is stored is listed field by field in
hosts/discovery/facts.py; drift is hosts/drift.py.

Observed facts only: discovery never writes the console's intent (Intent rows, written by the change
executor); drift is the difference (hosts/drift.py, in each operation's words: hosts/intents.py).
A failed discovery keeps the facts of the last good one and says why in `status_reason`.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

import remote
from metrics.instruments import observe_discovery

from ..models import Hypervisor
from .recording import SYSTEM_ACTOR, DiscoveryOutcome, Item, record_results

__all__ = ["SYSTEM_ACTOR", "DiscoveryOutcome", "apply_result", "build_target", "discover_hosts"]

# Results written per transaction at most, and how long the first result of a batch waits for
# company: large enough that a batch costs a few queries for many hosts, small enough that the
# writes keep pace with the SSH calls.
WRITE_BATCH = 50
WRITE_WAIT = 0.25


def build_target(host: Hypervisor, *, private_key: str | None = None) -> remote.HostTarget:
    """The SSH target for a host. The only place a credential's private key is decrypted
    (private_key: the already decrypted key of host.credential, to decrypt it once per fleet)."""
    return remote.HostTarget(
        name=host.name,
        address=host.address,
        port=host.port,
        username=host.username,
        private_key=private_key if private_key is not None else host.credential.get_private_key(),
        known_host_key=host.host_key or None,
        accept_new_host_key=settings.HOST_KEY_TOFU,
        connect_timeout=settings.SSH_CONNECT_TIMEOUT,
        op_timeout=settings.SSH_OPERATION_TIMEOUT,
        fast_crypto=settings.SSH_FAST_CRYPTO,
    )


def discover_hosts(hosts, *, actor=None) -> list[DiscoveryOutcome]:
    """Run `inventory` on every host (instances or a queryset) and record each result.

    actor: the user who asked (refresh button) or None for the periodic discovery. Permission is
    checked by the caller (the task / request_discovery); this function only does the work.
    Returns one DiscoveryOutcome per host, in input order.
    """
    hosts = list(hosts.select_related("credential") if hasattr(hosts, "select_related") else hosts)
    started_at = timezone.now()
    outcomes: dict[int, DiscoveryOutcome] = {}
    bare = [Item(host.pk, None) for host in hosts if host.credential_id is None]
    if bare:
        outcomes.update(_by_host(record_results(bare, actor=actor, started_at=started_at)))
    jobs, job_hosts = _jobs([host for host in hosts if host.credential_id is not None])
    for batch in remote.run_many_batches(
        jobs, concurrency=settings.DISCOVERY_CONCURRENCY, batch_size=WRITE_BATCH, max_wait=WRITE_WAIT
    ):
        items = [Item(job_hosts[i].pk, result, jobs[i][0].known_host_key or "") for i, result in batch]
        for _i, result in batch:
            observe_discovery(result)
        outcomes.update(_by_host(record_results(items, actor=actor, started_at=started_at)))
    return [outcomes[host.pk] for host in hosts]


def apply_result(host_id, result, *, actor=None, target_key=None, started_at=None) -> DiscoveryOutcome:
    """Record one remote.AgentResult of `inventory` for a host (the change executor's re-reads).

    target_key: the pinned key the SSH call was made with; when the pin changed meanwhile (an admin
    accepted or replaced it) the result is stale for key purposes and is not recorded.
    """
    (outcome,) = record_results([Item(host_id, result, target_key)], actor=actor, started_at=started_at)
    if not outcome.name and result is not None:
        outcome.name = result.host
    return outcome


def _jobs(hosts):
    keys: dict[int, str] = {}
    jobs = []
    for host in hosts:
        if host.credential_id not in keys:
            keys[host.credential_id] = host.credential.get_private_key()
        jobs.append((build_target(host, private_key=keys[host.credential_id]), "inventory", {}))
    return jobs, hosts


def _by_host(outcomes) -> dict[int, DiscoveryOutcome]:
    return {outcome.host_id: outcome for outcome in outcomes}
