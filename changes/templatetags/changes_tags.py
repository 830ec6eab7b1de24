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
