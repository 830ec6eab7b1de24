"""Device attributes that block (sriov_numvfs behind the device lock) are accessed by the real
System in a child process with a bound: the agent answers, exits and closes its output while the
access stays pending. A FIFO plays the blocking attribute: opening it waits for the other side."""

# ruff: noqa: UP031  (printf-style kept on purpose: it mirrors the Python 3.6 agent and shell snippets)

import json
import os
import subprocess

import pytest

from tests import fakesys
from tests.fakesys import AGENT_PATH

NUMVFS = "sys/class/net/eno49/device/sriov_numvfs"

# The agent exec'd as the bootstrap does, with the real System and short bounds; reads of
# sriov_numvfs return a fixed count when READS is set (so that only the write blocks).
RUNNER = r"""
import json, sys
ns = {"__name__": "sriov_agent"}
exec(compile(open(sys.argv[1], "rb").read(), "sriov_agent.py", "exec"), ns)
reads = sys.argv[4]

class Bounded(ns["System"]):
    write_timeout = 0.5
    read_timeout = 0.5

    def read_sysfs(self, path, timeout):
        if reads and path.endswith("/sriov_numvfs"):
            return reads
        return ns["System"].read_sysfs(self, path, timeout)

status, out, err = ns["run_payload"](sys.argv[3].encode(), Bounded(sys.argv[2]))
sys.stdout.write(out)
sys.stderr.write(err)
"""


@pytest.fixture
def host(tmp_path):
    host = fakesys.dl360_gen9(tmp_path / "h")
    os.unlink(host.root / NUMVFS)
    os.mkfifo(host.root / NUMVFS)
    yield host
    release(host)


def release(host):
    """Give every access still blocked on the FIFO its other side, so that its child exits."""
    for flags in (os.O_RDONLY | os.O_NONBLOCK, os.O_WRONLY | os.O_NONBLOCK):
        try:
            os.close(os.open(host.root / NUMVFS, flags))
        except OSError:
            pass


def run(python, host, op, args, reads=""):
    request = json.dumps({"op": op, "args": args, "request_id": "t"})
    # A child that kept our stdout open would make this wait for its EOF (the timeout is a hang
    # detector, not a measurement).
    proc = subprocess.run([python, "-c", RUNNER, str(AGENT_PATH), str(host.root), request, reads],
                          env=host.env(), capture_output=True, text=True, timeout=60)
    return json.loads(proc.stdout)


def test_a_read_that_blocks_answers_device_busy(python, host):
    doc = run(python, host, "set_vfs", {"pf": "eno49", "pci_address": "0000:04:00.0", "count": 2})
    assert doc["error"]["code"] == "device_busy", doc
    assert "still pending" in doc["error"]["message"]
    assert not host.exists("etc/udev/rules.d/70-sriov-console.rules")
    inv = run(python, host, "inventory", {})["result"]
    eno49 = next(n for n in inv["nics"] if n["name"] == "eno49")
    assert eno49["device_busy"] is True and eno49["sriov_numvfs"] is None


def test_a_write_that_blocks_is_reported_pending_and_lands_later(python, host):
    doc = run(python, host, "set_vfs", {"pf": "eno49", "pci_address": "0000:04:00.0", "count": 2}, reads="0\n")
    error = doc["error"]
    assert error["code"] == "write_timeout", doc
    assert error["details"]["write_pending"] is True and error["details"]["pending_value"] == 2
    assert "cannot be cancelled" in error["message"]
    rolled_back = "rolled back /etc/udev/rules.d/70-sriov-console.rules"
    assert any(a.startswith(rolled_back) for a in error["details"]["actions"])
    # The agent has exited; its writer child still waits in the "kernel". Let it through:
    fd = os.open(host.root / NUMVFS, os.O_RDONLY)
    try:
        assert os.read(fd, 16) == b"2\n"
    finally:
        os.close(fd)
