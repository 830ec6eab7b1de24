"""Helpers for the changes tests: inventory rows for unit tests, simfleet hosts for integration.

The worker subprocess reads these from the environment (set before any worker starts), so the
SIGKILL test can use a short heartbeat and stale threshold.
"""

import os
import time

import pytest
from django.utils import timezone

os.environ.setdefault("HOSTRUN_HEARTBEAT_SECONDS", "0.5")
os.environ.setdefault("HOSTRUN_STALE_SECONDS", "4")
os.environ.setdefault("HOSTRUN_WAIT_RETRY_SECONDS", "0.5")

I350 = {"driver": "igb", "vendor_id": "8086", "device_id": "1521", "sriov_totalvfs": 7}


def make_credential(name="ops"):
    from hosts.models import Credential

    credential = Credential(name=name, username="root")
    credential.set_private_key("not-a-real-key", "ssh-ed25519 AAAA test", "SHA256:test")
    credential.save()
    return credential


def make_host(
    name,
    *,
    credential=None,
    nics=(),
    status="reachable",
    host_key="ssh-ed25519 AAAAC3 test",
    labels=(),
    refreshed=None,
    kernel="5.15.0-91-generic",
):
    """A discovered host with NICs: nics = [(name, pci, numvfs, {overrides}), ...]."""
    from hosts.models import Hypervisor, Label, Nic, VirtualFunction

    host = Hypervisor.objects.create(
        name=name,
        address="127.0.0.1",
        credential=credential,
        status=status,
        host_key=host_key,
        facts_refreshed_at=refreshed or timezone.now(),
        kernel=kernel,
    )
    for label in labels:
        host.labels.add(Label.objects.get_or_create(name=label)[0])
    for nic_name, pci, numvfs, *extra in nics:
        fields = dict(I350, **(extra[0] if extra else {}))
        guests = fields.pop("guests", {})
        nic = Nic.objects.create(host=host, name=nic_name, pci_address=pci, sriov_numvfs=numvfs, **fields)
        for index in range(numvfs or 0):
            VirtualFunction.objects.create(
                nic=nic,
                index=index,
                pci_address=f"0000:05:10.{index}",
                netdev=f"{nic_name}v{index}",
                guest=guests.get(index, ""),
            )
    return host


def change_data(host_ids=None, *, filter_text="", ops=None, **policy):
    targets = {}
    if host_ids:
        targets["host_ids"] = list(host_ids)
    if filter_text:
        targets["filter"] = filter_text
    data = {
        "title": "VFs for the rack",
        "reason": "guests need SR-IOV",
        "targets": targets,
        "operations": ops or [{"op": "set_vfs", "select": {"by": "name", "value": "eno49"}, "count": 4}],
        "parallelism": 1,
        "canary_count": 0,
        "max_failures": 1,
    }
    data.update(policy)
    return data


def wait_for(predicate, timeout=120, what="condition", interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def credential(db):
    return make_credential()
