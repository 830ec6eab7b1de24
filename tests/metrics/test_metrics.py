"""/metrics read back with prometheus_client's own text parser: fleet gauges from the database
(constant queries), discovery counters from every process (a real Celery worker included), and
the access rule (bearer token or allowed address)."""

import time

import pytest
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from audit.models import AuditEvent
from changes.models import ChangeRequest, HostRun, Rollout
from hosts.models import Hypervisor
from tests.changes.conftest import make_credential, make_host
from tests.conftest import register_sim_hosts


def scrape(client, **headers) -> dict:
    response = client.get(reverse("metrics"), **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _inventory():
    credential = make_credential()
    make_host("hv-a", credential=credential, nics=[("eno49", "0000:04:00.0", 3, {"guests": {0: "vm-1"}})])
    host_b = make_host("hv-b", credential=credential, nics=[("eno49", "0000:04:00.0", 2)])
    make_host("hv-c", credential=credential, status="unreachable")
    Hypervisor.objects.filter(name__in=["hv-a", "hv-b"]).update(iommu_active=True)
    Hypervisor.objects.filter(name="hv-b").update(drifted=True)
    return host_b


def test_fleet_gauges_match_the_database(client, operator):
    host_b = _inventory()
    change = ChangeRequest.objects.create(title="t", reason="r", requested_by=operator, state="running")
    ChangeRequest.objects.create(title="t2", reason="r", requested_by=operator, state="submitted")
    rollout = Rollout.objects.create(change=change, plan_hash="x", state="running")
    from changes.models import PlanItem

    item = PlanItem.objects.create(change=change, host=host_b, order=0, item_hash="h")
    HostRun.objects.create(rollout=rollout, host=host_b, plan_item=item, order=0, state="failed")
    samples = scrape(client)
    assert value(samples, "sriov_console_hosts", status="reachable") == 2
    assert value(samples, "sriov_console_hosts", status="unreachable") == 1
    assert value(samples, "sriov_console_hosts", status="host_key_mismatch") == 0  # every status is present
    assert ("sriov_console_hosts", (("status", "host_key_mismatch"),)) in samples
    assert value(samples, "sriov_console_hosts_iommu_ready") == 2
    assert value(samples, "sriov_console_hosts_drifted") == 1
    assert value(samples, "sriov_console_vfs_configured") == 5
    assert value(samples, "sriov_console_vfs_capacity") == 14
    assert value(samples, "sriov_console_vfs_in_use") == 1
    assert value(samples, "sriov_console_changes", state="running") == 1
    assert value(samples, "sriov_console_changes", state="submitted") == 1
    assert value(samples, "sriov_console_rollouts_running") == 1
    assert value(samples, "sriov_console_host_runs", state="failed") == 1
    assert value(samples, "sriov_console_audit_chain_length") == AuditEvent.objects.count()


def test_a_scrape_costs_the_same_queries_for_any_fleet(client, db, django_assert_max_num_queries):
    make_host("hv-1", nics=[("eno49", "0000:04:00.0", 2)])
    with django_assert_max_num_queries(9) as small:
        scrape(client)
    for n in range(25):
        make_host(f"hv-many-{n}", nics=[("eno49", "0000:04:00.0", 2), ("eno50", "0000:04:00.1", 1)])
    with django_assert_max_num_queries(len(small.captured_queries)):
        scrape(client)


def test_access_needs_a_token_or_an_allowed_address(client, settings, db):
    settings.METRICS_TOKEN = "metrics-scrape-token-ABCDEFGH"
    settings.METRICS_ALLOWED_NETWORKS = []
    assert client.get(reverse("metrics")).status_code == 403
    assert client.get(reverse("metrics"), HTTP_AUTHORIZATION="Bearer nope").status_code == 403
    scrape(client, HTTP_AUTHORIZATION="Bearer metrics-scrape-token-ABCDEFGH")
    import ipaddress

    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("10.20.0.0/16")]
    assert client.get(reverse("metrics"), REMOTE_ADDR="10.20.3.4").status_code == 200
    assert client.get(reverse("metrics"), REMOTE_ADDR="10.21.3.4").status_code == 403
    # A forged X-Forwarded-For is not believed without a trusted proxy (HTTPS=1).
    assert client.get(reverse("metrics"), REMOTE_ADDR="10.21.3.4",
                      HTTP_X_FORWARDED_FOR="10.20.3.4").status_code == 403


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    from simfleet import SimFleet

    sim = SimFleet(tmp_path_factory.mktemp("simfleet"), hosts=[{"profile": "dl360g9", "name": "m-ok"},
                   {"profile": "dl360g9", "name": "m-down"}], base_port=0, vf_delay=0.05).start()
    yield sim
    sim.stop()


def test_discovery_in_a_worker_process_counts_in_the_scrape(celery_worker, fleet, client):
    from console.celery import app
    from tests.conftest import ensure_role_groups

    ensure_role_groups()
    hosts = {h.name: h for h in register_sim_hosts(fleet, [fleet["m-ok"], fleet["m-down"]])}
    ok_host, down_host = hosts["m-ok"], hosts["m-down"]
    before = scrape(client)
    fleet["m-down"].inject("unreachable")
    try:
        for host in (ok_host, down_host):
            app.send_task("hosts.tasks.discover_host", args=[host.pk])
        deadline = time.monotonic() + 90
        while Hypervisor.objects.get(pk=down_host.pk).status != "unreachable" or \
                Hypervisor.objects.get(pk=ok_host.pk).last_discovery_at == ok_host.last_discovery_at:
            assert time.monotonic() < deadline, "the worker did not discover in time"
            time.sleep(0.2)
    finally:
        fleet["m-down"].clear_faults()
    after = scrape(client)
    name = "sriov_console_discovery_duration_seconds_count"
    # register_sim_hosts discovered both in this process first; the worker's two runs add to those.
    assert value(after, name, outcome="ok") - value(before, name, outcome="ok") == 1
    assert value(after, name, outcome="failed") - value(before, name, outcome="failed") == 1
    assert value(after, "sriov_console_ssh_errors_total", kind="unreachable") - \
        value(before, "sriov_console_ssh_errors_total", kind="unreachable") == 1
    assert value(after, "sriov_console_discovery_duration_seconds_sum", outcome="ok") > \
        value(before, "sriov_console_discovery_duration_seconds_sum", outcome="ok")


def test_the_grafana_dashboard_asks_only_for_exposed_metrics(client, db):
    import json
    import re

    from tests.conftest import ROOT

    dashboard = json.loads((ROOT / "docs" / "grafana" / "sriov-console.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    wanted = {re.sub(r"_(bucket|count|sum)$", "", m) for e in exprs for m in re.findall(r"sriov_console_\w+", e)}
    from metrics.instruments import DISCOVERY_DURATION, SSH_ERRORS

    DISCOVERY_DURATION.labels("ok").observe(0)  # so the families have samples in this run
    SSH_ERRORS.labels("timeout").inc(0)
    exposed = {re.sub(r"_(bucket|count|sum|created)$", "", name) for name, _labels in scrape(client)}
    assert wanted and wanted <= exposed, wanted - exposed
