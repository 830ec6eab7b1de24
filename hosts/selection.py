"""The hosts table's selection: host ids kept in the user's session, so picking hosts survives a
filter change, paging and the table's live refresh, until it is cleared or handed to a change.

    selected_ids(session) -> list[int]
    update(session, op, shown=(), checked=(), matching=None) -> str | None   (why it was refused)

`op`: "sync" (the rows shown on the page: checked ones in, the others out), "page" / "unpage" (every
shown row in / out), "matching" (every host the filter matches), "clear".
"""

from __future__ import annotations

SESSION_KEY = "hosts.selection"
# The change wizard takes the selection in its URL (?hosts=…) and accepts at most this many ids.
LIMIT = 1000
OPS = ("sync", "page", "unpage", "matching", "clear")


def selected_ids(session) -> list[int]:
    return list(session.get(SESSION_KEY, []))


def _save(session, ids) -> None:
    session[SESSION_KEY] = sorted(ids)


def update(session, op: str, *, shown=(), checked=(), matching=None) -> str | None:
    """Apply one selection operation; refused (a message, nothing changed) beyond LIMIT hosts."""
    if op not in OPS:
        raise ValueError(f"unknown selection operation {op!r}")
    current = set(selected_ids(session))
    shown, checked = set(shown), set(checked) & set(shown)
    if op == "clear":
        current = set()
    elif op == "sync":
        current = (current - shown) | checked
    elif op == "page":
        current |= shown
    elif op == "unpage":
        current -= shown
    elif op == "matching":
        current |= set(matching or ())
    if len(current) > LIMIT:
        return (f"Not selected: that would be more than {LIMIT} hosts, the most a selection holds. "
                "Narrow the filter, or target the hosts with the change form's filter instead.")
    _save(session, current)
    return None
