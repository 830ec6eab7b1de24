"""The wire protocol between the console and the agent (see docs/architecture.md).

Shared by remote/ (the client) and simfleet/ (the simulated hosts); no Django here.
"""

import hashlib
import json
from pathlib import Path

AGENT_PATH = Path(__file__).resolve().parent.parent / "agent" / "sriov_agent.py"

# The only program text ever sent as a command line. It contains no data: the agent source and
# the request arrive on stdin, so nothing a user typed can reach a shell.
BOOTSTRAP = (
    "import sys;"
    "d=sys.stdin.buffer.read();"
    "h,_,r=d.partition(b'\\n');"
    "n=int(h);"
    "g={'__name__':'sriov_agent'};"
    "exec(compile(r[:n],'sriov_agent.py','exec'),g);"
    "sys.exit(g['remote_main'](r[n:]))"
)
BOOTSTRAP_COMMAND = "python3 -c \"" + BOOTSTRAP + "\""
SUDO_PREFIX = "sudo -n "


def command_for(username: str) -> str:
    """The constant command line for a login user: sudo -n unless already root."""
    return BOOTSTRAP_COMMAND if username == "root" else SUDO_PREFIX + BOOTSTRAP_COMMAND


def agent_source() -> bytes:
    return AGENT_PATH.read_bytes()


def agent_sha256(source: bytes | None = None) -> str:
    return hashlib.sha256(source if source is not None else agent_source()).hexdigest()


def encode_payload(source: bytes, request: dict) -> bytes:
    """stdin for BOOTSTRAP: '<len>\\n' + agent source + request JSON."""
    body = json.dumps(request, sort_keys=True).encode()
    return str(len(source)).encode() + b"\n" + source + body


def decode_payload(data: bytes) -> tuple[bytes, bytes]:
    """The inverse of encode_payload, for simfleet: (agent source, request bytes)."""
    header, _, rest = data.partition(b"\n")
    length = int(header)
    if length < 0 or length > len(rest):
        raise ValueError("payload length header does not match the data")
    return rest[:length], rest[length:]
