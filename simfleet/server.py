"""The simulated fleet: one asyncssh listener per simulated hypervisor, the exact received agent
bytes run in worker threads against a `SimSystem`, reboots, faults and a control port.

Sync use (tests, scripts): the event loop runs in a background thread.

    fleet = SimFleet("var/simfleet", hosts=["dl360g9", "cx5"])   # or count=24
    fleet.start()
    host = fleet.hosts[0]; host.inject("latency", seconds=1); host.true_state()
    fleet.stop()

Async use: `await fleet.astart()` / `await fleet.astop()` on the caller's loop; then use
`await host.ainject(...)` / `await host.aclear_faults()` from that loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import csv
import hashlib
import io
import json
import logging
import os
import secrets
import threading
import time
import traceback
from collections import OrderedDict
from pathlib import Path

import asyncssh

from remote.protocol import BOOTSTRAP_COMMAND, SHA256_MISMATCH, SUDO_PREFIX, decode_payload

from .host import FAULTS, SimHost, SimSystem
from .profiles import PROFILES, mixed_profiles

logger = logging.getLogger("simfleet")

USERS = ("root", "admin")  # every host accepts the fleet's client key for these
_CODE_CACHE_SIZE = 16
_MAX_PAYLOAD = 16 * 1024 * 1024


class FleetHost(SimHost):
    """A SimHost reachable over SSH. Public: name, profile (Profile; .profile_name), address,
    port, username, host_public_key (OpenSSH line), inject(), clear_faults(), true_state(),
    reboot(), commands (deque of dicts), add_guest(), remove_guest(), wait_until()."""

    def __init__(
        self,
        fleet: SimFleet,
        name: str,
        profile: str,
        *,
        index: int,
        address: str,
        port: int,
        username: str,
        host_key: asyncssh.SSHKey,
        variety: bool,
    ):
        super().__init__(
            name,
            profile,
            index=index,
            username=username,
            vf_delay=fleet.vf_delay,
            variety=variety,
            seed=fleet.seed,
        )
        self.fleet = fleet
        self.address = address
        self.port = port
        self.reboot_delay = fleet.reboot_delay
        self.down_time = fleet.down_time
        self._host_key = host_key
        self._rotated_key: asyncssh.SSHKey | None = None
        self._acceptor = None
        self._acceptor_key = None
        self._conns: set = set()
        self._listen_lock: asyncio.Lock | None = None
        self._reboot_task: asyncio.Task | None = None
        self.reboot_hook = self._reboot_hook

    # -- identity -------------------------------------------------------------------------------

    @property
    def profile_name(self) -> str:
        return self.profile.name

    @property
    def host_public_key(self) -> str:
        """The OpenSSH public key line the host presents now (changes with host_key_rotated)."""
        key = self._current_key()
        return key.export_public_key("openssh").decode().strip()

    @property
    def original_host_public_key(self) -> str:
        return self._host_key.export_public_key("openssh").decode().strip()

    def _current_key(self) -> asyncssh.SSHKey:
        if "host_key_rotated" in self.faults and self._rotated_key is not None:
            return self._rotated_key
        return self._host_key

    # -- faults ---------------------------------------------------------------------------------

    def _set_fault(self, fault: str, params: dict) -> None:
        if fault not in FAULTS:
            raise ValueError("unknown fault {!r}; known: {}".format(fault, ", ".join(FAULTS)))
        with self.lock:
            if fault == "host_key_rotated":
                self._rotated_key = asyncssh.generate_private_key("ssh-ed25519")
            if fault == "latency":
                params = {"seconds": float(params.get("seconds", 1.0))}
            self.faults[fault] = dict(params)
            self.events.append(f"fault set: {fault} {params}")
            self._touch()

    def _clear(self, faults: tuple[str, ...]) -> None:
        with self.lock:
            for fault in faults or tuple(self.faults):
                if fault not in FAULTS:
                    raise ValueError(f"unknown fault {fault!r}")
                self.faults.pop(fault, None)
            self.events.append("faults cleared: %s" % (", ".join(faults) or "all"))
            self._touch()

    def inject(self, fault: str, **params) -> None:
        """Set a fault (see simfleet.host.FAULTS). From the fleet's own loop use ainject()."""
        self._set_fault(fault, params)
        self.fleet._call(self._sync_listener())

    def clear_faults(self, *faults: str) -> None:
        """Clear the named faults, or all of them."""
        self._clear(faults)
        self.fleet._call(self._sync_listener())

    async def ainject(self, fault: str, **params) -> None:
        self._set_fault(fault, params)
        await self._sync_listener()

    async def aclear_faults(self, *faults: str) -> None:
        self._clear(faults)
        await self._sync_listener()

    def reboot(self) -> None:
        """Reboot as if `systemctl reboot` ran on the host."""
        self.request_reboot("simfleet control")

    # -- listener and reboot (fleet loop only) --------------------------------------------------

    async def _sync_listener(self) -> None:
        if self._listen_lock is None:
            self._listen_lock = asyncio.Lock()
        async with self._listen_lock:
            with self.lock:
                want = self.state == "up" and "unreachable" not in self.faults and not self.fleet._stopping
                key = self._current_key()
            if self._acceptor is not None and not want:
                self._acceptor.close()
                self._acceptor = None
                for conn in list(self._conns):
                    conn.abort()
            if want and self._acceptor is not None and self._acceptor_key is not key:
                self._acceptor.update(server_host_keys=[key])
                self._acceptor_key = key
            if want and self._acceptor is None:
                self._acceptor = await asyncssh.create_server(
                    lambda: _HostServer(self),
                    self.address,
                    self.port,
                    server_host_keys=[key],
                    process_factory=self._handle,
                    encoding=None,
                    reuse_address=True,
                    login_timeout=30,
                    keepalive_interval=0,
                    allow_scp=False,
                    agent_forwarding=False,
                    x11_forwarding=False,
                    sftp_factory=None,
                )
                self._acceptor_key = key
                if not self.port:
                    self.port = self._acceptor.get_port()
            self.listening = self._acceptor is not None

    def _reboot_hook(self) -> None:
        loop = self.fleet._loop
        if loop is None or self.fleet._stopping:
            return
        loop.call_soon_threadsafe(self._start_reboot)

    def _start_reboot(self) -> None:
        if self._reboot_task is not None and not self._reboot_task.done():
            return
        self._reboot_task = asyncio.get_running_loop().create_task(self._reboot_flow())
        self.fleet._tasks.add(self._reboot_task)
        self._reboot_task.add_done_callback(self.fleet._tasks.discard)

    async def _reboot_flow(self) -> None:
        await asyncio.sleep(self.reboot_delay)
        self.shutdown()
        self.events.append("went down for reboot")
        await self._sync_listener()  # drops every connection; new ones are refused
        await asyncio.sleep(self.down_time)
        while "reboot_never_returns" in self.faults and not self.fleet._stopping:
            await asyncio.sleep(0.05)
        if self.fleet._stopping:
            return
        self.boot()
        await self._sync_listener()

    # -- one SSH exec request -------------------------------------------------------------------

    async def _handle(self, process: asyncssh.SSHServerProcess) -> None:
        fleet = self.fleet
        started = time.monotonic()
        command = process.command
        user = process.get_extra_info("username")
        record = {
            "time": time.time(),
            "user": user,
            "command": "other",
            "op": None,
            "request_id": None,
            "sha256": None,
            "exit_status": None,
            "faults": sorted(self.faults),
        }
        self.commands.append(record)
        try:
            latency = self.faults.get("latency")
            if latency:
                await asyncio.sleep(latency["seconds"])
            if command == BOOTSTRAP_COMMAND:
                sudo = False
            elif command == SUDO_PREFIX + BOOTSTRAP_COMMAND:
                sudo = True
            else:
                record["command"] = "rejected"
                record["exit_status"] = 127
                if command is None:
                    process.stderr.write(b"simfleet: interactive sessions are not allowed\n")
                else:
                    process.stderr.write(b"command not allowed\n")
                process.exit(127)
                return
            record["command"] = "sudo bootstrap" if sudo else "bootstrap"
            data = await self._read_stdin(process)
            if "hang" in self.faults:
                record["command"] += " (hung)"
                await self._until_closed(process)
                return
            if "no_python" in self.faults:
                record["exit_status"] = 127
                process.stderr.write(
                    b"sudo: python3: command not found\n"
                    if sudo
                    else b"bash: line 1: python3: command not found\n"
                )
                process.exit(127)
                return
            status, out, err = await self._run_bootstrap(data, record, privileged=(user == "root" or sudo))
            if "garbage_output" in self.faults:
                out = (
                    "\x1b[0;31m*** System restart required ***\x1b[0m\nLast login: Mon Jan  8 09:12:44 2024\n"
                    + out[: len(out) // 2]
                )
            record["exit_status"] = status
            record["duration"] = round(time.monotonic() - started, 4)
            if not process.is_closing():
                process.stdout.write(out.encode("utf-8", "surrogateescape"))
                if err:
                    process.stderr.write(err.encode("utf-8", "surrogateescape"))
                process.exit(status)
        except (asyncssh.Error, BrokenPipeError, ConnectionError, OSError):
            record["exit_status"] = record["exit_status"] or "connection lost"
        except asyncio.CancelledError:
            record["exit_status"] = "cancelled"
            raise
        finally:
            fleet.commands_total += 1

    async def _read_stdin(self, process) -> bytes:
        chunks = []
        size = 0
        while True:
            chunk = await process.stdin.read(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > _MAX_PAYLOAD:
                raise OSError("payload too large")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _until_closed(self, process) -> None:
        conn = process.get_extra_info("connection")
        owner = conn.get_owner() if conn is not None else None
        waiters = [asyncio.ensure_future(self.fleet._stop_event_async.wait())]
        if isinstance(owner, _HostServer):
            waiters.append(asyncio.ensure_future(owner.closed.wait()))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _run_bootstrap(self, data: bytes, record: dict, privileged: bool) -> tuple[int, str, str]:
        try:
            source, request = decode_payload(data)
        except ValueError as exc:
            if str(exc) == SHA256_MISMATCH:  # what the bootstrap's own check prints (sys.exit)
                return 1, "", f"{exc}\n"
            return (
                1,
                "",
                (
                    'Traceback (most recent call last):\n  File "<string>", line 1, in <module>\n'
                    f"ValueError: {exc}\n"
                ),
            )
        digest = hashlib.sha256(source).hexdigest()
        record["sha256"] = digest
        try:
            doc = json.loads(request)
            if isinstance(doc, dict):
                record["op"] = doc.get("op")
                record["request_id"] = doc.get("request_id")
        except ValueError:
            pass
        try:
            code = self.fleet._compile(digest, source)
        except SyntaxError:
            return 1, "", traceback.format_exc(limit=0)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.fleet._executor, self._run_agent, code, request, privileged, source)

    def _run_agent(self, code, request: bytes, privileged: bool, source: bytes | None = None) -> tuple[int, str, str]:
        self.acquire_run()
        try:
            namespace = {"__name__": "sriov_agent"}
            exec(code, namespace)  # noqa: S102 - the exact agent bytes the console sent, as the bootstrap does
            run_payload = namespace.get("run_payload")
            if run_payload is None:
                return 1, "", "KeyError: 'run_payload' (the agent has no run_payload)\n"
            system = SimSystem(self, privileged=privileged, stop_event=self.fleet._stop_event, agent_source=source)
            status, out, err = run_payload(request, system)
            return int(status), out or "", err or ""
        except BaseException:  # noqa: BLE001 - like an uncaught exception in python3 -c
            return 1, "", traceback.format_exc()
        finally:
            self.release_run()


class _HostServer(asyncssh.SSHServer):
    def __init__(self, host: FleetHost):
        self.host = host
        self.conn = None
        self.closed = asyncio.Event()

    def connection_made(self, conn) -> None:
        self.conn = conn
        self.host._conns.add(conn)

    def connection_lost(self, exc) -> None:
        self.host._conns.discard(self.conn)
        self.closed.set()

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if "auth_rejected" in self.host.faults or username not in USERS:
            return False
        return key.public_data == self.host.fleet._client_public_data


class SimFleet:
    """N simulated hypervisors over real SSH. See the module docstring."""

    def __init__(
        self,
        state_dir: str | os.PathLike,
        hosts: list | None = None,
        count: int | None = None,
        *,
        base_port: int = 2222,
        address_mode: str = "ports",
        bind_address: str = "127.0.0.1",
        first_address: str = "127.100.0.1",
        reboot_delay: float = 1.0,
        down_time: float = 2.0,
        vf_delay: float = 0.2,
        agent_workers: int = 8,
        users: tuple[str, ...] = ("root",),
        variety: bool | None = None,
        name_prefix: str = "hv",
        seed: str = "simfleet",
        control: bool = False,
    ):
        if (hosts is None) == (count is None):
            raise ValueError("give either hosts=[profile names or dicts] or count=N")
        if address_mode not in ("ports", "addresses"):
            raise ValueError("address_mode is 'ports' or 'addresses'")
        self.state_dir = Path(state_dir)
        self.base_port = base_port
        self.address_mode = address_mode
        self.bind_address = bind_address
        self.first_address = first_address
        self.reboot_delay = reboot_delay
        self.down_time = down_time
        self.vf_delay = vf_delay
        self.agent_workers = agent_workers
        self.users = tuple(users)
        self.seed = seed
        self.control = control
        if hosts is None:
            specs = [{"profile": p} for p in mixed_profiles(count)]
            default_variety = True if variety is None else variety
        else:
            specs = [h if isinstance(h, dict) else {"profile": h} for h in hosts]
            default_variety = bool(variety)
        width = max(3, len(str(len(specs))))
        self._specs = []
        for i, spec in enumerate(specs):
            spec = dict(spec)
            if spec.get("profile") not in PROFILES:
                raise ValueError(
                    "unknown profile {!r}; known: {}".format(spec.get("profile"), ", ".join(PROFILES))
                )
            spec.setdefault("name", f"{name_prefix}{i + 1:0{width}d}-{spec['profile']}")
            spec.setdefault("username", self.users[i % len(self.users)])
            spec.setdefault("variety", default_variety)
            self._specs.append(spec)
        self.hosts: list[FleetHost] = []
        self._by_name: dict[str, FleetHost] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_owned = False
        self._thread: threading.Thread | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._stopping = False
        self._stop_event = threading.Event()
        self._stop_event_async: asyncio.Event | None = None
        self._tasks: set = set()
        self._code_cache: OrderedDict = OrderedDict()
        self._code_lock = threading.Lock()
        self._control_server = None
        self.control_port: int | None = None
        self.control_token = secrets.token_hex(16)
        self.commands_total = 0
        self.started_seconds: float | None = None

    # -- lookup ---------------------------------------------------------------------------------

    def host(self, name: str) -> FleetHost:
        return self._by_name[name]

    def __getitem__(self, name: str) -> FleetHost:
        return self._by_name[name]

    def __len__(self) -> int:
        return len(self.hosts)

    @property
    def client_private_key_path(self) -> Path:
        return self.state_dir / "client_key"

    @property
    def client_public_key(self) -> str:
        return (self.state_dir / "client_key.pub").read_text().strip()

    @property
    def inventory_path(self) -> Path:
        return self.state_dir / "inventory.csv"

    def client_key(self) -> asyncssh.SSHKey:
        return asyncssh.read_private_key(str(self.client_private_key_path))

    # -- start / stop ---------------------------------------------------------------------------

    def start(self, timeout: float = 300.0) -> SimFleet:
        """Start in a background thread with its own event loop (for sync callers)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        loop = asyncio.new_event_loop()
        ready = concurrent.futures.Future()

        def run():
            asyncio.set_event_loop(loop)
            loop.call_soon(lambda: ready.set_result(None))
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="simfleet-loop", daemon=True)
        self._thread.start()
        ready.result(timeout)
        self._loop_owned = True
        try:
            asyncio.run_coroutine_threadsafe(self.astart(), loop).result(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is None:
            return
        loop = self._loop
        if loop is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self.astop(), loop).result(timeout)
            finally:
                loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> SimFleet:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def __aenter__(self) -> SimFleet:
        await self.astart()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.astop()

    async def astart(self) -> SimFleet:
        t0 = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self._stop_event_async = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.agent_workers, thread_name_prefix="simfleet-agent"
        )
        await asyncio.to_thread(self._prepare)
        for start in range(0, len(self.hosts), 200):
            await asyncio.gather(*(h._sync_listener() for h in self.hosts[start : start + 200]))
        if self.control:
            self._control_server = await asyncio.start_server(self._control_conn, "127.0.0.1", 0)
            self.control_port = self._control_server.sockets[0].getsockname()[1]
        await asyncio.to_thread(self._write_files)
        self.started_seconds = time.monotonic() - t0
        logger.info("simfleet: %d hosts up in %.2f s", len(self.hosts), self.started_seconds)
        return self

    async def astop(self) -> None:
        self._stopping = True
        self._stop_event.set()
        if self._stop_event_async is not None:
            self._stop_event_async.set()
        for task in list(self._tasks):
            task.cancel()
        for host in self.hosts:
            await host._sync_listener()
        if self._control_server is not None:
            self._control_server.close()
            self._control_server = None
        await asyncio.sleep(0)  # let the aborted connections run their callbacks
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        state_file = self.state_dir / "fleet.json"
        try:
            if json.loads(state_file.read_text()).get("pid") == os.getpid():
                state_file.unlink()
        except (OSError, ValueError):
            pass

    def _call(self, coro) -> None:
        """Run a coroutine on the fleet loop: wait for it from another thread; schedule it when
        already on the loop (then it takes effect at the next await)."""
        loop = self._loop
        if loop is None:
            coro.close()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task = loop.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    # -- keys, hosts, files ---------------------------------------------------------------------

    def _prepare(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        keys_dir = self.state_dir / "host_keys"
        keys_dir.mkdir(exist_ok=True)
        client = self.state_dir / "client_key"
        if not client.exists():
            key = asyncssh.generate_private_key("ssh-ed25519", comment="simfleet-client")
            _write_private(client, key.export_private_key("openssh"))
            (self.state_dir / "client_key.pub").write_bytes(key.export_public_key("openssh"))
        client_key = asyncssh.read_private_key(str(client))
        self._client_public_data = client_key.public_data
        if not (self.state_dir / "client_key.pub").exists():
            (self.state_dir / "client_key.pub").write_bytes(client_key.export_public_key("openssh"))
        a, b, c, d = (int(x) for x in self.first_address.split("."))
        first = (a << 24) | (b << 16) | (c << 8) | d
        for i, spec in enumerate(self._specs):
            path = keys_dir / spec["name"]
            if path.exists():
                key = asyncssh.import_private_key(path.read_bytes())
            else:
                key = asyncssh.generate_private_key("ssh-ed25519", comment=spec["name"])
                _write_private(path, key.export_private_key("openssh"))
            if self.address_mode == "ports":
                address = self.bind_address
                port = self.base_port + i if self.base_port else 0
            else:
                n = first + i
                address = f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
                port = self.base_port or 22
            host = FleetHost(
                self,
                spec["name"],
                spec["profile"],
                index=i,
                address=address,
                port=port,
                username=spec["username"],
                host_key=key,
                variety=spec["variety"],
            )
            for guest in spec.get("guests", ()):
                host.add_guest(guest["name"], guest.get("hostdevs", []), guest.get("running", True))
            self.hosts.append(host)
            self._by_name[host.name] = host

    def inventory_rows(self) -> list[dict]:
        return [
            {
                "name": h.name,
                "address": h.address,
                "port": h.port,
                "username": h.username,
                "profile": h.profile.name,
                "host_key": h.original_host_public_key,
            }
            for h in self.hosts
        ]

    def _write_files(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(
            buf,
            fieldnames=["name", "address", "port", "username", "profile", "host_key"],
            lineterminator="\n",
        )
        writer.writeheader()
        writer.writerows(self.inventory_rows())
        _atomic_text(self.inventory_path, buf.getvalue())
        if self.control:
            _atomic_text(
                self.state_dir / "fleet.json",
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "control_host": "127.0.0.1",
                        "control_port": self.control_port,
                        "token": self.control_token,
                        "hosts": len(self.hosts),
                        "inventory": str(self.inventory_path),
                        "client_key": str(self.client_private_key_path),
                    },
                    indent=2,
                )
                + "\n",
                mode=0o600,
            )

    def _compile(self, digest: str, source: bytes):
        with self._code_lock:
            code = self._code_cache.get(digest)
            if code is not None:
                self._code_cache.move_to_end(digest)
                return code
        code = compile(source, "sriov_agent.py", "exec")
        with self._code_lock:
            self._code_cache[digest] = code
            while len(self._code_cache) > _CODE_CACHE_SIZE:
                self._code_cache.popitem(last=False)
        return code

    # -- control port (JSON lines on 127.0.0.1, token from fleet.json) --------------------------

    async def _control_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    reply = {"ok": True, "result": await self._control(json.loads(line))}
                except Exception as exc:  # noqa: BLE001 - reported to the CLI
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                writer.write(json.dumps(reply, default=str).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    async def _control(self, req: dict):
        if not secrets.compare_digest(str(req.get("token", "")), self.control_token):
            raise PermissionError("bad control token")
        cmd = req.get("cmd")
        if cmd == "list":
            return [
                dict(r, state=h.state, faults=sorted(h.faults))
                for r, h in zip(self.inventory_rows(), self.hosts, strict=True)
            ]
        host = self._by_name[req["host"]]
        if cmd == "state":
            return host.true_state()
        if cmd == "fault":
            if req.get("clear"):
                await host.aclear_faults(*([req["fault"]] if req.get("fault") else []))
            else:
                await host.ainject(req["fault"], **(req.get("params") or {}))
            return {"faults": host.true_state()["faults"]}
        if cmd == "reboot":
            host.reboot()
            return {"boot_id": host.boot_id}
        if cmd == "commands":
            return list(host.commands)
        raise ValueError(f"unknown command {cmd!r}")


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(str(path) + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(str(path) + ".tmp", path)


def _atomic_text(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
