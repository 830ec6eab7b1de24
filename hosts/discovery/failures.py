"""Failed discoveries: the status each transport kind leads to, and a reason an operator can act on."""

from __future__ import annotations

from ..models import Hypervisor

Status = Hypervisor.Status

# remote.AgentResult.kind → the host status it leads to.
FAILURE_STATUS = {
    "unreachable": Status.UNREACHABLE,
    "timeout": Status.UNREACHABLE,
    "auth_failed": Status.AUTH_FAILED,
    "sudo_failed": Status.AUTH_FAILED,
    "new_host_key": Status.HOST_KEY_PENDING,
    "host_key_mismatch": Status.HOST_KEY_MISMATCH,
    "agent_error": Status.ERROR,
    "malformed_response": Status.ERROR,
    "no_python": Status.ERROR,
}

NO_CREDENTIAL = "No SSH credential is assigned to this host; assign one, then refresh."


def failure_reason(host: Hypervisor, result) -> str:
    """A sentence an operator can act on; says how old the facts shown are."""
    text = _reason(host, result)
    if host.facts_refreshed_at:
        text += f" Facts shown are from {host.facts_refreshed_at:%Y-%m-%d %H:%M} UTC."
    return text


def _reason(host: Hypervisor, result) -> str:
    kind, message = result.kind, (result.message or "").strip()
    where = f"{host.address}:{host.port}"
    user = host.username
    cred = host.credential.name if host.credential_id else "?"
    if kind == "unreachable":
        return (
            f"Cannot reach {where} over SSH ({message}). "
            f"Check that the host is up and port {host.port} is open."
        )
    if kind == "timeout":
        return f"No answer from {where} in time ({message}). The host or the network may be overloaded."
    if kind == "auth_failed":
        return (
            f"The SSH server on {where} rejected user {user!r} with the key of credential {cred!r}. "
            f"Install the credential's public key in ~{user}/.ssh/authorized_keys on the host."
        )
    if kind == "sudo_failed":
        return (
            f"Logged in as {user!r} but could not become root ({message}). "
            "Allow passwordless sudo for python3."
        )
    if kind == "new_host_key":
        return (
            f"The host presented an SSH host key the console has not seen before "
            f"({result.host_key_fingerprint}). An admin must compare and accept it before anything runs."
        )
    if kind == "host_key_mismatch":
        expected = result.details.get("expected_fingerprint") or host.host_key_fingerprint
        return (
            f"The host's SSH key changed: the pinned key is {expected}, the host presented "
            f"{result.host_key_fingerprint}. Nothing runs on this host until an admin checks why "
            f"(reinstall, or someone in the middle) and accepts the new key."
        )
    if kind == "no_python":
        return f"python3 is not available on the host ({message}). The agent needs python3 (3.6 or later)."
    if kind == "malformed_response":
        return f"The agent's answer could not be read ({message})."
    if kind == "agent_error":
        return f"The agent reported an error: {message}"
    return message or kind
