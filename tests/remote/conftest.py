"""Fixtures for the SSH transport tests: the real OpenSSH sshd test host (tests/sshd_host.py)."""

import os
import shutil

import pytest

from tests.sshd_host import SshdHost, requirements_missing

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _skip_or_fail(reason: str):
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sudo_installed():
    if not shutil.which("sudo"):
        _skip_or_fail("sudo is not installed (apt-get install sudo) - needed for the sudo -n tests")


def _require_sshd_host():
    req = requirements_missing()
    if not req.ok:
        _skip_or_fail(req.reason())


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
