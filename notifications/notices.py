"""What a notice says: subject, text, link and the structured body webhooks receive.

Built in the worker from the audit event and the rows it names (change, rollout, host).
Everything here is already visible on the console's pages to the roles that receive it; secrets
never are (audit data has them redacted anyway).
"""

from dataclasses import dataclass, field

from django.conf import settings
from django.urls import reverse

from changes.models import ChangeRequest, Rollout
from hosts.models import Hypervisor

from .models import Topic


@dataclass
class Notice:
    topic: str
    action: str
    event_id: int | None
    title: str
    text: str
    path: str
    time: str
    change: ChangeRequest | None = None
    rollout: Rollout | None = None
    host: Hypervisor | None = None
    facts: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return settings.CONSOLE_BASE_URL.rstrip("/") + self.path

    def document(self) -> dict:
        """The JSON body of a webhook in the console's own format."""
        change = self.change
        return {
            "topic": self.topic,
            "action": self.action,
            "audit_event": self.event_id,
            "time": self.time,
            "title": self.title,
            "text": self.text,
            "url": self.url,
            "change": None if change is None else {
                "id": change.pk, "title": change.title, "state": change.state,
                "requested_by": change.requested_by.get_username(),
            },
            "rollout": None if self.rollout is None else {
                "id": self.rollout.pk, "attempt": self.rollout.attempt, "state": self.rollout.state,
                "halted": self.rollout.halted,
            },
            "host": None if self.host is None else {"id": self.host.pk, "name": self.host.name},
            "details": self.facts,
        }


def _change_notice(event, topic) -> Notice:
    change = ChangeRequest.objects.select_related("requested_by").get(pk=event.change_id)
    data = event.data or {}
    who = event.actor_name
    label = f"change #{change.pk} “{change.title}”"
    if event.action == "change.submitted":
        hosts = change.plan_items.count()
        title = f"Change #{change.pk} waits for approval: {change.title}"
        text = (f"{change.requested_by.get_username()} submitted {label} for {hosts} host"
                f"{'s' if hosts != 1 else ''}; it needs {change.required_approvals} approval"
                f"{'s' if change.required_approvals != 1 else ''}.\nReason: {change.reason}")
        facts = {"hosts": hosts, "required_approvals": change.required_approvals}
    elif event.action == "change.approved":
        title = f"Change #{change.pk} approved: {change.title}"
        text = f"{who} approved {label}; it is scheduled to roll out."
        facts = {"approvals": data.get("approvals"), "comment": data.get("comment", "")}
    elif event.action == "change.rejected":
        title = f"Change #{change.pk} rejected: {change.title}"
        text = f"{who} rejected {label}: {data.get('comment', '')}"
        facts = {"comment": data.get("comment", "")}
    else:
        title = f"Change #{change.pk} expired: {change.title}"
        text = f"{label} waited too long for approval and expired; submit it again if it is still needed."
        facts = {"approvals": data.get("approvals"), "required": data.get("required")}
    return Notice(topic, event.action, event.pk, title, text, reverse("changes:detail", args=[change.pk]),
                  event.created_at.isoformat(), change=change, facts=facts)


def _rollout_notice(event, topic) -> Notice:
    rollout = Rollout.objects.select_related("change__requested_by").get(pk=int(event.object_id))
    change = rollout.change
    to = (event.data or {}).get("to", "")
    outcome = "halted" if rollout.halted or to == "halted" else to.replace("_", " ")
    if rollout.halted and to != "halted":
        outcome = f"halted ({to.replace('_', ' ')})"
    message = (event.data or {}).get("message", "")
    title = f"Rollout of change #{change.pk} {outcome}: {change.title}"
    text = f"Rollout {rollout.attempt} of change #{change.pk} “{change.title}” {outcome}." + (
        f"\n{message}" if message else "")
    return Notice(topic, event.action, event.pk, title, text, reverse("changes:detail", args=[change.pk]),
                  event.created_at.isoformat(), change=change, rollout=rollout,
                  facts={"outcome": to, "halted": rollout.halted, "message": message})


def _host_notice(event, topic) -> Notice:
    host = Hypervisor.objects.filter(pk=event.host_id).first()
    name = event.host_name or (host.name if host else "?")
    data = event.data or {}
    if event.action == "host.key_mismatch":
        title = f"Host {name}: SSH host key mismatch"
        text = (f"{name} presented host key {data.get('presented_fingerprint', '?')} but "
                f"{data.get('expected_fingerprint', '?')} is pinned. Every operation on it is blocked until "
                "an admin compares the fingerprints and accepts or rejects the new key.")
        facts = {k: data.get(k) for k in ("expected_fingerprint", "presented_fingerprint")}
    else:
        reasons = data.get("reasons") or []
        title = f"Host {name} drifted from what the console applied"
        text = f"Drift on {name}:\n" + "\n".join(f"- {r}" for r in reasons)
        facts = {"reasons": reasons}
    path = reverse("hosts:detail", args=[host.pk]) if host else reverse("hosts:list")
    return Notice(topic, event.action, event.pk, title, text, path, event.created_at.isoformat(),
                  host=host, facts=facts)


def build(event, topic: str) -> Notice:
    if topic in (Topic.APPROVAL_NEEDED, Topic.CHANGE_DECIDED):
        return _change_notice(event, topic)
    if topic == Topic.ROLLOUT_FINISHED:
        return _rollout_notice(event, topic)
    return _host_notice(event, topic)


def test_notice(webhook, time: str) -> Notice:
    return Notice("test", "notification.test", None, f"Test delivery to {webhook.name}",
                  "This is a test from the SR-IOV Console: the webhook is reachable and the signature "
                  "can be checked with its secret.", reverse("notifications:webhook", args=[webhook.pk]), time)
