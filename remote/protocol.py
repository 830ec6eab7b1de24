"""The wire protocol between the console and the agent (see docs/architecture.md).

Shared by remote/ (the client) and simfleet/ (the simulated hosts); no Django here.

stdin of the bootstrap::

    b"<length of the compressed agent>:<sha256 hex of the agent>\\n" + zlib(agent) + request JSON

The agent travels zlib-compressed (76 KB → about a quarter of that). The bootstrap decompresses it,
checks its sha256 against the header and refuses to run anything that does not match, so the
sha256 the console records for a step is the sha256 of the code the host executed.
"""

import functools
import hashlib
import json
import zlib
from pathlib import Path

AGENT_PATH = Path(__file__).resolve().parent.parent / "agent" / "sriov_agent.py"

# The only program text ever sent as a command line. It contains no data: the agent source and
# the request arrive on stdin, so nothing a user typed can reach a shell. Python 3.6-compatible;
# no character the shell treats specially inside double quotes ($, `, ", \ before those, !).
# One space only ("import sys"), as sudoers matches the arguments joined by spaces.
SHA256_MISMATCH = "sriov-console:agent_sha256_mismatch"
BOOTSTRAP = (
    "import sys,zlib,hashlib;"
    "d=sys.stdin.buffer.read();"
    "h,_,r=d.partition(b'\\n');"
    "n,s=h.split(b':');"
    "n=int(n);"
    "a=zlib.decompress(r[:n]);"
    "(hashlib.sha256(a).hexdigest().encode()==s)or(sys.exit('" + SHA256_MISMATCH + "'));"
    "g={'__name__':'sriov_agent'};"
    "exec(compile(a,'sriov_agent.py','exec'),g);"
    "sys.exit(g['remote_main'](r[n:]))"
)
BOOTSTRAP_COMMAND = "python3 -c \"" + BOOTSTRAP + "\""
SUDO_PREFIX = "sudo -n "

# An agent is tens of KB; anything that inflates past this is refused before it is held in memory.
MAX_AGENT_BYTES = 8 * 1024 * 1024


def command_for(username: str) -> str:
    """The constant command line for a login user: sudo -n unless already root."""
    return BOOTSTRAP_COMMAND if username == "root" else SUDO_PREFIX + BOOTSTRAP_COMMAND


def agent_source() -> bytes:
    return AGENT_PATH.read_bytes()


def agent_sha256(source: bytes | None = None) -> str:
    return hashlib.sha256(source if source is not None else agent_source()).hexdigest()


@functools.lru_cache(maxsize=8)
def _packed(source: bytes) -> bytes:
    """Header and compressed agent: computed once per agent source, reused for every host."""
    compressed = zlib.compress(source, 9)
    return b"%d:%s\n" % (len(compressed), agent_sha256(source).encode()) + compressed


def encode_payload(source: bytes, request: dict) -> bytes:
    """stdin for BOOTSTRAP: header + compressed agent + request JSON."""
    return _packed(source) + json.dumps(request, sort_keys=True).encode()


def decode_payload(data: bytes) -> tuple[bytes, bytes]:
    """The inverse of encode_payload, for simfleet: (agent source, request bytes).

    Raises ValueError for a malformed header, a bad compressed stream, an agent larger than
    MAX_AGENT_BYTES or an agent whose sha256 is not the one in the header.
    """
    header, _, rest = data.partition(b"\n")
    try:
        length_text, digest = header.split(b":")
        length = int(length_text)
    except ValueError:
        raise ValueError("payload header is not '<length>:<sha256>'") from None
    if length < 0 or length > len(rest):
        raise ValueError("payload length header does not match the data")
    return _inflate_checked(rest[:length], digest), rest[length:]


@functools.lru_cache(maxsize=16)
def _inflate_checked(compressed: bytes, digest: bytes) -> bytes:
    """The agent, once per distinct (compressed bytes, sha256): a fleet receives the same one from
    every call. Only a successful check is cached (a ValueError is raised again every time)."""
    inflater = zlib.decompressobj()
    try:
        source = inflater.decompress(compressed, MAX_AGENT_BYTES)
    except zlib.error as exc:
        raise ValueError(f"the agent is not a zlib stream ({exc})") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError("the agent is truncated or larger than the limit")
    if hashlib.sha256(source).hexdigest().encode() != digest:
        raise ValueError(SHA256_MISMATCH)
    return source
