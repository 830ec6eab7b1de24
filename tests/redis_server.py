"""A throw-away redis-server the test owns, so it can kill, restart and freeze it.

Started on a free loopback port with no persistence (`--save '' --appendonly no`): a restart
loses every key, exactly what a broker restart without persistence does to queued messages.
Used by the broker-restart test and by the chaos suite (benchmarks/chaos/).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.procs import spawn, unregister


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, log_path: Path, port: int | None = None):
        self.port = port or free_port()
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20) -> RedisServer:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = spawn(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited early; see {self.log_path}")
            if self.ping():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server not answering on port {self.port}; see {self.log_path}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the server vanishes with every queued message (no persistence)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            unregister(self.proc.pid)

    def restart(self, down_seconds: float = 2.0) -> None:
        self.kill()
        time.sleep(down_seconds)
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: the port stays open but nothing answers (a hung broker)."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.thaw()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
                return
            unregister(self.proc.pid)


class publishing_to:  # noqa: N801 - used as a context manager, like contextlib's
    """Make this process's Celery app publish to another broker (the Redis a test owns), with the
    same transport options as a worker started on it; restore the run's broker at exit."""

    def __init__(self, url: str):
        self.url = url

    def _reset_pools(self, app):
        # Celery caches the pools of the broker it used first. They are kombu's global pools, keyed
        # by the connection parameters, so dropping the references (never closing the pools) makes
        # the app pick the pools of whichever broker is configured now.
        app._pool = None
        app.amqp._producer_pool = None

    def __enter__(self):
        from django.conf import settings

        from console.celery import app

        self.app = app
        self.saved = (app.conf.broker_url, app.conf.broker_write_url, app.conf.broker_read_url,
                      app.conf.broker_transport_options)
        self._reset_pools(app)
        # Celery resolves the read and write URLs from broker_url once: set all three.
        app.conf.broker_url = app.conf.broker_write_url = app.conf.broker_read_url = self.url
        app.conf.broker_transport_options = dict(settings.REDIS_BROKER_TRANSPORT_OPTIONS)
        return self

    def __exit__(self, *exc):
        self._reset_pools(self.app)
        (self.app.conf.broker_url, self.app.conf.broker_write_url, self.app.conf.broker_read_url,
         self.app.conf.broker_transport_options) = self.saved
