"""The least-privilege hypervisor user: the documented sudoers rule is the generated one, and sudo
really allows exactly the agent's bootstrap command and nothing else (checked with the real sudo
inside a private mount namespace, so the machine's /etc/sudoers is never touched)."""

import os
import shutil
import subprocess

import pytest

from console.management.commands.sudoers_rule import sudoers_rule
from remote.protocol import BOOTSTRAP, BOOTSTRAP_COMMAND, command_for
from tests.conftest import ROOT


def test_the_documented_rule_is_the_generated_one():
    docs = (ROOT / "docs" / "security.md").read_text()
    assert sudoers_rule() in docs, "docs/security.md shows a stale sudoers rule: run manage.py sudoers_rule"


def test_the_bootstrap_is_the_only_command_line():
    assert command_for("root") == BOOTSTRAP_COMMAND
    assert command_for("sriov-console") == "sudo -n " + BOOTSTRAP_COMMAND


def _sudo_allows(sudoers_file, argv) -> bool:
    script = 'mount --bind "$0" /etc/sudoers && exec sudo -l -U nobody "$@"'
    result = subprocess.run(["unshare", "-m", "sh", "-c", script, str(sudoers_file), *argv],
                            capture_output=True, text=True, timeout=30)
    return result.returncode == 0


def test_sudo_allows_exactly_the_agent(tmp_path):
    tools = all(shutil.which(tool) for tool in ("sudo", "visudo", "unshare"))
    if not (os.geteuid() == 0 and tools):
        pytest.skip("needs root, sudo, visudo and unshare")
    python = shutil.which("python3", path="/usr/bin") or "/usr/bin/python3"
    sudoers = tmp_path / "sudoers"
    sudoers.write_text(sudoers_rule("nobody", python) + "\n")
    sudoers.chmod(0o440)
    check = subprocess.run(["visudo", "-c", "-f", str(sudoers)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert _sudo_allows(sudoers, [python, "-c", BOOTSTRAP])
    assert not _sudo_allows(sudoers, [python, "-c", "import os; os.system('id')"])
    assert not _sudo_allows(sudoers, [python, "-c", BOOTSTRAP, "extra"])
    assert not _sudo_allows(sudoers, [python, "-c", BOOTSTRAP + ";import os"])
    assert not _sudo_allows(sudoers, ["/bin/sh", "-c", BOOTSTRAP])
