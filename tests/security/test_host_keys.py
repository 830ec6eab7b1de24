"""Host-key trust over real SSH (simfleet): pending → accepted; rotated → mismatch → blocked →
accepted; trust on first use. Discovery is hosts.discovery.discover_hosts; trust decisions are
hosts.hostkeys (accept_host_key, assert_host_trusted) and the hosts:key pages."""

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

import remote
from audit.models import AuditEvent
from hosts.credentials import create_credential
from hosts.discovery import discover_hosts
from hosts.hostkeys import HostKeyError, HostKeyNotTrusted, accept_host_key, assert_host_trusted
from hosts.models import Hypervisor
from simfleet import SimFleet

Status = Hypervisor.Status


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    specs = [{"profile": "dl360g9", "name": name} for name in ("sec-pending", "sec-rotated", "sec-tofu")]
    sim = SimFleet(tmp_path_factory.mktemp("simfleet-sec"), hosts=specs, base_port=0, vf_delay=0.05).start()
    yield sim
    sim.stop()


@pytest.fixture(autouse=True)
def _clear_faults(fleet):
    yield
    for host in fleet.hosts:
        host.clear_faults()


@pytest.fixture
def credential(db, fleet):
    return create_credential("simfleet", fleet.client_private_key_path.read_text())


def register(sim_host, credential, *, pin: bool) -> Hypervisor:
    key = sim_host.host_public_key if pin else ""
    return Hypervisor.objects.create(
        name=sim_host.name, address=sim_host.address, port=sim_host.port, username=sim_host.username,
        credential=credential, host_key=" ".join(key.split()[:2]),
        host_key_fingerprint=remote.fingerprint(key) if key else "",
        host_key_accepted_at=timezone.now() if key else None,
    )


def discover(host) -> Hypervisor:
    discover_hosts([Hypervisor.objects.get(pk=host.pk)])
    host.refresh_from_db()
    return host


def actions(host) -> list[str]:
    return list(AuditEvent.objects.filter(host_id=host.pk).order_by("id").values_list("action", flat=True))


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_new_key_waits_for_an_admin(fleet, credential, admin_user, operator, viewer, settings):
    settings.HOST_KEY_TOFU = False
    sim = fleet["sec-pending"]
    fingerprint = remote.fingerprint(sim.host_public_key)
    host = discover(register(sim, credential, pin=False))

    assert host.status == Status.HOST_KEY_PENDING
    assert host.pending_host_key_fingerprint == fingerprint and not host.host_key
    assert host.facts_refreshed_at is None  # nothing ran on the host
    assert "host.key_first_seen" in actions(host)
    with pytest.raises(HostKeyNotTrusted, match="not yet trusted"):
        assert_host_trusted(host)

    # The page shows the pending fingerprint; only admins reach it, and the reason is required.
    admin = logged_in(admin_user)
    page = admin.get(reverse("hosts:key", args=[host.pk]))
    assert page.status_code == 200 and fingerprint in page.content.decode()
    accept_url = reverse("hosts:key_accept", args=[host.pk])
    for user in (operator, viewer):
        response = logged_in(user).post(accept_url, {"fingerprint": fingerprint, "reason": "x"})
        assert response.status_code == 403
    response = admin.post(accept_url, {"fingerprint": fingerprint, "reason": "   "})
    assert response.status_code == 400
    response = admin.post(accept_url, {"fingerprint": "SHA256:somethingelse", "reason": "checked"})
    assert response.status_code == 409 and "changed" in response.content.decode()
    host.refresh_from_db()
    assert not host.host_key and "host.key_accepted" not in actions(host)

    reason = "new rack, fingerprint read on iLO"
    response = admin.post(accept_url, {"fingerprint": fingerprint, "reason": reason})
    assert response.status_code == 303
    host.refresh_from_db()
    assert host.host_key_fingerprint == fingerprint and host.host_key_accepted_by == admin_user
    assert not host.pending_host_key
    event = AuditEvent.objects.get(action="host.key_accepted", host_id=host.pk)
    assert event.actor == admin_user
    assert event.data == {"old_fingerprint": "", "new_fingerprint": fingerprint, "was": "pending",
                          "reason": reason}
    assert_host_trusted(host)

    host = discover(host)
    assert host.status == Status.REACHABLE and host.facts_refreshed_at is not None
    assert host.nics.exists()


def test_a_changed_key_blocks_everything_until_an_admin_accepts_it(fleet, credential, admin_user, settings):
    settings.HOST_KEY_TOFU = True  # TOFU never overrides a pinned key
    sim = fleet["sec-rotated"]
    host = discover(register(sim, credential, pin=True))
    assert host.status == Status.REACHABLE
    pinned = host.host_key_fingerprint
    facts_at = host.facts_refreshed_at

    sim.inject("host_key_rotated")
    presented = remote.fingerprint(sim.host_public_key)
    assert presented != pinned
    host = discover(host)
    assert host.status == Status.HOST_KEY_MISMATCH
    assert host.host_key_fingerprint == pinned  # the pin is never replaced by discovery
    assert host.pending_host_key_fingerprint == presented
    assert host.facts_refreshed_at == facts_at  # nothing ran
    assert "host.key_mismatch" in actions(host)

    with pytest.raises(HostKeyNotTrusted) as blocked:
        assert_host_trusted(host)
    assert pinned in blocked.value.message and presented in blocked.value.message

    # Still blocked on the next attempt; the page shows both fingerprints.
    host = discover(host)
    assert host.status == Status.HOST_KEY_MISMATCH
    page = logged_in(admin_user).get(reverse("hosts:key", args=[host.pk])).content.decode()
    assert pinned in page and presented in page and "mismatch" in page

    with pytest.raises(HostKeyError, match="reason"):
        accept_host_key(host, admin_user, "")
    accept_host_key(host, admin_user, "host reinstalled, OPS-1234", fingerprint=presented)
    host.refresh_from_db()
    assert host.host_key_fingerprint == presented and host.status != Status.HOST_KEY_MISMATCH
    event = AuditEvent.objects.get(action="host.key_accepted", host_id=host.pk)
    assert event.data["old_fingerprint"] == pinned and event.data["new_fingerprint"] == presented
    assert event.data["was"] == "mismatch" and event.data["reason"] == "host reinstalled, OPS-1234"
    assert_host_trusted(host)

    host = discover(host)
    assert host.status == Status.REACHABLE and host.facts_refreshed_at > facts_at


def test_accepting_needs_the_administer_permission(fleet, credential, operator):
    host = register(fleet["sec-pending"], credential, pin=False)
    host.pending_host_key = "ssh-ed25519 AAAA"
    host.pending_host_key_fingerprint = "SHA256:x"
    host.save()
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        accept_host_key(host, operator, "because")


def test_trust_on_first_use_pins_and_audits(fleet, credential, settings):
    settings.HOST_KEY_TOFU = True
    sim = fleet["sec-tofu"]
    host = discover(register(sim, credential, pin=False))
    assert host.status == Status.REACHABLE
    assert host.host_key_fingerprint == remote.fingerprint(sim.host_public_key)
    assert host.host_key_accepted_by is None
    assert {"host.key_first_seen", "host.key_accepted"} <= set(actions(host))
    event = AuditEvent.objects.get(action="host.key_accepted", host_id=host.pk)
    assert event.actor_name in ("worker", "system")
    assert_host_trusted(host)
