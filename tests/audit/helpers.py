"""Helpers for any test that checks audit events (import from tests.audit.helpers).

from tests.audit.helpers import events, the_event
event = the_event("host.created", host_id=host.pk)      # exactly one, or the test fails
assert event.actor_name == "otto" and event.data["after"]["name"] == "hv1"
assert events("change.") == []                           # prefix: every change.* event
"""

from audit.models import AuditEvent
from audit.services import verify_chain


def events(action=None, **filters):
    """Events in chain order (oldest first). `action` ending in "." is a prefix; other filters are
    AuditEvent field lookups (actor_name=..., host_id=..., change_id=..., object_id=...)."""
    queryset = AuditEvent.objects.filter(**filters).order_by("id")
    if action:
        queryset = (
            queryset.filter(action__startswith=action)
            if action.endswith(".")
            else queryset.filter(action=action)
        )
    return list(queryset)


def the_event(action, **filters):
    """The one event with this action (and filters); fails naming what was found otherwise."""
    found = events(action, **filters)
    assert len(found) == 1, (
        f"expected exactly one {action} event matching {filters}, found {len(found)}: {found}"
    )
    return found[0]


def actions():
    """All recorded action names, in order: handy for `assert actions() == [...]`."""
    return list(AuditEvent.objects.order_by("id").values_list("action", flat=True))


def assert_chain_ok():
    result = verify_chain()
    assert result.ok, result.broken.describe()
    return result
