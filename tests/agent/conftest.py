"""Fixtures for the agent tests: the agent loaded like the bootstrap loads it, interpreters, CLI runner."""

# ruff: noqa: UP031  (printf-style kept on purpose: it mirrors the Python 3.6 agent and shell snippets)

import json
import os
import subprocess
import sys
import types

import pytest

from tests.conftest import require_or_skip
from tests.fakesys import AGENT_PATH as AGENT

PYTHON36 = os.environ.get("PYTHON36", "/root/.pyenv/versions/3.6.15/bin/python3")


def load_agent():
    """Exec the agent source in a fresh namespace, exactly as remote.protocol.BOOTSTRAP does."""
    namespace = {"__name__": "sriov_agent"}
    exec(compile(AGENT.read_bytes(), "sriov_agent.py", "exec"), namespace)
    return types.SimpleNamespace(**namespace)


@pytest.fixture(scope="session")
def agent():
    return load_agent()


def _interpreter(which):
    if which == "current":
        return sys.executable
    require_or_skip(os.path.exists(PYTHON36),
                    "Python 3.6 not found at %s (set PYTHON36): the agent must also run on 3.6" % PYTHON36)
    return PYTHON36


@pytest.fixture(params=["current", "py36"])
def python(request):
    return _interpreter(request.param)


class Cli:
    def __init__(self, python, host):
        self.python = python
        self.host = host

    def __call__(self, operation, args=None, raw=None, expect=None):
        argv = [self.python, str(AGENT), "--root", str(self.host.root), operation]
        if raw is not None:
            argv.append(raw)
        elif args is not None:
            argv.append(json.dumps(args))
        proc = subprocess.run(argv, env=self.host.env(), capture_output=True, text=True, timeout=60)
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError("not one JSON document: %r (stderr %r)" % (
                proc.stdout, proc.stderr)) from None
        doc["_exit"] = proc.returncode
        doc["_stderr"] = proc.stderr
        if expect is not None:
            code = doc.get("error", {}).get("code") if not doc["ok"] else "ok"
            assert code == expect, json.dumps(doc, indent=1)
        return doc


@pytest.fixture
def cli_factory(python):
    return lambda host: Cli(python, host)
