"""A Redis server of the test's own (to stop, freeze and restart without touching the shared
one), and pointing this process's Celery producer at it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time

from tests.procs import spawn, unregister


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, directory, port: int | None = None):
        self.dir = directory
        self.port = port or free_port()
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.proc = spawn(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            unregister(self.proc.pid)
        self.proc = None

    def freeze(self) -> None:
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)


@contextlib.contextmanager
def producer_broker(url: str):
    """Publish from this process to `url` for the duration (Celery caches its producer pool)."""
    from console.celery import app

    def reset():
        if app._pool is not None:
            app._pool.force_close_all()
        app._pool = None
        app.amqp._producer_pool = None

    old = app.conf.broker_url, app.conf.broker_transport_options
    reset()
    app.conf.broker_url = url
    app.conf.broker_transport_options = {"socket_timeout": 2, "socket_connect_timeout": 2}
    try:
        yield app
    finally:
        reset()
        app.conf.broker_url, app.conf.broker_transport_options = old
