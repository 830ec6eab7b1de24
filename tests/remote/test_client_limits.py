"""A compromised host must not be able to exhaust the controller's memory. The client
reads stdout and stderr with caps, closes the channel on overflow and reports malformed_response."""

import tracemalloc

import pytest

from remote import client, run_agent_sync
from tests.remote import stub_agents

pytestmark = [pytest.mark.needs_root, pytest.mark.timeout(120)]


def _peak_during(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = fn()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.mark.parametrize("source,stream,limit", [
    (stub_agents.FLOOD_STDOUT, "stdout", client.MAX_STDOUT_BYTES),
    (stub_agents.FLOOD_STDERR, "stderr", client.MAX_STDERR_BYTES),
])
def test_flood_is_malformed_and_memory_stays_bounded(sshd_host, source, stream, limit):
    res, peak = _peak_during(lambda: run_agent_sync(sshd_host.target(), "inventory", agent_source=source))
    assert res.kind == "malformed_response", res.message
    assert f"the host sent more than {limit} bytes on {stream}" in res.message
    assert res.details["overflow_stream"] == stream
    # The host printed 50 MiB; the controller held at most the cap plus buffers (not the flood).
    assert peak < 3 * client.MAX_STDOUT_BYTES + 8 * 1024 * 1024, peak
    assert len(res.stdout) <= client.MAX_STDOUT_BYTES and len(res.stderr) <= client.MAX_STDERR_BYTES


def test_deeply_nested_json_is_malformed_not_a_crash(sshd_host):
    res = run_agent_sync(sshd_host.target(), "inventory", agent_source=stub_agents.DEEP_JSON)
    assert res.kind == "malformed_response", res.message


def test_validate_response_survives_recursion():
    response, why = client.validate_response("[" * 100000 + "]" * 100000, {"op": "inventory"})
    assert response is None and why
