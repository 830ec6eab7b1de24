"""Recording audit events. Every part of the console records through `record()`."""

from django.utils import timezone

from console.middleware import current_client_ip, current_request_id

from .models import AuditEvent

SECRET_KEYS = {"private_key", "password", "secret", "token", "private_key_encrypted"}


def redact(data):
    """Drop secret values anywhere in a structure (keys named like secrets)."""
    if isinstance(data, dict):
        return {k: ("[redacted]" if k.lower() in SECRET_KEYS else redact(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data


def record(action, *, actor=None, actor_name=None, obj=None, host=None, change=None, data=None, request=None):
    """Record one event inside the caller's transaction (an action rolled back leaves none).

    actor: a User, or None for the system; actor_name overrides the shown name ("worker").
    obj: the model instance acted on; host/change: set for the per-host / per-change timelines.
    """
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    return AuditEvent.objects.create(
        created_at=timezone.now(),
        actor=actor,
        actor_name=actor_name or (actor.get_username() if actor else "system"),
        action=action,
        object_type=obj._meta.label_lower if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        object_repr=str(obj)[:300] if obj is not None else "",
        host_id=host.pk if host is not None else None,
        host_name=host.name if host is not None else "",
        change_id=change.pk if change is not None else None,
        data=redact(data or {}),
        client_ip=(request.META.get("REMOTE_ADDR") if request is not None else current_client_ip.get()),
        request_id=(getattr(request, "request_id", "") if request is not None else current_request_id.get() or ""),
    )
