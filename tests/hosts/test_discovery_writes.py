"""What recording a chunk of discovery results costs and writes, through the real agent's inventory
of simulated hosts (tests/hosts/pages_fleet.py runs the exact agent bytes in-process).

Query counts are per chunk, and must not grow with the number of NICs and VFs: at most 6 queries
per host for a first discovery, 3 for a repeat one that finds nothing new. Unchanged rows are not
written at all.
"""

import dataclasses
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from hosts.discovery.recording import Item, record_results
from hosts.models import Hypervisor, Nic, VirtualFunction
from simfleet.host import SimHost

from .pages_fleet import _agent, host_key, inventory_result

FIRST_PER_HOST = 6
# A first discovery also reads and inserts the chunk's libvirt networks (one statement each).
NETWORKS_FIRST = 2
# An unchanged chunk: savepoint and release, one read each of hosts, NICs, VFs, libvirt networks and
# intents, one bulk update of the hosts' contact times -- whatever the number of hosts.
REPEAT_PER_CHUNK = 8


def _run(sim, op, args):
    request = {"op": op, "args": args, "request_id": f"t-{sim.name}"}
    status, out, err = _agent()["run_payload"](json.dumps(request).encode(), sim.system())
    assert status == 0, (out, err)
    return json.loads(out)["result"]


def with_vfs(sim, count):
    """Give every SR-IOV NIC of the simulated host `count` VFs (bounded by its totalvfs)."""
    for nic in _run(sim, "inventory", {})["nics"]:
        if nic.get("sriov_capable") and not nic.get("is_vf"):
            wanted = min(count, nic["sriov_totalvfs"])
            _run(sim, "set_vfs", {"pf": nic["name"], "pci_address": nic["pci_address"], "count": wanted,
                                  "persist": True, "take_over": True})
    return sim


def register(names):
    line, fingerprint = host_key(0)
    return [Hypervisor.objects.create(name=name, address="127.0.0.1", host_key=line,
                                      host_key_fingerprint=fingerprint) for name in names]


def pinned_result(sim):
    """The inventory as the transport returns it for a host whose key is pinned."""
    return dataclasses.replace(inventory_result(sim, 0), host_key_was_unknown=False)


def fleet(profiles, vfs=0):
    sims = [with_vfs(SimHost(f"w{i}-{p}", p, index=i, vf_delay=0), vfs) for i, p in enumerate(profiles)]
    return register([s.name for s in sims]), sims


def record(hosts, sims):
    items = [Item(host.pk, pinned_result(sim), host.host_key) for host, sim in zip(hosts, sims, strict=True)]
    return record_results(items)


def counted(hosts, sims):
    with CaptureQueriesContext(connection) as queries:
        outcomes = record(hosts, sims)
    assert [o.kind for o in outcomes] == ["ok"] * len(hosts), outcomes
    return queries


def statements(queries) -> int:
    """Queries the recording sends; the SAVEPOINT pair is the test's own transaction around it (in
    production the chunk's transaction is the outermost one)."""
    return sum(1 for q in queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT")))


def writes_to(queries, table):
    return [q["sql"] for q in queries if q["sql"].startswith(("UPDATE", "INSERT")) and f'"{table}"' in q["sql"]]


@pytest.mark.django_db
def test_queries_per_chunk_do_not_grow_with_nics_vfs_or_hosts():
    small_hosts, small_sims = fleet(["dl360g9", "dl360g9"], vfs=1)
    big_hosts, big_sims = fleet(["x710", "cx5", "dl360g9", "x710", "epyc", "cx5"], vfs=16)
    assert sum(len(_run(s, "inventory", {})["nics"]) for s in big_sims) > 60  # PFs and VF netdevs

    first_small, first_big = counted(small_hosts, small_sims), counted(big_hosts, big_sims)
    assert VirtualFunction.objects.filter(nic__host__in=big_hosts).count() > 100
    assert statements(first_small) <= FIRST_PER_HOST * len(small_hosts) + NETWORKS_FIRST
    repeat_small, repeat_big = counted(small_hosts, small_sims), counted(big_hosts, big_sims)
    assert len(repeat_small) <= REPEAT_PER_CHUNK
    assert len(repeat_big) == len(repeat_small)
    if connection.vendor == "postgresql":
        assert len(first_big) == len(first_small)
    else:  # Django splits an INSERT at SQLite's 999-variable limit (here about 99 VF rows)
        assert len(first_big) <= len(first_small) + len(writes_to(first_big, "hosts_virtualfunction")) - 1


@pytest.mark.django_db
def test_a_repeat_discovery_that_finds_nothing_new_writes_only_the_host_rows():
    hosts, sims = fleet(["x710", "dl360g9", "cx5"], vfs=4)
    record(hosts, sims)
    events = AuditEvent.objects.count()
    queries = counted(hosts, sims)
    assert not writes_to(queries, "hosts_nic") and not writes_to(queries, "hosts_virtualfunction")
    assert not writes_to(queries, "audit_auditevent") and AuditEvent.objects.count() == events
    assert len(writes_to(queries, "hosts_hypervisor")) == 1  # the discovery times, one statement
    for host in Hypervisor.objects.filter(pk__in=[h.pk for h in hosts]):
        assert host.last_discovery_at > host.created_at and host.status == Hypervisor.Status.REACHABLE


@pytest.mark.django_db
def test_only_the_nic_that_changed_is_written_and_figures_follow():
    [host], [sim] = fleet(["dl360g9"])
    record([host], [sim])
    before = {n.pci_address: n.last_seen_at for n in Nic.objects.filter(host=host)}
    host.refresh_from_db()
    assert (host.sriov_nics, host.vfs_configured, host.vfs_capacity) == (4, 0, 28)

    _run(sim, "set_vfs", {"pf": "eno50", "pci_address": "0000:04:00.1", "count": 3, "persist": True})
    queries = counted([host], [sim])
    assert len(writes_to(queries, "hosts_nic")) == 1
    after = {n.pci_address: n.last_seen_at for n in Nic.objects.filter(host=host)}
    assert after.pop("0000:04:00.1") > before.pop("0000:04:00.1")
    assert after == before  # the other seven NIC rows were not rewritten
    host.refresh_from_db()
    assert (host.sriov_nics, host.vfs_configured, host.vfs_capacity) == (4, 3, 28)
    eno50 = Nic.objects.get(host=host, name="eno50")
    assert [vf.netdev for vf in eno50.vfs.order_by("index")] == ["eno50v0", "eno50v1", "eno50v2"]
    assert eno50.seen_at == host.facts_refreshed_at  # present: seen by the host's last discovery
    [changed] = AuditEvent.objects.filter(host_id=host.pk, action="host.state_changed")
    assert changed.data["after"]["sriov_numvfs"] == {"eno50": 3}


@pytest.mark.django_db
def test_a_nic_that_goes_away_is_marked_gone_with_the_time_it_was_last_seen():
    [host], [sim] = fleet(["dl360g9"])
    record([host], [sim])
    host.refresh_from_db()
    last_good = host.facts_refreshed_at
    result = pinned_result(sim)
    result.result["nics"] = [n for n in result.result["nics"] if n["name"] != "eno52"]
    record_results([Item(host.pk, result, host.host_key)])
    eno52 = Nic.objects.get(host=host, name="eno52")
    assert not eno52.present and eno52.gone_at and eno52.last_seen_at == last_good
    assert eno52.seen_at == last_good
    [gone] = AuditEvent.objects.filter(host_id=host.pk, action="nic.gone")
    assert gone.data["last_seen_at"] == last_good.isoformat()
    host.refresh_from_db()
    assert host.sriov_nics == 3 and host.vfs_capacity == 21


@pytest.mark.django_db
def test_one_hosts_bad_data_does_not_lose_the_others():
    hosts, sims = fleet(["dl360g9", "x710"])
    bad = pinned_result(sims[0])
    bad.result["nics"] = [{"pci_address": "0000:01:00.0", "vfs": 5}]  # VFs that are not a list
    outcomes = record_results([Item(hosts[0].pk, bad, hosts[0].host_key),
                               Item(hosts[1].pk, pinned_result(sims[1]), hosts[1].host_key)])
    assert [o.kind for o in outcomes] == ["error", "ok"]
    assert not Nic.objects.filter(host=hosts[0]).exists()
    assert Nic.objects.filter(host=hosts[1]).exists()
    assert Hypervisor.objects.get(pk=hosts[1].pk).status == Hypervisor.Status.REACHABLE


@pytest.mark.django_db
def test_a_result_made_with_a_key_that_was_replaced_meanwhile_is_discarded():
    [host], [sim] = fleet(["x710"])
    result = pinned_result(sim)
    Hypervisor.objects.filter(pk=host.pk).update(host_key=host_key(1)[0], host_key_accepted_at=timezone.now())
    [outcome] = record_results([Item(host.pk, result, host.host_key)])
    assert outcome.kind == "superseded"
    host.refresh_from_db()
    assert host.last_discovery_at is None and not host.nics.exists()


@pytest.mark.django_db
def test_nics_saved_or_deleted_one_by_one_keep_the_host_figures():
    [host] = register(["figures"])
    nic = Nic.objects.create(host=host, name="eno49", pci_address="0000:04:00.0", sriov_totalvfs=7,
                             sriov_numvfs=2)
    Nic.objects.create(host=host, name="eno1", pci_address="0000:02:00.0")  # no SR-IOV
    host.refresh_from_db()
    assert (host.sriov_nics, host.vfs_configured, host.vfs_capacity) == (1, 2, 7)
    nic.sriov_numvfs = 5
    nic.save()
    host.refresh_from_db()
    assert host.vfs_configured == 5
    nic.delete()
    host.refresh_from_db()
    assert (host.sriov_nics, host.vfs_configured, host.vfs_capacity) == (0, 0, 0)
    host.delete()  # its NICs go with it
    assert not Nic.objects.exists()
