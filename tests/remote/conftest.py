"""Fixtures for the SSH transport tests: the real OpenSSH sshd test host (tests/sshd_host.py)."""

import os

import pytest

from tests.sshd_host import SshdHost, requirements_missing

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _require_sshd_host():
    req = requirements_missing()
    if req.ok:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {req.reason()}")
    pytest.skip(req.reason())


@pytest.fixture(scope="session")
def sshd_host():
    """One namespaced sshd for the whole session; tests must not leave state behind on it."""
    _require_sshd_host()
    host = SshdHost().start()
    yield host
    host.cleanup()
    assert host.real_etc_unchanged(), "the sshd test host changed the real /etc or /boot"


@pytest.fixture
def fresh_sshd_host():
    """A private sshd test host for tests that change state (kernel_args, set_vfs)."""
    _require_sshd_host()
    host = SshdHost().start()
    yield host
    host.cleanup()
    assert host.real_etc_unchanged(), "the sshd test host changed the real /etc or /boot"
