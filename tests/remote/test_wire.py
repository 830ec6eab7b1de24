"""The agent on the wire (compressed, sha256-checked before it runs), the preferred ciphers and key
exchange, and results handed over as they arrive (remote.run_many_batches)."""

import asyncio
import logging
import os
import shutil
import subprocess

import asyncssh
import pytest

from remote import HostTarget, protocol, run_agent_sync, run_many_batches
from simfleet import SimFleet
from tests.agent.conftest import PYTHON36
from tests.conftest import require_or_skip
from tests.remote import stub_agents

pytestmark = pytest.mark.timeout(180)

REQUEST = {"op": "inventory", "args": {}, "request_id": "wire-1"}


def tampered(payload: bytes) -> bytes:
    """The same compressed agent under a header whose sha256 is another one."""
    header, _, rest = payload.partition(b"\n")
    length, digest = header.split(b":")
    other = bytes(reversed(digest))
    return length + b":" + other + b"\n" + rest


@pytest.mark.parametrize("version", ["current", "3.6"])
def test_bootstrap_runs_the_compressed_agent_and_refuses_a_sha256_mismatch(version, tmp_path):
    python = shutil.which("python3")
    if version == "3.6":
        require_or_skip(os.path.exists(PYTHON36), f"Python 3.6 not found at {PYTHON36} (set PYTHON36)")
        python = PYTHON36
    source = protocol.agent_source()
    payload = protocol.encode_payload(source, REQUEST)
    assert len(payload) < len(source) / 2  # the agent travels compressed
    ok = subprocess.run([python, "-c", protocol.BOOTSTRAP, "--"], input=payload, capture_output=True, timeout=60)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert b'"ok": true' in ok.stdout and b'"request_id": "wire-1"' in ok.stdout

    marker = tmp_path / "ran"
    agent = stub_agents.stub(f"open({str(marker)!r}, 'w').write('x')\nreturn 0")
    payload = tampered(protocol.encode_payload(agent, REQUEST))
    refused = subprocess.run([python, "-c", protocol.BOOTSTRAP], input=payload, capture_output=True, timeout=60)
    assert refused.returncode == 1 and refused.stdout == b""
    assert protocol.SHA256_MISMATCH.encode() in refused.stderr
    assert not marker.exists()  # nothing of the mismatched agent ran


def test_decode_payload_checks_what_it_inflates():
    source = protocol.agent_source()
    payload = protocol.encode_payload(source, REQUEST)
    assert protocol.decode_payload(payload) == (source, b'{"args": {}, "op": "inventory", "request_id": "wire-1"}')
    for bad in (tampered(payload), b"12\n" + payload, b"5:abc\nnot zlib", payload[: len(payload) // 2]):
        with pytest.raises(ValueError):
            protocol.decode_payload(bad)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    specs = [{"profile": "dl360g9", "name": name} for name in ("fast-1", "fast-2", "slow", "tamper")]
    sim = SimFleet(tmp_path_factory.mktemp("wire"), hosts=specs, base_port=0, vf_delay=0.05).start()
    yield sim
    sim.stop()


def target(fleet, name, **overrides) -> HostTarget:
    host = fleet[name]
    values = dict(name=name, address=host.address, port=host.port, username=host.username,
                  private_key=fleet.client_private_key_path.read_text(), known_host_key=host.original_host_public_key,
                  connect_timeout=10.0, op_timeout=60.0)
    return HostTarget(**{**values, **overrides})


def test_simfleet_refuses_an_agent_whose_sha256_does_not_match(fleet):
    host = fleet["tamper"]

    async def send():
        async with asyncssh.connect(host.address, host.port, username="root",
                                    client_keys=[fleet.client_key()], known_hosts=None) as conn:
            payload = tampered(protocol.encode_payload(protocol.agent_source(), REQUEST))
            return await conn.run(protocol.BOOTSTRAP_COMMAND, input=payload, encoding=None)

    result = asyncio.run(send())
    assert result.exit_status == 1 and result.stdout == b""
    assert protocol.SHA256_MISMATCH.encode() in result.stderr
    assert host.commands[-1]["op"] is None  # the request was never handed to an agent


def test_results_arrive_in_batches_before_the_slowest_host_answers(fleet):
    fleet["slow"].inject("latency", seconds=6)
    try:
        jobs = [(target(fleet, name), "inventory", {}) for name in ("slow", "fast-1", "fast-2")]
        batches = list(run_many_batches(jobs, concurrency=3, batch_size=10, max_wait=0.2))
    finally:
        fleet["slow"].clear_faults()
    indexes = [[index for index, _result in batch] for batch in batches]
    assert sorted(i for batch in indexes for i in batch) == [0, 1, 2]  # every job exactly once
    assert 0 not in indexes[0] and indexes[-1] == [0]  # the fast hosts were handed over first
    assert all(result.kind == "ok" for batch in batches for _i, result in batch)


def test_closing_the_batches_early_cancels_the_rest(fleet):
    fleet["slow"].inject("latency", seconds=30)
    try:
        jobs = [(target(fleet, name), "inventory", {}) for name in ("fast-1", "slow")]
        stream = run_many_batches(jobs, concurrency=2, batch_size=10, max_wait=0.1)
        first = next(stream)
        stream.close()  # returns without waiting 30 s for the slow host
    finally:
        fleet["slow"].clear_faults()
    assert [index for index, _result in first] == [0]


def test_fast_crypto_is_preferred_and_can_be_turned_off(fleet, caplog):
    asyncssh.set_debug_level(2)
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    try:
        fast = run_agent_sync(target(fleet, "fast-1"), "inventory")
        fast_log, _ = caplog.text, caplog.clear()
        default = run_agent_sync(target(fleet, "fast-1", fast_crypto=False), "inventory")
        default_log = caplog.text
    finally:
        asyncssh.set_debug_level(1)
    assert fast.kind == "ok" and default.kind == "ok"
    assert fast.details["cipher"] == "aes128-gcm@openssh.com"
    assert default.details["cipher"] == "chacha20-poly1305@openssh.com"
    assert "Key exchange alg: curve25519-sha256" in fast_log
    assert "Key exchange alg: curve25519-sha256" not in default_log


def test_a_host_that_offers_neither_still_connects(fleet, tmp_path):
    """A server limited to aes256-ctr and ECDH P-256: the client falls back to what it offers."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = fleet.client_key()

    class Server(asyncssh.SSHServer):
        def begin_auth(self, username):
            return True

        def public_key_auth_supported(self):
            return True

        def validate_public_key(self, username, key):
            return key.public_data == client_key.public_data

    async def answer(process):
        await process.stdin.read()
        process.stdout.write(b'{"ok": true, "op": "inventory", "result": {}}')
        process.exit(0)

    async def scenario():
        server = await asyncssh.create_server(
            Server, "127.0.0.1", 0, server_host_keys=[host_key], process_factory=answer, encoding=None,
            encryption_algs=["aes256-ctr"], kex_algs=["ecdh-sha2-nistp256"], mac_algs=["hmac-sha2-256"],
        )
        port = server.sockets[0].getsockname()[1]
        try:
            line = host_key.export_public_key().decode().strip()
            return await asyncio.to_thread(
                run_agent_sync, target(fleet, "fast-1", port=port, known_host_key=line), "inventory"
            )
        finally:
            server.close()

    result = asyncio.run(scenario())
    assert result.kind == "ok", result.message
    assert result.details["cipher"] == "aes256-ctr"


def test_a_fan_out_logs_one_summary_line_not_one_per_host(fleet, caplog):
    caplog.set_level(logging.INFO, logger="remote")
    jobs = [(target(fleet, name), "inventory", {}) for name in ("fast-1", "fast-2", "tamper")]
    results = [result for batch in run_many_batches(jobs, concurrency=3) for _i, result in batch]
    assert [r.kind for r in results] == ["ok"] * 3
    lines = [r.getMessage() for r in caplog.records if r.name == "remote" and r.levelno >= logging.INFO]
    assert lines == ["remote: inventory on 3 hosts in " + lines[0].split(" in ", 1)[1]]
    assert lines[0].endswith(": 3 ok")
