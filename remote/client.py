"""asyncssh client that runs the agent on one host or on many (see remote/__init__.py)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncssh
from asyncssh.encryption import get_default_encryption_algs
from asyncssh.kex import get_default_kex_algs
from asyncssh.public_key import get_default_public_key_algs

from . import protocol

logger = logging.getLogger("remote")

KIND_OK = "ok"
KIND_AGENT_ERROR = "agent_error"
KIND_NEW_HOST_KEY = "new_host_key"
KIND_HOST_KEY_MISMATCH = "host_key_mismatch"
KIND_UNREACHABLE = "unreachable"
KIND_AUTH_FAILED = "auth_failed"
KIND_TIMEOUT = "timeout"
KIND_MALFORMED = "malformed_response"
KIND_NO_PYTHON = "no_python"
KIND_SUDO_FAILED = "sudo_failed"

KINDS = (
    KIND_OK,
    KIND_AGENT_ERROR,
    KIND_NEW_HOST_KEY,
    KIND_HOST_KEY_MISMATCH,
    KIND_UNREACHABLE,
    KIND_AUTH_FAILED,
    KIND_TIMEOUT,
    KIND_MALFORMED,
    KIND_NO_PYTHON,
    KIND_SUDO_FAILED,
)

# Kinds where nothing was run on the host (the agent never started).
NOT_RUN_KINDS = frozenset(
    {KIND_NEW_HOST_KEY, KIND_HOST_KEY_MISMATCH, KIND_UNREACHABLE, KIND_AUTH_FAILED}
)

# Preferred host key algorithms when nothing is pinned: modern first. (asyncssh's own default
# order puts RSA first, which would make a host with several keys present its RSA key.)
_PREFERRED_HOST_KEY_ALGS = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ssh-rsa",
)

# With fast_crypto, offered first; the rest of asyncssh's defaults follow, so a host that offers
# none of these still negotiates what it has (docs/security.md, "Ciphers and key exchange").
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
FAST_KEX = ("curve25519-sha256", "curve25519-sha256@libssh.org")

_CLOSE_TIMEOUT = 5.0
_MAX_CAPTURE = 4 * 1024 * 1024  # bytes kept per stream for the transcript
# A host may be compromised: never buffer more than this from it. One agent response is a few
# hundred KiB at most (inventory of a large host); anything beyond is refused as malformed.
MAX_STDOUT_BYTES = 4 * 1024 * 1024
MAX_STDERR_BYTES = 256 * 1024
_READ_CHUNK = 64 * 1024


class _StreamOverflow(Exception):
    def __init__(self, stream: str, limit: int):
        super().__init__(stream, limit)
        self.stream = stream
        self.limit = limit


async def _read_capped(reader, limit: int, name: str, chunks: list) -> None:
    """Read reader to EOF into chunks; raise _StreamOverflow as soon as more than limit bytes came."""
    total = 0
    while True:
        data = await reader.read(_READ_CHUNK)
        if not data:
            return
        total += len(data)
        if total > limit:
            raise _StreamOverflow(name, limit)
        chunks.append(data)


async def _collect(process, out_chunks: list, err_chunks: list):
    """Both streams concurrently, each capped, then the exit status."""
    tasks = [
        asyncio.ensure_future(_read_capped(process.stdout, MAX_STDOUT_BYTES, "stdout", out_chunks)),
        asyncio.ensure_future(_read_capped(process.stderr, MAX_STDERR_BYTES, "stderr", err_chunks)),
    ]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return await process.wait()


@dataclass(frozen=True)
class HostTarget:
    """Everything needed to reach one host. No Django; the caller decrypts the key."""

    name: str
    address: str
    port: int = 22
    username: str = "root"
    private_key: str = field(default="", repr=False)  # OpenSSH/PEM text; never logged
    known_host_key: str | None = None  # pinned "ssh-ed25519 AAAA..." line; None = not yet known
    accept_new_host_key: bool = False  # trust on first use: run anyway when the key is unknown
    connect_timeout: float = 10.0
    op_timeout: float = 120.0
    fast_crypto: bool = True  # prefer AES-GCM and curve25519 where the host offers them


@dataclass
class AgentResult:
    """What happened when the agent was (or was not) run on one host; the step's transcript."""

    host: str
    op: str
    request: dict
    ok: bool  # transport ok AND agent ok
    kind: str  # one of KINDS
    message: str  # for people
    response: dict | None = None
    result: dict | None = None
    error_code: str | None = None
    stdout: str = ""
    stderr: str = ""
    exit_status: int | None = None
    duration: float = 0.0
    agent_sha256: str = ""
    host_key: str | None = None  # the key the server presented (OpenSSH line)
    host_key_fingerprint: str | None = None  # SHA256:...
    host_key_was_unknown: bool = False  # nothing was pinned and the key was accepted (TOFU)
    details: dict = field(default_factory=dict)  # e.g. expected/presented fingerprints
    command: str = ""  # the constant command line that was (or would have been) run
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def agent_ran(self) -> bool:
        return self.kind not in NOT_RUN_KINDS

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict for storing the transcript."""
        data = asdict(self)
        for key in ("started_at", "finished_at"):
            if data[key] is not None:
                data[key] = data[key].isoformat()
        return data


def fingerprint(public_key_line: str) -> str:
    """SHA256 fingerprint ("SHA256:...") of an OpenSSH public key line."""
    return asyncssh.import_public_key(public_key_line.strip()).get_fingerprint("sha256")


def _key_line(key: asyncssh.SSHKey) -> str:
    """'type base64' (no comment) of a public key."""
    return _key_blob_line(key.export_public_key("openssh").decode("ascii"))


def _key_blob_line(line: str) -> str:
    """'type base64' without a comment, for display and storage."""
    parts = line.split()
    return " ".join(parts[:2])


class _PinnedHostKeyClient(asyncssh.SSHClient):
    """Checks the server's host key against the pinned one and remembers what was presented."""

    def __init__(self, pinned: asyncssh.SSHKey | None, accept_new: bool):
        self._pinned = pinned
        self._accept_new = accept_new
        self.presented: asyncssh.SSHKey | None = None
        self.outcome: str | None = None  # "match" | "new" | "mismatch"

    def validate_host_public_key(self, host, addr, port, key) -> bool:
        self.presented = key
        if self._pinned is None:
            self.outcome = "new"
            return self._accept_new
        if key == self._pinned:
            self.outcome = "match"
            return True
        self.outcome = "mismatch"
        return False


def _host_key_algs(pinned: asyncssh.SSHKey | None) -> list[str]:
    supported = [alg.decode("ascii") for alg in get_default_public_key_algs()]
    order: list[str] = []
    if pinned is not None:
        order.extend(alg.decode("ascii") for alg in pinned.sig_algorithms)
    order.extend(_PREFERRED_HOST_KEY_ALGS)
    order.extend(supported)
    seen: set[str] = set()
    algs = []
    for alg in order:
        if alg in supported and alg not in seen:
            seen.add(alg)
            algs.append(alg)
    return algs


def _preferred(first: tuple[str, ...], defaults: list[bytes]) -> list[str]:
    names = [alg.decode("ascii") for alg in defaults]
    return [alg for alg in first if alg in names] + [alg for alg in names if alg not in first]


@functools.cache
def _fast_crypto_algs() -> dict[str, list[str]]:
    kex = [alg for alg in get_default_kex_algs() if not alg.startswith(b"gss-")]
    return {
        "encryption_algs": _preferred(FAST_CIPHERS, get_default_encryption_algs()),
        "kex_algs": _preferred(FAST_KEX, kex),
    }


def validate_response(text: str, request: dict) -> tuple[dict | None, str]:
    """(response, "") when stdout is one well-formed agent response, else (None, why)."""
    body = text.strip()
    if not body:
        return None, "the agent printed nothing on stdout"
    try:
        response = json.loads(body)
    except RecursionError:
        return None, "stdout is JSON nested too deeply to parse"
    except ValueError as exc:
        msg = getattr(exc, "msg", str(exc))
        pos = getattr(exc, "pos", "?")
        return None, f"stdout is not one JSON document ({msg} at char {pos})"
    if not isinstance(response, dict):
        return None, "stdout is JSON but not an object"
    if not isinstance(response.get("ok"), bool):
        return None, "response has no boolean 'ok'"
    if response.get("op") != request["op"]:
        return None, f"response 'op' is {response.get('op')!r}, expected {request['op']!r}"
    rid = response.get("request_id")
    if rid is not None and rid != request.get("request_id"):
        return None, "response 'request_id' does not match the request"
    if response["ok"]:
        if not isinstance(response.get("result"), dict):
            return None, "ok response has no 'result' object"
    else:
        error = response.get("error")
        if not isinstance(error, dict) or not isinstance(error.get("code"), str):
            return None, "error response has no 'error' object with a string 'code'"
        if not isinstance(error.get("message", ""), str):
            return None, "error 'message' is not a string"
    return response, ""


def diagnose_failed_start(stderr: str, exit_status: int | None, username: str) -> tuple[str, str] | None:
    """Recognise 'python3 missing' and 'sudo wants a password' from stderr / exit status."""
    low = stderr.lower()
    if username != "root" and "sudo" in low:
        if "password is required" in low or "terminal is required" in low or "askpass" in low:
            return KIND_SUDO_FAILED, "sudo -n refused: the user needs passwordless sudo (NOPASSWD)"
        if "not in the sudoers" in low or "not allowed to execute" in low or "may not run sudo" in low:
            return KIND_SUDO_FAILED, "sudo refused: the user may not run python3 as root"
        if "sudo: command not found" in low or "sudo: not found" in low:
            return KIND_SUDO_FAILED, "sudo is not installed on the host"
    if "python3" in low and ("not found" in low or "no such file" in low):
        return KIND_NO_PYTHON, "python3 is not installed (or not on PATH) on the host"
    if exit_status == 127 and not stderr.strip():
        return KIND_NO_PYTHON, "the command was not found (exit 127): python3 is probably missing"
    return None


def _build_request(op: str, args: dict | None, request_id: str | None) -> dict:
    return {"op": op, "args": dict(args or {}), "request_id": request_id or uuid.uuid4().hex}


async def run_agent(
    target: HostTarget,
    op: str,
    args: dict | None = None,
    *,
    request_id: str | None = None,
    agent_source: bytes | None = None,
) -> AgentResult:
    """Run the agent once on one host. Never raises for host-side problems; see AgentResult.kind."""
    request = _build_request(op, args, request_id)
    source = agent_source if agent_source is not None else protocol.agent_source()
    try:
        return await _run_agent(target, request, source)
    except Exception as exc:  # a bug here must not take down a fan-out; say so loudly
        logger.exception("remote: internal error running %s on %s", op, target.name)
        now = datetime.now(UTC)
        return AgentResult(
            host=target.name,
            op=op,
            request=request,
            ok=False,
            kind=KIND_UNREACHABLE,
            message=f"internal transport error: {type(exc).__name__}",
            agent_sha256=hashlib.sha256(source).hexdigest(),
            command=protocol.command_for(target.username),
            started_at=now,
            finished_at=now,
        )


async def _run_agent(target: HostTarget, request: dict, source: bytes) -> AgentResult:
    started_at = datetime.now(UTC)
    t0 = time.monotonic()
    command = protocol.command_for(target.username)
    res = AgentResult(
        host=target.name,
        op=request["op"],
        request=request,
        ok=False,
        kind=KIND_UNREACHABLE,
        message="",
        agent_sha256=hashlib.sha256(source).hexdigest(),
        command=command,
        started_at=started_at,
    )

    def finish(kind: str, message: str, **details: Any) -> AgentResult:
        res.kind = kind
        res.message = message
        res.ok = kind == KIND_OK
        if details:
            res.details.update(details)
        res.finished_at = datetime.now(UTC)
        res.duration = time.monotonic() - t0
        # At fleet scale a line per host costs more than it tells: successes are DEBUG (run_many
        # logs one summary line), failures stay visible.
        log = logger.debug if res.ok else logger.warning
        log("remote: %s op=%s kind=%s %.3fs %s", target.name, res.op, kind, res.duration, message)
        return res

    # Credentials and the pin are parsed locally; their text never reaches a message.
    pinned = None
    if target.known_host_key:
        try:
            pinned = asyncssh.import_public_key(target.known_host_key.strip())
        except (asyncssh.KeyImportError, ValueError):
            return finish(
                KIND_HOST_KEY_MISMATCH,
                "the pinned host key could not be parsed; refusing to connect until it is fixed",
            )
    try:
        client_key = asyncssh.import_private_key(target.private_key)
    except (asyncssh.KeyImportError, ValueError, TypeError):
        return finish(KIND_AUTH_FAILED, "the private key could not be read (not an unencrypted key)")

    client = _PinnedHostKeyClient(pinned, target.accept_new_host_key)

    def note_host_key() -> None:
        if client.presented is not None:
            res.host_key = _key_line(client.presented)
            res.host_key_fingerprint = client.presented.get_fingerprint("sha256")

    def host_key_refusal() -> AgentResult | None:
        note_host_key()
        if client.outcome == "mismatch":
            expected = pinned.get_fingerprint("sha256") if pinned is not None else None
            return finish(
                KIND_HOST_KEY_MISMATCH,
                f"host key changed: expected {expected}, server presented "
                f"{res.host_key_fingerprint}; nothing was run",
                expected_fingerprint=expected,
                presented_fingerprint=res.host_key_fingerprint,
                expected_host_key=_key_blob_line(target.known_host_key or ""),
            )
        if client.outcome == "new" and not target.accept_new_host_key:
            return finish(
                KIND_NEW_HOST_KEY,
                f"new host key {res.host_key_fingerprint}: accept it before anything is run",
                presented_fingerprint=res.host_key_fingerprint,
            )
        return None

    conn = None
    try:
        conn = await asyncio.wait_for(
            asyncssh.connect(
                target.address,
                target.port,
                client_factory=lambda: client,
                username=target.username,
                client_keys=[client_key],
                known_hosts=([], [], []),  # empty trust set: every key goes to the client
                server_host_key_algs=_host_key_algs(pinned),
                config=[],
                agent_path=None,
                password=None,
                password_auth=False,
                kbdint_auth=False,
                gss_auth=False,
                gss_kex=False,
                preferred_auth="publickey",
                x509_trusted_certs=None,
                connect_timeout=target.connect_timeout,
                login_timeout=target.connect_timeout,
                keepalive_interval=min(30.0, max(1.0, target.op_timeout / 4)),
                keepalive_count_max=3,
                **(_fast_crypto_algs() if target.fast_crypto else {}),
            ),
            timeout=target.connect_timeout,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        refusal = host_key_refusal()
        if refusal is not None:
            return refusal
        return finish(KIND_HOST_KEY_MISMATCH, f"host key not verifiable: {exc.reason}")
    except asyncssh.PermissionDenied:
        note_host_key()
        return finish(KIND_AUTH_FAILED, f"authentication failed for user {target.username!r}")
    except TimeoutError:
        note_host_key()
        return finish(KIND_TIMEOUT, f"connect timed out after {target.connect_timeout:g}s")
    except asyncssh.DisconnectError as exc:
        refusal = host_key_refusal()
        if refusal is not None:
            return refusal
        return finish(KIND_UNREACHABLE, f"SSH connection failed: {exc.reason or type(exc).__name__}")
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        return finish(KIND_UNREACHABLE, f"cannot connect to {target.address}:{target.port}: {why}")
    except asyncssh.Error as exc:
        note_host_key()
        return finish(KIND_UNREACHABLE, f"SSH error: {exc.reason}")

    try:
        note_host_key()
        res.details["cipher"] = conn.get_extra_info("send_cipher")
        # Defence in depth: the client hook already refused, but never run on a mismatched host.
        verified = client.outcome == "match" or (client.outcome == "new" and target.accept_new_host_key)
        if not verified:
            refusal = host_key_refusal()
            return refusal or finish(KIND_HOST_KEY_MISMATCH, "host key was not verified; nothing was run")
        res.host_key_was_unknown = client.outcome == "new"
        return await _run_command(conn, target, request, source, command, res, finish)
    finally:
        conn.close()
        try:
            await asyncio.wait_for(conn.wait_closed(), _CLOSE_TIMEOUT)
        except (TimeoutError, asyncssh.Error, OSError):
            pass


async def _run_command(conn, target, request, source, command, res, finish) -> AgentResult:
    payload = protocol.encode_payload(source, request)
    process = None
    out_chunks: list[bytes] = []
    err_chunks: list[bytes] = []
    deadline = time.monotonic() + target.op_timeout
    try:
        process = await asyncio.wait_for(conn.create_process(command, encoding=None), target.op_timeout)
        process.stdin.write(payload)
        process.stdin.write_eof()
        remaining = max(0.0, deadline - time.monotonic())
        completed = await asyncio.wait_for(_collect(process, out_chunks, err_chunks), remaining)
    except _StreamOverflow as exc:
        process.close()  # close the channel; the connection is closed by the caller
        res.stdout = _text(b"".join(out_chunks))
        res.stderr = _text(b"".join(err_chunks))
        return finish(
            KIND_MALFORMED,
            f"malformed agent response: the host sent more than {exc.limit} bytes on {exc.stream}",
            overflow_stream=exc.stream,
            overflow_limit=exc.limit,
        )
    except TimeoutError:
        res.stdout = _text(b"".join(out_chunks))
        res.stderr = _text(b"".join(err_chunks))
        if process is not None:
            process.close()  # close the channel; the connection is closed by the caller
        return finish(KIND_TIMEOUT, f"the agent did not finish within {target.op_timeout:g}s")
    except asyncssh.ChannelOpenError as exc:
        return finish(KIND_UNREACHABLE, f"the server refused a session: {exc.reason}")
    except (asyncssh.DisconnectError, asyncssh.Error, OSError, BrokenPipeError) as exc:
        reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        return finish(KIND_UNREACHABLE, f"connection lost while the agent was running: {reason}")

    res.stdout = _text(b"".join(out_chunks) + (completed.stdout or b""))
    res.stderr = _text(b"".join(err_chunks) + (completed.stderr or b""))
    res.exit_status = completed.exit_status if completed.exit_status is not None else completed.returncode
    if completed.exit_signal:
        res.details["exit_signal"] = completed.exit_signal[0]

    response, why = validate_response(res.stdout, request)
    if response is None:
        diagnosis = diagnose_failed_start(res.stderr, res.exit_status, target.username)
        if diagnosis is not None:
            return finish(*diagnosis)
        return finish(KIND_MALFORMED, f"malformed agent response: {why} (exit status {res.exit_status})")

    res.response = response
    if response["ok"]:
        if res.exit_status not in (0, None):
            return finish(KIND_MALFORMED, f"agent said ok but exited with status {res.exit_status}")
        res.result = response["result"]
        return finish(KIND_OK, "ok")
    error = response["error"]
    res.error_code = error["code"]
    return finish(KIND_AGENT_ERROR, f"{error['code']}: {error.get('message', '')}".strip())


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data[:_MAX_CAPTURE]
    return data[:_MAX_CAPTURE].decode("utf-8", errors="replace")


async def run_many(
    jobs: Iterable[tuple[HostTarget, str, dict | None]],
    *,
    concurrency: int = 50,
    agent_source: bytes | None = None,
    on_result=None,
) -> list[AgentResult]:
    """Run many (target, op, args) jobs with at most `concurrency` at once; results keep job order.

    One host's failure never affects another: every job yields an AgentResult.
    on_result(index, result), when given, is called on the loop as each job finishes.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    jobs = list(jobs)
    source = agent_source if agent_source is not None else protocol.agent_source()
    semaphore = asyncio.Semaphore(concurrency)
    started = time.monotonic()

    async def one(index: int, target: HostTarget, op: str, args: dict | None) -> AgentResult:
        async with semaphore:
            result = await run_agent(target, op, args, agent_source=source)
        if on_result is not None:
            on_result(index, result)
        return result

    results = list(await asyncio.gather(*(one(i, t, op, args) for i, (t, op, args) in enumerate(jobs))))
    _log_summary(results, time.monotonic() - started)
    return results


def _log_summary(results: list[AgentResult], seconds: float) -> None:
    if not results:
        return
    kinds: dict[str, int] = {}
    for result in results:
        kinds[result.kind] = kinds.get(result.kind, 0) + 1
    summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    logger.info("remote: %s on %d hosts in %.1f s: %s", results[0].op, len(results), seconds, summary)


def run_agent_sync(
    target: HostTarget,
    op: str,
    args: dict | None = None,
    *,
    request_id: str | None = None,
    agent_source: bytes | None = None,
) -> AgentResult:
    """asyncio.run wrapper for synchronous callers (Celery tasks). Not for use inside a running loop."""
    return asyncio.run(run_agent(target, op, args, request_id=request_id, agent_source=agent_source))


def run_many_sync(
    jobs: Iterable[tuple[HostTarget, str, dict | None]],
    *,
    concurrency: int = 50,
    agent_source: bytes | None = None,
) -> list[AgentResult]:
    """asyncio.run wrapper around run_many for synchronous callers."""
    return asyncio.run(run_many(list(jobs), concurrency=concurrency, agent_source=agent_source))


_DONE = object()


def run_many_batches(
    jobs: Iterable[tuple[HostTarget, str, dict | None]],
    *,
    concurrency: int = 50,
    batch_size: int = 50,
    max_wait: float = 0.25,
    agent_source: bytes | None = None,
) -> Iterator[list[tuple[int, AgentResult]]]:
    """Results as they arrive, in batches of (job index, result), for a synchronous consumer.

    The SSH fan-out runs on its own event loop in a background thread while the caller handles
    the previous batch (e.g. writes it to the database), so the two overlap. A batch is yielded
    when it holds `batch_size` results or `max_wait` seconds after its first result arrived,
    whichever comes first. Every job appears in exactly one batch. Closing the iterator early
    cancels the calls still running.
    """
    jobs = list(jobs)
    if not jobs:
        return
    arrived: queue.SimpleQueue = queue.SimpleQueue()
    loop = asyncio.new_event_loop()
    fan_out = loop.create_task(
        run_many(jobs, concurrency=concurrency, agent_source=agent_source,
                 on_result=lambda index, result: arrived.put((index, result)))
    )

    def run_loop() -> None:
        try:
            loop.run_until_complete(fan_out)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer below
            arrived.put((_DONE, exc))
        else:
            arrived.put((_DONE, None))
        finally:
            loop.close()

    thread = threading.Thread(target=run_loop, name="remote-fan-out", daemon=True)
    thread.start()
    try:
        yield from _batches(arrived, batch_size, max_wait)
    finally:
        if not fan_out.done():
            loop.call_soon_threadsafe(fan_out.cancel)
        thread.join()


def _batches(arrived: queue.SimpleQueue, batch_size: int, max_wait: float):
    batch: list[tuple[int, AgentResult]] = []
    deadline = None
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            index, result = arrived.get(timeout=timeout)
        except queue.Empty:
            yield batch
            batch, deadline = [], None
            continue
        if index is _DONE:
            if batch:
                yield batch
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result
            return
        batch.append((index, result))
        deadline = deadline or time.monotonic() + max_wait
        if len(batch) >= batch_size:
            yield batch
            batch, deadline = [], None
