import json

from django import template

register = template.Library()

BADGES = {
    "succeeded": "ok",
    "approved": "ok",
    "approve": "ok",
    "failed": "bad",
    "partially_failed": "bad",
    "rejected": "bad",
    "drifted": "bad",
    "reject": "bad",
    "expired": "warn",
    "cancelled": "warn",
    "skipped": "warn",
    "waiting": "warn",
    "running": "info",
    "rebooting": "info",
    "scheduled": "info",
    "submitted": "info",
    "pending": "",
}


@register.filter
def state_badge(state) -> str:
    """CSS class of the badge for a change / rollout / host run state."""
    return BADGES.get(str(state), "")


@register.filter
def get_item(mapping, key):
    return (mapping or {}).get(key)


@register.filter
def host_run_message(run) -> str:
    """The host row's message; while the host reboots, the live "waiting for <host> to come back
    (2m10s)" from the reboot step's start (steps prefetched)."""
    from changes.execution.boot_wait import run_message

    return run_message(run)


@register.filter
def pretty_json(value) -> str:
    """A request or a result as indented JSON (true/false/null, double quotes), never a Python repr;
    text that is JSON is indented too; other text is shown as it is."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


@register.filter
def outcome_words(step) -> str:
    """ok / running / failed: <code>, without repeating the transport's kind when it says the same."""
    if step.finished_at is None:
        return "running"
    if step.ok:
        return "ok"
    return f"failed: {step.error_code or step.kind_of_result or 'error'}"
