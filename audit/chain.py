"""The hash chain: canonical serialisation of an event and the walk that checks it.

Each event's hash is sha256 over the canonical JSON of its fields *including* `prev_hash`, the hash
of the event before it in `id` order (ids are gap-free chain positions assigned under the chain
lock, see audit/services.py). The first event's prev_hash is GENESIS. docs/audit.md explains why.

Canonical JSON: keys sorted, no whitespace, UTF-8 (no ASCII escaping), times as UTC ISO-8601 with
microseconds and a `Z`, ids as strings (or null), integral floats written as integers (PostgreSQL
jsonb stores numbers as numeric and gives `1e+20` back as `100000000000000000000`).
"""

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC

GENESIS = "0" * 64

# The fields covered by the hash, as stored in the table (the hash itself excluded).
HASHED_FIELDS = (
    "id",
    "created_at",
    "actor_id",
    "actor_name",
    "action",
    "object_type",
    "object_id",
    "object_repr",
    "host_id",
    "host_name",
    "change_id",
    "data",
    "client_ip",
    "request_id",
    "prev_hash",
)


def _canonical_value(value):
    if isinstance(value, dict):
        return {str(k): _canonical_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical_value(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def format_time(dt) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _id_or_none(value):
    return None if value is None else str(value)


def canonical_bytes(row: dict) -> bytes:
    """`row` has HASHED_FIELDS as keys (model attribute names: actor_id, host_id, ...)."""
    doc = {
        "id": _id_or_none(row["id"]),
        "created_at": format_time(row["created_at"]),
        "actor_id": _id_or_none(row["actor_id"]),
        "actor_name": row["actor_name"],
        "action": row["action"],
        "object_type": row["object_type"],
        "object_id": row["object_id"],
        "object_repr": row["object_repr"],
        "host_id": _id_or_none(row["host_id"]),
        "host_name": row["host_name"],
        "change_id": _id_or_none(row["change_id"]),
        "data": _canonical_value(row["data"]),
        "client_ip": row["client_ip"],
        "request_id": row["request_id"],
        "prev_hash": row["prev_hash"],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def compute_hash(row: dict) -> str:
    return hashlib.sha256(canonical_bytes(row)).hexdigest()


@dataclass
class BrokenLink:
    id: int
    action: str
    created_at: object
    reason: str
    expected: str
    stored: str

    def describe(self) -> str:
        return (
            f"first broken link at event {self.id} ({self.action}, {format_time(self.created_at)}): "
            f"{self.reason}; expected {self.expected}, stored {self.stored}"
        )


@dataclass
class ChainResult:
    checked: int
    last_id: int | None
    last_hash: str
    broken: BrokenLink | None

    @property
    def ok(self) -> bool:
        return self.broken is None


def walk(rows, *, prev_id=None, prev_hash=GENESIS) -> ChainResult:
    """Check `rows` (dicts with HASHED_FIELDS + "hash", in id order) continue the chain after
    (prev_id, prev_hash). Stops at the first broken link and names it."""
    checked = 0
    for row in rows:
        expected_id = 1 if prev_id is None else prev_id + 1
        broken = None
        if row["id"] != expected_id:
            broken = BrokenLink(
                row["id"],
                row["action"],
                row["created_at"],
                "events missing before this one (gap in the sequence)",
                str(expected_id),
                str(row["id"]),
            )
        elif row["prev_hash"] != prev_hash:
            broken = BrokenLink(
                row["id"],
                row["action"],
                row["created_at"],
                "prev_hash does not match the previous event's hash",
                prev_hash,
                row["prev_hash"],
            )
        else:
            recomputed = compute_hash(row)
            if recomputed != row["hash"]:
                broken = BrokenLink(
                    row["id"],
                    row["action"],
                    row["created_at"],
                    "content does not match its hash (the event was altered)",
                    recomputed,
                    row["hash"],
                )
        if broken:
            return ChainResult(checked, prev_id, prev_hash, broken)
        checked += 1
        prev_id, prev_hash = row["id"], row["hash"]
    return ChainResult(checked, prev_id, prev_hash, None)
