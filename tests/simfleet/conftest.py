"""Fixtures for simfleet tests: small fleets that are always stopped, and a plain asyncssh call.

The SSH path uses plain asyncssh + remote.protocol (not remote.client), as the real console does:
the constant bootstrap command, the agent source and the request on stdin.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import asyncssh
import pytest

from remote.protocol import agent_source, command_for, encode_payload
from simfleet import SimFleet

# SRIOV_AGENT_UNDER_TEST=<path>: send another agent (e.g. an older one) over SSH
AGENT = Path(os.environ["SRIOV_AGENT_UNDER_TEST"]).read_bytes() if os.environ.get("SRIOV_AGENT_UNDER_TEST") \
    else agent_source()


@pytest.fixture
def make_fleet(tmp_path):
    fleets = []

    def make(hosts=None, count=None, **kwargs):
        kwargs.setdefault("base_port", 0)
        kwargs.setdefault("reboot_delay", 0.2)
        kwargs.setdefault("down_time", 0.5)
        kwargs.setdefault("vf_delay", 0.2)
        fleet = SimFleet(tmp_path / f"fleet{len(fleets)}", hosts=hosts, count=count, **kwargs)
        fleets.append(fleet)
        return fleet.start()

    yield make
    for fleet in fleets:
        fleet.stop()
    # Nothing of ours may outlive the fixture (the agent worker threads exit once idle).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = [t.name for t in threading.enumerate() if t.name.startswith("simfleet")]
        if not alive:
            break
        time.sleep(0.05)
    assert not alive, alive


async def acall(fleet, host, op, args=None, *, user=None, command=None, known_hosts=None, timeout=30):
    """One agent call over SSH -> (exit_status, stdout bytes, stderr bytes)."""
    user = user or host.username
    request = {"op": op, "args": args or {}, "request_id": f"t-{op}"}
    async with asyncssh.connect(
        host.address,
        host.port,
        username=user,
        client_keys=[str(fleet.client_private_key_path)],
        known_hosts=known_hosts,
        connect_timeout=10,
    ) as conn:
        result = await asyncio.wait_for(
            conn.run(command or command_for(user), input=encode_payload(AGENT, request), encoding=None),
            timeout,
        )
        return result.exit_status, result.stdout, result.stderr


def call(fleet, host, op, args=None, **kwargs):
    return asyncio.run(acall(fleet, host, op, args, **kwargs))


def agent(fleet, host, op, args=None, **kwargs) -> dict:
    """A successful-or-not agent response document."""
    status, out, err = call(fleet, host, op, args, **kwargs)
    doc = json.loads(out)
    doc["_exit_status"] = status
    doc["_stderr"] = err
    return doc


def reachable(host) -> bool:
    return host.true_state()["reachable"]


def wait_rebooted(host, old_boot_id, timeout=20) -> None:
    assert host.wait_until(lambda s: s["reachable"] and s["boot_id"] != old_boot_id, timeout), (
        host.true_state()
    )
