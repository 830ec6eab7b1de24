"""Transport logic that needs no SSH server: response validation, diagnosis, secrets, fingerprints."""

import asyncio
import logging

import asyncssh
import pytest

from remote import KINDS, AgentResult, HostTarget, fingerprint, protocol, run_agent_sync, run_many_sync
from remote import client as rc

pytestmark = pytest.mark.timeout(60)

REQ = {"op": "inventory", "args": {}, "request_id": "r1"}


def _free_closed_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def key_text():
    return asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()


@pytest.mark.parametrize(
    "stdout, why",
    [
        ("", "printed nothing"),
        ("garbage", "not one JSON document"),
        ('{"ok": true, "op": "inventory", "result": {}}{"ok": true}', "not one JSON document"),
        ("[1, 2]", "not an object"),
        ('{"ok": "yes", "op": "inventory", "result": {}}', "boolean 'ok'"),
        ('{"ok": true, "op": "set_vfs", "result": {}}', "'op'"),
        ('{"ok": true, "op": "inventory", "request_id": "other", "result": {}}', "request_id"),
        ('{"ok": true, "op": "inventory", "result": []}', "'result' object"),
        ('{"ok": false, "op": "inventory", "error": "boom"}', "'error' object"),
        ('{"ok": false, "op": "inventory", "error": {"message": "x"}}', "'error' object"),
    ],
)
def test_malformed_responses_are_rejected(stdout, why):
    response, reason = rc.validate_response(stdout, REQ)
    assert response is None
    assert why in reason


def test_well_formed_responses_pass():
    text = '\n {"ok": true, "op": "inventory", "request_id": "r1", "result": {"a": 1}}\n'
    ok, _ = rc.validate_response(text, REQ)
    assert ok["result"] == {"a": 1}
    text = '{"ok": false, "op": "inventory", "error": {"code": "ebusy", "message": "m"}}'
    err, _ = rc.validate_response(text, REQ)
    assert err["error"]["code"] == "ebusy"


@pytest.mark.parametrize(
    "stderr, status, user, kind",
    [
        ("bash: line 1: python3: command not found\n", 127, "root", "no_python"),
        ("sh: 1: python3: not found\n", 127, "root", "no_python"),
        ("sudo: python3: command not found\n", 1, "ops", "no_python"),
        ("", 127, "root", "no_python"),
        ("sudo: a password is required\n", 1, "ops", "sudo_failed"),
        ("sudo: a terminal is required to read the password\n", 1, "ops", "sudo_failed"),
        ("ops is not in the sudoers file.  This incident will be reported.\n", 1, "ops", "sudo_failed"),
        ("Traceback (most recent call last): ...", 1, "root", None),
    ],
)
def test_failed_start_diagnosis(stderr, status, user, kind):
    got = rc.diagnose_failed_start(stderr, status, user)
    assert (got[0] if got else None) == kind


def test_command_is_constant_and_sudo_only_for_non_root():
    assert protocol.command_for("root") == protocol.BOOTSTRAP_COMMAND
    assert protocol.command_for("ops") == "sudo -n " + protocol.BOOTSTRAP_COMMAND


def test_fingerprint_matches_asyncssh():
    key = asyncssh.generate_private_key("ssh-ed25519")
    line = key.export_public_key().decode().strip()
    fp = fingerprint(line)
    assert fp.startswith("SHA256:")
    assert fp == key.get_fingerprint("sha256")
    assert fingerprint(line + " some-comment\n") == fp


def test_private_key_is_never_in_reprs_results_or_logs(key_text, caplog):
    caplog.set_level(logging.DEBUG)
    target = HostTarget(name="h", address="127.0.0.1", port=_free_closed_port(), private_key=key_text,
                        connect_timeout=3)
    assert "PRIVATE" not in repr(target)
    assert key_text not in repr(target)
    res = run_agent_sync(target, "inventory", agent_source=b"x")
    assert res.kind == "unreachable"
    secret_body = key_text.splitlines()[1]
    for text in (repr(res), str(res.to_dict()), caplog.text):
        assert secret_body not in text
        assert "PRIVATE KEY" not in text


def test_unusable_private_key_is_auth_failed_without_echoing_it():
    secret = ("-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LXNlY3JldC1zZWNyZXQ=\n"
              "-----END OPENSSH PRIVATE KEY-----\n")
    res = run_agent_sync(HostTarget(name="h", address="127.0.0.1", private_key=secret), "inventory",
                         agent_source=b"x")
    assert res.kind == "auth_failed" and not res.ok
    assert "c2VjcmV0" not in res.message and "c2VjcmV0" not in repr(res)
    assert res.agent_sha256 and res.started_at and res.finished_at


def test_unparseable_pinned_key_refuses(key_text):
    res = run_agent_sync(HostTarget(name="h", address="127.0.0.1", private_key=key_text,
                                    known_host_key="ssh-ed25519 not-base64"), "inventory", agent_source=b"x")
    assert res.kind == "host_key_mismatch"
    assert not res.agent_ran


def test_unreachable_kinds(key_text):
    refused = HostTarget(name="refused", address="127.0.0.1", port=_free_closed_port(), private_key=key_text)
    dns = HostTarget(name="dns", address="no-such-host.invalid", private_key=key_text, connect_timeout=5)
    results = run_many_sync([(refused, "inventory", {}), (dns, "inventory", None)], agent_source=b"x")
    assert [r.host for r in results] == ["refused", "dns"]
    assert [r.kind for r in results] == ["unreachable", "unreachable"]
    assert all(r.exit_status is None and r.host_key is None for r in results)


def test_connect_timeout_against_a_silent_listener(key_text):
    """A TCP listener that never speaks SSH: the connect timeout fires and is reported as timeout."""

    async def scenario():
        async def silent(reader, writer):
            await asyncio.sleep(30)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await rc.run_agent(
                HostTarget(name="silent", address="127.0.0.1", port=port, private_key=key_text,
                           connect_timeout=0.5),
                "inventory", agent_source=b"x")
        finally:
            server.close()

    res = asyncio.run(scenario())
    assert res.kind == "timeout"
    assert "connect" in res.message


def test_kinds_and_result_shape():
    assert set(KINDS) == {"ok", "agent_error", "new_host_key", "host_key_mismatch", "unreachable",
                          "auth_failed", "timeout", "malformed_response", "no_python", "sudo_failed"}
    fields = set(AgentResult.__dataclass_fields__)
    assert {"host", "op", "request", "ok", "kind", "message", "response", "result", "error_code", "stdout",
            "stderr", "exit_status", "duration", "agent_sha256", "host_key", "host_key_fingerprint",
            "started_at", "finished_at"} <= fields


def test_run_many_rejects_bad_concurrency():
    with pytest.raises(ValueError):
        run_many_sync([], concurrency=0)
