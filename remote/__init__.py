"""SSH transport: run the agent on hypervisors over asyncssh. No Django in here.

Public API (the Django side is written against this; see docs/architecture.md for the wire contract)::

    from remote import (HostTarget, AgentResult, run_agent, run_many, run_agent_sync, run_many_sync,
                        run_many_batches, fingerprint)

    target = HostTarget(name="hv01", address="10.0.0.5", username="root",
                        private_key=decrypted_openssh_text,          # never logged / repr'd
                        known_host_key="ssh-ed25519 AAAA...",         # None = not yet known
                        accept_new_host_key=False,                    # trust on first use
                        connect_timeout=10.0, op_timeout=120.0)
    res = await run_agent(target, "inventory")                       # -> AgentResult, never raises
    results = await run_many([(target, "inventory", {}), ...], concurrency=50)   # order preserved
    res = run_agent_sync(target, "set_vfs", {...})                    # asyncio.run wrapper (Celery)
    for batch in run_many_batches(jobs, concurrency=50, batch_size=50):  # [(job index, result)]
        ...                                                          # as they arrive (own thread)

How a call works: one SSH connection per call; the server's host key is checked against
`known_host_key` inside the handshake (custom `validate_host_public_key`), then the constant
command `protocol.command_for(username)` (``python3 -c '<bootstrap>'``, ``sudo -n`` first when the
user is not root) is run with `protocol.encode_payload(agent source, request)` on stdin (the agent
zlib-compressed, its sha256 checked by the bootstrap before it runs). With ``fast_crypto`` (the
default) AES-GCM ciphers and curve25519 key exchange are offered first. Successes log at DEBUG;
a fan-out logs one INFO summary. The
request is ``{"op", "args", "request_id"}``; stdout must be exactly one JSON object with a boolean
``ok``, the same ``op``, and a ``result`` object (ok) or ``error`` ``{code, message}`` (not ok).

AgentResult.kind (``ok`` is True only for ``"ok"``):

==================== =========================================================================
ok                   transport fine and the agent answered ok:true (``result`` is filled)
agent_error          the agent answered ok:false; ``error_code`` keeps its stable code
new_host_key         no key pinned; ``host_key``/``host_key_fingerprint`` carry the presented key
                     and nothing was run (unless ``accept_new_host_key``: then the agent runs and
                     ``host_key_was_unknown`` is True so the caller records the key)
host_key_mismatch    pinned key differs from the presented one; refused, nothing run;
                     ``details`` has ``expected_fingerprint`` and ``presented_fingerprint``
unreachable          connection refused, no route, DNS failure, connection lost
auth_failed          the server rejected the key (or the key text is unusable)
timeout              connect timeout or the agent did not finish within op_timeout (channel closed)
malformed_response   stdout is not one JSON object of the right shape (e.g. garbage)
no_python            python3 is missing on the host (exit 127 / "python3: not found")
sudo_failed          ``sudo -n`` wants a password / user not in sudoers
==================== =========================================================================

Every result carries the transcript: ``request``, ``command``, ``stdout``, ``stderr``,
``exit_status``, ``duration``, ``agent_sha256``, ``started_at``/``finished_at`` (UTC) and
``host_key``/``host_key_fingerprint`` whenever the handshake got that far. ``to_dict()`` gives a
JSON-safe dict. The private key is never logged, never in a message, result or repr.
"""

from .client import (
    KINDS,
    NOT_RUN_KINDS,
    AgentResult,
    HostTarget,
    fingerprint,
    run_agent,
    run_agent_sync,
    run_many,
    run_many_batches,
    run_many_sync,
)

__all__ = [
    "KINDS",
    "NOT_RUN_KINDS",
    "AgentResult",
    "HostTarget",
    "fingerprint",
    "run_agent",
    "run_agent_sync",
    "run_many",
    "run_many_batches",
    "run_many_sync",
]
