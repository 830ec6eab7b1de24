"""Which audit events are worth telling someone about (pure: looks at the event row only)."""

from .models import Topic

ROLLOUT_OUTCOMES = {"halted", "failed", "partially_failed", "succeeded"}

ACTION_TOPICS = {
    "change.submitted": Topic.APPROVAL_NEEDED,
    "change.approved": Topic.CHANGE_DECIDED,
    "change.rejected": Topic.CHANGE_DECIDED,
    "change.expired": Topic.CHANGE_DECIDED,
    "rollout.state_changed": Topic.ROLLOUT_FINISHED,
    "host.key_mismatch": Topic.HOST_ALERT,
    "host.drift_detected": Topic.HOST_ALERT,
}


def topic_of(event) -> str | None:
    """The topic of an AuditEvent, or None when nobody is told.

    change.approved is recorded for every vote; only the one that reaches the quorum (the change
    becomes approved) is news for the requester. rollout.state_changed is recorded for the rollout
    and, at the end, for the change too: only the rollout's own event counts, once per outcome.
    """
    topic = ACTION_TOPICS.get(event.action)
    data = event.data or {}
    if topic is None:
        return None
    if event.action == "change.approved" and not (data.get("quorum") or data.get("to") == "approved"):
        return None
    if event.action == "rollout.state_changed" and (
        event.object_type != "changes.rollout" or data.get("to") not in ROLLOUT_OUTCOMES
    ):
        return None
    return topic
