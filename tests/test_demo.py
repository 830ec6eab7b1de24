"""`manage.py demo` end to end: it starts web + worker + beat + simfleet on SQLite and the
filesystem broker, the printed credentials log in, the hosts get discovered, and Ctrl-C stops
every process it started."""

import http.cookiejar
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.procs import spawn

ROOT = Path(__file__).resolve().parent.parent
HOSTS = 3

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


class Demo:
    def __init__(self, var_dir: Path):
        self.port = free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DATABASE_NAME_OVERRIDE")
        }
        env.update(CONSOLE_VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1")
        self.output_path = var_dir / "demo-output.txt"
        self.output = open(self.output_path, "wb")  # noqa: SIM115
        self.proc = spawn(
            [
                sys.executable,
                "manage.py",
                "demo",
                "--hosts",
                str(HOSTS),
                "--port",
                str(self.port),
                "--sim-base-port",
                "0",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.output,
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.output_path.read_text(errors="replace")

    def wait_for_output(self, pattern: str, timeout: float = 180) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.text())
            if match:
                return match
            if self.proc.poll() is not None:
                raise AssertionError(f"demo exited ({self.proc.returncode}):\n{self.text()}")
            time.sleep(0.3)
        raise AssertionError(f"demo never printed {pattern!r}:\n{self.text()}")

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.output.close()


@pytest.fixture
def demo(tmp_path):
    running = Demo(tmp_path)
    yield running
    # Clean up whatever is left if the test failed half-way.
    pids = [int(p) for p in re.findall(r"started \w+\s+pid (\d+)", running.text())]
    running.kill()
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def login(port: int, username: str, password: str) -> urllib.request.OpenerDirector:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    base = f"http://127.0.0.1:{port}"
    page = opener.open(f"{base}/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token})
    request = urllib.request.Request(
        f"{base}/login/", data=body.encode(), headers={"Referer": f"{base}/login/"}
    )
    response = opener.open(request, timeout=10)
    assert "/login/" not in response.geturl(), "login failed"
    return opener


def test_demo_runs_and_stops_cleanly(demo, tmp_path):
    demo.wait_for_output(r"Press Ctrl-C to stop everything")
    text = demo.text()
    assert f"SR-IOV Console demo is running: http://127.0.0.1:{demo.port}/" in text
    assert "HOST_KEY_TOFU=1" in text
    passwords = dict(
        re.findall(r"^\s+(admin|operator|approver|auditor|viewer)\s+password: (\S+)", text, re.M)
    )
    assert set(passwords) == {"admin", "operator", "approver", "auditor", "viewer"}
    children = {name: int(pid) for name, pid in re.findall(r"started (\w+)\s+pid (\d+)", text)}
    assert set(children) == {"simfleet", "worker", "beat", "web"}

    # The first fleet discovery (queued by the demo, run by its worker over SSH) pins and fills in.
    db = tmp_path / "db.sqlite3"
    deadline = time.monotonic() + 120
    while True:
        with sqlite3.connect(db, timeout=30) as conn:
            rows = conn.execute("SELECT name, status FROM hosts_hypervisor").fetchall()
        if len(rows) == HOSTS and all(status == "reachable" for _name, status in rows):
            break
        assert time.monotonic() < deadline, f"hosts not discovered: {rows}\n{demo.text()}"
        time.sleep(0.5)

    opener = login(demo.port, "admin", passwords["admin"])
    page = opener.open(f"http://127.0.0.1:{demo.port}/hosts/", timeout=10).read().decode()
    for name, _status in rows:
        assert name in page

    os.kill(demo.proc.pid, signal.SIGINT)
    assert demo.proc.wait(timeout=90) == 0, demo.text()
    assert "demo stopped; everything it started has exited." in demo.text()
    for name, pid in children.items():
        assert not alive(pid), f"{name} (pid {pid}) still running"
        assert group_members(pid) == [], f"{name}'s process group still has members"
