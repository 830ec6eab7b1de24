"""The real agent over a real OpenSSH sshd (tests/sshd_host.py): the production SSH path."""

import asyncssh
import pytest

from remote import fingerprint, protocol, run_agent_sync, run_many_sync
from tests.remote import stub_agents

pytestmark = [pytest.mark.needs_root, pytest.mark.timeout(120)]

IGB = ["eno49", "eno50", "eno51", "eno52"]
TG3 = ["eno1", "eno2", "eno3", "eno4"]


def _sessions(host):
    return host.log_text().count("Starting session:")


def test_inventory_over_real_sshd_returns_the_fake_nics(sshd_host):
    res = run_agent_sync(sshd_host.target(), "inventory", request_id="req-inv-1")
    assert res.kind == "ok", (res.message, res.stderr)
    assert res.ok and res.exit_status == 0
    assert res.response["request_id"] == "req-inv-1"
    assert res.agent_sha256 == protocol.agent_sha256()
    assert res.host_key_fingerprint == fingerprint(sshd_host.host_key_line)
    assert res.command == protocol.BOOTSTRAP_COMMAND
    inv = res.result
    assert inv["hostname"] == sshd_host.hostname
    assert inv["boot_id"] == sshd_host.boot_id
    assert "console=ttyS0 quiet" in inv["cmdline"]
    nics = {n["name"]: n for n in inv["nics"]}
    assert sorted(nics) == sorted(TG3 + IGB)  # lo has no device link
    for name in IGB:
        assert nics[name]["driver"] == "igb"
        assert nics[name]["sriov_capable"] is True
        assert (nics[name]["sriov_totalvfs"], nics[name]["sriov_numvfs"]) == (7, 0)
    for name in TG3:
        assert nics[name]["driver"] == "tg3"
        assert nics[name]["sriov_capable"] is False
    assert nics["eno49"]["pci_address"] == "0000:04:00.0"
    assert inv["grub"]["cmdline_linux_default"] == "quiet"
    assert inv["grub_tool"] == "update-grub"


def test_kernel_args_edit_the_overlaid_grub_and_leave_the_real_etc_alone(fresh_sshd_host):
    host = fresh_sshd_host
    res = run_agent_sync(host.target(), "kernel_args", {"add": ["intel_iommu=on", "iommu=pt"], "remove": []})
    assert res.kind == "ok", (res.message, res.stdout, res.stderr)
    assert res.result["reboot_required"] is True
    assert res.result["actions"]
    grub = host.overlay_file("/etc/default/grub").read_text()
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=on iommu=pt"' in grub
    assert 'GRUB_CMDLINE_LINUX="console=ttyS0"' in grub  # everything else byte for byte
    assert "GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`" in grub
    # the fake update-grub ran inside the namespace and rendered the new cmdline into /boot
    cfg = host.ns_path("/boot/grub/grub.cfg").read_text()
    assert "intel_iommu=on iommu=pt" in cfg
    # idempotent: a second run changes nothing
    again = run_agent_sync(host.target(), "kernel_args", {"add": ["intel_iommu=on", "iommu=pt"]})
    assert again.kind == "ok" and again.result["actions"] == []
    assert host.real_etc_unchanged()


def test_agent_error_keeps_its_code_and_changes_nothing(sshd_host):
    numvfs = sshd_host.sys_file("/sys/class/net/eno49/device/sriov_numvfs")
    before = numvfs.read_text()
    res = run_agent_sync(sshd_host.target(), "set_vfs",
                         {"pf": "eno49", "pci_address": "0000:04:00.0", "count": 8, "persist": False})
    assert res.kind == "agent_error" and not res.ok
    assert res.error_code == "exceeds_total"
    assert res.exit_status == 1
    assert res.response["error"]["code"] == "exceeds_total"
    assert numvfs.read_text() == before


def test_non_root_user_goes_through_sudo_n(sshd_host, sudo_installed):
    res = run_agent_sync(sshd_host.target(username=sshd_host.USER_SUDO), "inventory")
    assert res.kind == "ok", (res.message, res.stderr)
    assert res.command == protocol.SUDO_PREFIX + protocol.BOOTSTRAP_COMMAND
    assert len(res.result["nics"]) == 8


def test_the_ssh_connection_is_found_as_root_and_through_sudo(sshd_host, sudo_installed):
    # sudo resets the environment: the agent reads SSH_CONNECTION from its parents' instead
    for target in (sshd_host.target(), sshd_host.target(username=sshd_host.USER_SUDO)):
        res = run_agent_sync(target, "inventory")
        assert res.kind == "ok", (res.message, res.stderr)
        ssh = res.result["ssh_connection"]
        assert ssh["known"] is True and ssh["client"] == "127.0.0.1" and ssh["devices"] == ["lo"], ssh
        assert all(n["link"]["management"] is False for n in res.result["nics"])


def test_sudo_without_nopasswd_is_sudo_failed(sshd_host, sudo_installed):
    res = run_agent_sync(sshd_host.target(username=sshd_host.USER_NOPW), "inventory")
    assert res.kind == "sudo_failed", (res.message, res.stderr)
    assert "password is required" in res.stderr


def test_changed_host_key_is_refused_and_nothing_runs(sshd_host):
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    sessions = _sessions(sshd_host)
    res = run_agent_sync(sshd_host.target(known_host_key=other, accept_new_host_key=True), "inventory")
    assert res.kind == "host_key_mismatch" and not res.ok
    assert res.details["expected_fingerprint"] == fingerprint(other)
    assert res.details["presented_fingerprint"] == fingerprint(sshd_host.host_key_line)
    assert fingerprint(other) in res.message and res.host_key_fingerprint in res.message
    assert res.host_key.split()[:2] == sshd_host.host_key_line.split()[:2]
    assert res.exit_status is None and res.stdout == "" and res.response is None
    assert _sessions(sshd_host) == sessions


def test_unknown_host_key_is_reported_and_not_run_unless_trust_on_first_use(sshd_host):
    sessions = _sessions(sshd_host)
    res = run_agent_sync(sshd_host.target(known_host_key=None), "inventory")
    assert res.kind == "new_host_key" and not res.ok and not res.agent_ran
    assert res.host_key.split()[:2] == sshd_host.host_key_line.split()[:2]
    assert res.host_key_fingerprint == fingerprint(sshd_host.host_key_line)
    assert _sessions(sshd_host) == sessions
    tofu = run_agent_sync(sshd_host.target(known_host_key=None, accept_new_host_key=True), "inventory")
    assert tofu.kind == "ok" and tofu.host_key_was_unknown
    assert tofu.host_key_fingerprint == res.host_key_fingerprint


def test_wrong_client_key_is_auth_failed(sshd_host):
    stranger = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    res = run_agent_sync(sshd_host.target(private_key=stranger), "inventory")
    assert res.kind == "auth_failed"
    assert res.host_key_fingerprint == fingerprint(sshd_host.host_key_line)  # handshake got that far


def test_operation_timeout_closes_the_channel(sshd_host):
    res = run_agent_sync(sshd_host.target(op_timeout=1.0), "inventory", {"seconds": 4},
                         agent_source=stub_agents.SLEEPER)
    assert res.kind == "timeout"
    # It gave up at its own deadline: the agent (asked to sleep 4 s) never got to answer.
    assert res.message == "the agent did not finish within 1s" and res.stdout == "" and res.response is None
    assert "Close session" in sshd_host.log_text() or "Disconnected" in sshd_host.log_text()


@pytest.mark.parametrize("source", [stub_agents.GARBAGE, stub_agents.TWO_DOCS, stub_agents.WRONG_SHAPE])
def test_garbage_on_stdout_is_malformed_response(sshd_host, source):
    res = run_agent_sync(sshd_host.target(), "inventory", agent_source=source)
    assert res.kind == "malformed_response", res.message
    assert res.stdout  # kept for the transcript


def test_transcript_fields(sshd_host):
    res = run_agent_sync(sshd_host.target(), "inventory", {"x": [1, 2]}, agent_source=stub_agents.OK_ECHO)
    assert res.kind == "ok"
    assert res.result == {"args": {"x": [1, 2]}}
    assert res.stderr == "note on stderr\n"
    assert res.request["args"] == {"x": [1, 2]} and res.request["request_id"]
    assert res.agent_sha256 == protocol.agent_sha256(stub_agents.OK_ECHO)
    assert res.started_at <= res.finished_at and res.duration > 0
    d = res.to_dict()
    assert isinstance(d["started_at"], str) and d["stdout"] == res.stdout


def test_fan_out_over_real_sshd_keeps_order_and_isolates_failures(sshd_host):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    jobs = []
    for i in range(12):
        if i == 5:
            jobs.append((sshd_host.target(name="down", port=closed), "inventory", {}))
        else:
            jobs.append((sshd_host.target(name=f"h{i}"), "inventory", {}))
    results = run_many_sync(jobs, concurrency=4)
    assert [r.host for r in results] == [t.name for t, _, _ in jobs]
    assert results[5].kind == "unreachable"
    assert all(r.kind == "ok" for i, r in enumerate(results) if i != 5)
