"""Fleet-level behaviour: many hosts in one process, inventory file, keys, the CLI."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncssh
import pytest

from remote.protocol import command_for, encode_payload
from simfleet import SimFleet
from tests.procs import spawn

from .conftest import AGENT, agent

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_200_hosts_in_one_fleet(make_fleet):
    fleet = make_fleet(count=200)
    assert len(fleet.hosts) == 200
    rows = list(csv.DictReader(fleet.inventory_path.open()))
    assert [r["name"] for r in rows] == [h.name for h in fleet.hosts]
    assert len({(r["address"], r["port"]) for r in rows}) == 200
    assert {r["profile"] for r in rows} == {"dl360g9", "x710", "cx5", "epyc", "rhel8", "legacy"}
    key = str(fleet.client_private_key_path)

    async def one(row, sem):
        async with sem:
            known = asyncssh.import_known_hosts(
                "[{}]:{} {}\n".format(row["address"], row["port"], row["host_key"])
            )
            async with asyncssh.connect(
                row["address"],
                int(row["port"]),
                username=row["username"],
                client_keys=[key],
                known_hosts=known,
            ) as conn:
                request = {"op": "inventory", "args": {}, "request_id": row["name"]}
                result = await conn.run(
                    command_for(row["username"]), input=encode_payload(AGENT, request), encoding=None
                )
                return row["name"], json.loads(result.stdout)

    async def run():
        sem = asyncio.Semaphore(25)
        return await asyncio.gather(*(one(r, sem) for r in rows))

    for name, doc in asyncio.run(run()):
        assert doc["ok"] and doc["request_id"] == name and doc["result"]["hostname"] == name
    # the mixed fleet has variety: some hosts start with IOMMU on, VFs and guests
    states = [h.true_state() for h in fleet.hosts]
    assert any(s["iommu_active"] for s in states) and not all(s["iommu_active"] for s in states)
    assert any(s["guests"] for s in states)
    assert any(any(s["numvfs"].values()) for s in states)


@pytest.mark.timeout(60)
def test_host_keys_are_stable_across_restarts(tmp_path):
    with SimFleet(tmp_path, hosts=["dl360g9", "x710"], base_port=0) as fleet:
        keys = [h.host_public_key for h in fleet.hosts]
        client = fleet.client_public_key
    with SimFleet(tmp_path, hosts=["dl360g9", "x710"], base_port=0) as fleet:
        assert [h.host_public_key for h in fleet.hosts] == keys
        assert fleet.client_public_key == client
        assert keys[0] != keys[1]


@pytest.mark.timeout(60)
def test_one_loopback_address_per_host(make_fleet):
    fleet = make_fleet(
        hosts=["dl360g9", "cx5"], address_mode="addresses", base_port=0, first_address="127.101.0.1"
    )
    assert [h.address for h in fleet.hosts] == ["127.101.0.1", "127.101.0.2"]
    for host in fleet.hosts:
        assert agent(fleet, host, "inventory")["result"]["hostname"] == host.name


@pytest.mark.timeout(90)
def test_cli_serve_state_fault(tmp_path):
    state_dir = tmp_path / "sim"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = spawn(
        [
            sys.executable,
            "-m",
            "simfleet",
            "serve",
            "--count",
            "3",
            "--state-dir",
            str(state_dir),
            "--base-port",
            "0",
            "--down-time",
            "0.5",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (state_dir / "fleet.json").exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        rows = list(csv.DictReader((state_dir / "inventory.csv").open()))
        assert list(rows[0]) == ["name", "address", "port", "username", "profile", "host_key"]
        assert (state_dir / "client_key").exists() and (state_dir / "client_key.pub").exists()
        name = rows[0]["name"]

        def cli(*args):
            out = subprocess.run(
                [sys.executable, "-m", "simfleet", *args, "--state-dir", str(state_dir)],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)

        state = cli("state", name)
        assert state["name"] == name and state["reachable"] and state["faults"] == {}
        assert cli("fault", name, "latency", "--param", "seconds=2")["faults"] == {
            "latency": {"seconds": 2.0}
        }
        assert cli("fault", name, "all", "--clear")["faults"] == {}
        assert cli("fault", name, "unreachable")["faults"] == {"unreachable": {}}
        assert cli("state", name)["reachable"] is False
        assert len(cli("list")) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert proc.returncode == 0
    assert not (state_dir / "fleet.json").exists()
