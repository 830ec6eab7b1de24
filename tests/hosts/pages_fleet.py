"""A realistic inventory for the page tests: the real agent's `inventory` of simulated hosts.

Each host is a simfleet.SimHost (the demo's mixed profiles: DL360 Gen9 with I350/igb and BCM5719/tg3,
Dell X710/i40e, ConnectX-5, AMD EPYC, RHEL 8, a 2.6.32 kernel; `variety` gives some of them IOMMU
on, hand-made VFs held by a guest, or console-managed VFs). The exact agent bytes run in-process
against the simulated system (no SSH hop: the transport has its own tests), and the result is
recorded by the real hosts.discovery.apply_result — the same rows discovery writes.

Some hosts are then given the outcomes the fleet really shows: unreachable, a new host key pending,
a host-key mismatch, a drifted VF count.
"""

import json
from functools import cache

import asyncssh
from django.db import transaction

import remote
from hosts import discovery, drift
from hosts.intents import record_intent
from hosts.models import Hypervisor, Label
from remote import protocol
from simfleet.host import SimHost
from simfleet.profiles import mixed_profiles


@cache
def _agent():
    namespace = {"__name__": "sriov_agent"}
    exec(compile(protocol.agent_source(), "sriov_agent.py", "exec"), namespace)  # noqa: S102 - our agent
    return namespace


@cache
def host_key(n: int) -> tuple[str, str]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    line = key.export_public_key("openssh").decode().strip()
    return line, remote.fingerprint(line)


def inventory_result(sim: SimHost, key_index: int) -> remote.AgentResult:
    request = {"op": "inventory", "args": {}, "request_id": f"pages-{sim.name}"}
    status, out, err = _agent()["run_payload"](json.dumps(request).encode(), sim.system())
    response = json.loads(out)
    assert status == 0 and response["ok"], (out, err)
    line, fingerprint = host_key(key_index)
    return remote.AgentResult(
        host=sim.name, op="inventory", request=request, ok=True, kind="ok", message="",
        response=response, result=response["result"], stdout=out, stderr=err, exit_status=status,
        host_key=line, host_key_fingerprint=fingerprint, host_key_was_unknown=True,
    )


def failure(name: str, kind: str, message: str, key_index: int | None = None) -> remote.AgentResult:
    line, fingerprint = host_key(key_index) if key_index is not None else (None, None)
    return remote.AgentResult(
        host=name, op="inventory", request={"op": "inventory"}, ok=False, kind=kind, message=message,
        host_key=line, host_key_fingerprint=fingerprint,
        details={"presented_fingerprint": fingerprint} if fingerprint else {},
    )


# Outcomes by position in the fleet (i % 10), on top of a successful discovery.
UNREACHABLE, KEY_PENDING, KEY_MISMATCH, DRIFTED = 3, 4, 7, 5


def build_fleet(count: int, prefix: str = "hv") -> list[Hypervisor]:
    racks = [Label.objects.get_or_create(name=f"rack-{r}")[0] for r in ("a", "b")]
    prod = Label.objects.get_or_create(name="prod")[0]
    hosts = []
    for i, profile in enumerate(mixed_profiles(count)):
        name = f"{prefix}{i:03d}"
        host = Hypervisor.objects.create(name=name, address=f"127.0.{10 + i // 250}.{1 + i % 250}")
        host.labels.set([racks[i % 2]] + ([prod] if i % 3 == 0 else []))
        if i % 10 == KEY_PENDING:
            # Never accepted: the first key seen waits for an administrator.
            discovery.apply_result(host.pk, failure(name, "new_host_key", "host key not trusted yet", 1))
            hosts.append(host)
            continue
        sim = SimHost(name, profile, index=i, variety=True, vf_delay=0)
        discovery.apply_result(host.pk, inventory_result(sim, 0))
        if i % 10 == UNREACHABLE:
            discovery.apply_result(host.pk, failure(name, "unreachable", "[Errno 111] Connection refused"))
        elif i % 10 == KEY_MISMATCH:
            discovery.apply_result(host.pk, failure(name, "host_key_mismatch", "host key changed", 2),
                                   target_key=host_key(0)[0])
        elif i % 10 == DRIFTED:
            with transaction.atomic():
                locked = Hypervisor.objects.select_for_update().prefetch_related("nics").get(pk=host.pk)
                nic = min((n for n in locked.nics.all() if n.sriov_totalvfs), key=lambda n: n.pci_address)
                more = (nic.sriov_numvfs or 0) + 2  # the console applied more than is there
                record_intent(locked.pk, "set_vfs", nic.pci_address, more, f"{more} VFs on {nic.name}")
                drift.update_drift([locked])
        hosts.append(host)
    return hosts
