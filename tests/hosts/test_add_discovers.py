"""A host added on the Add-host form is discovered right away, as the form says: a real Celery
worker reaches the simulated host over real SSH without anyone pressing Refresh."""

import time

import pytest
from django.urls import reverse

from hosts.credentials import create_credential
from hosts.models import Hypervisor
from simfleet import SimFleet
from tests.conftest import ensure_role_groups

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sim = SimFleet(tmp_path_factory.mktemp("simfleet-add"), hosts=[{"profile": "dl360g9", "name": "added-kvm"}],
                   base_port=0).start()
    yield sim
    sim.stop()


def test_a_host_added_on_the_form_is_discovered_without_a_refresh(celery_worker, fleet, client):
    from tests.conftest import make_user

    ensure_role_groups()
    operator = make_user("otto", "operator")
    client.force_login(operator)
    sim = fleet.hosts[0]
    credential = create_credential("simfleet-add", fleet.client_private_key_path.read_text())

    response = client.post(reverse("hosts:add"), {
        "name": sim.name, "address": sim.address, "port": str(sim.port), "username": sim.username,
        "credential": str(credential.pk), "labels_text": "", "description": "",
    })
    assert response.status_code == 303, response.content[:500]
    host = Hypervisor.objects.get(name=sim.name)

    deadline = time.monotonic() + 60
    while host.last_discovery_at is None and time.monotonic() < deadline:
        time.sleep(0.2)
        host.refresh_from_db()
    assert host.last_discovery_at is not None, "the added host was never discovered"
    # Its first SSH host key is now known and waits for an administrator (no trust-on-first-use here).
    assert host.status == Hypervisor.Status.HOST_KEY_PENDING, (host.status, host.status_reason)
    assert host.pending_host_key_fingerprint
    assert host.discovery_requested_at is None  # the request is answered: the page stops polling
    # The form says what happens.
    form = client.get(reverse("hosts:add")).content.decode()
    assert "After adding, the host is discovered over SSH right away" in form
