"""Processes a test run starts die with it, also when pytest itself is killed.

Every long-lived helper process (Celery worker, sshd test host, simfleet, the demo) is started with
`spawn()`: in a process group of its own, with a parent-death signal, and registered with one
reaper per test run. The reaper is a tiny process reading process-group ids from a pipe whose
other end only pytest holds; when the pipe closes — pytest exited, crashed or was SIGKILLed — it
kills every registered group. The parent-death signal covers the direct child even if the reaper
itself was killed; the reaper covers the grandchildren (Celery's pool, sshd's sessions).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1

REAPER = r"""
import os, signal, sys, time
groups = set()
for line in sys.stdin:
    line = line.strip()
    if line.startswith("-"):
        groups.discard(int(line[1:]))
    elif line:
        groups.add(int(line))
for sig in (signal.SIGTERM, signal.SIGKILL):
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except OSError:
            pass
    if sig == signal.SIGTERM:
        time.sleep(2)
"""

_reaper: subprocess.Popen | None = None


def _reaper_pipe():
    global _reaper
    if _reaper is None or _reaper.poll() is not None:
        _reaper = subprocess.Popen(
            [sys.executable, "-c", REAPER],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a kill of pytest's process group must not take it along
            close_fds=True,
        )
    return _reaper.stdin


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(argv, **kwargs) -> subprocess.Popen:
    """subprocess.Popen in a new session that dies with this test run."""
    kwargs["start_new_session"] = True
    kwargs.setdefault("preexec_fn", _die_with_parent)
    proc = subprocess.Popen(argv, **kwargs)
    register(proc.pid)
    return proc


def register(pgid: int) -> None:
    pipe = _reaper_pipe()
    pipe.write(f"{pgid}\n".encode())
    pipe.flush()


def unregister(pgid: int) -> None:
    if _reaper is not None and _reaper.poll() is None:
        try:
            _reaper.stdin.write(f"-{pgid}\n".encode())
            _reaper.stdin.flush()
        except OSError:
            pass


def stop_reaper() -> None:
    """At the end of the session: closing the pipe makes the reaper kill what is left."""
    global _reaper
    if _reaper is not None:
        try:
            _reaper.stdin.close()
            _reaper.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        _reaper = None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
