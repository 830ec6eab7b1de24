"""Audit review: the filtered list (keyset pages), one event, and streamed CSV / JSON Lines export."""

import json

from django.apps import apps
from django.core.exceptions import BadRequest
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from console.htmx import render_page
from console.roles import require_permission

from .export import FORMATS, LIST_FIELDS, streaming_response
from .filters import MAX_ID, AuditEventFilter
from .models import AuditEvent
from .services import chain_state, record

PAGE_SIZE = 50


def _int_param(request, name):
    raw = request.GET.get(name, "")
    if not raw:
        return None
    if not raw.isdigit() or int(raw) > MAX_ID:
        raise BadRequest(f"{name} must be an event number")
    return int(raw)


def _filtered(request):
    filterset = AuditEventFilter(request.GET or None, queryset=AuditEvent.objects.all())
    if filterset.is_bound and not filterset.is_valid():
        return filterset, None
    return filterset, filterset.qs


@require_permission("audit")
def event_list(request):
    """Newest first, PAGE_SIZE a page, keyset pagination (?before=<id> / ?after=<id>): one indexed
    range scan per page and no COUNT(*), whatever the size of the history."""
    filterset, queryset = _filtered(request)
    before, after = _int_param(request, "before"), _int_param(request, "after")
    events, has_older, has_newer = [], False, False
    if queryset is not None:
        queryset = queryset.only(*LIST_FIELDS)
        if after is not None:
            rows = list(queryset.filter(id__gt=after).order_by("id")[: PAGE_SIZE + 1])
            has_newer = len(rows) > PAGE_SIZE
            events = rows[:PAGE_SIZE][::-1]
            has_older = True
        else:
            if before is not None:
                queryset = queryset.filter(id__lt=before)
            rows = list(queryset.order_by("-id")[: PAGE_SIZE + 1])
            has_older = len(rows) > PAGE_SIZE
            events = rows[:PAGE_SIZE]
            has_newer = before is not None
    params = request.GET.copy()
    for key in ("before", "after"):
        params.pop(key, None)
    status = 422 if queryset is None else 200
    context = {
        "filter": filterset,
        "events": events,
        "older_id": events[-1].id if events and has_older else None,
        "newer_id": events[0].id if events and has_newer else None,
        "query": params.urlencode(),
        "chain": chain_state(),
    }
    return render_page(request, "audit/list.html", context, partial="audit/_list.html", status=status)


def _before_after(data):
    """Rows (key, before, after) when the event carries before/after dicts."""
    before, after = data.get("before"), data.get("after")
    if not isinstance(before, dict) or not isinstance(after, dict):
        return []
    rows = []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        rows.append(
            {
                "key": key,
                "before": json.dumps(b, ensure_ascii=False),
                "after": json.dumps(a, ensure_ascii=False),
                "changed": b != a,
            }
        )
    return rows


@require_permission("audit")
def event_detail(request, pk):
    event = get_object_or_404(AuditEvent, pk=pk)
    context = {
        "event": event,
        "data_pretty": json.dumps(event.data, indent=2, sort_keys=True, ensure_ascii=False),
        "changes": _before_after(event.data),
        "step_id": event.object_id if event.action.startswith("step.") and event.object_id.isdigit() else "",
        "previous_id": event.id - 1 if event.id > 1 else None,
    }
    return render_page(request, "audit/detail.html", context)


@require_permission("audit")
def export(request):
    """Stream what the filter selects (oldest first) as CSV or JSON Lines; recorded as audit.exported
    before the first row (the row count is not known upfront)."""
    fmt = request.GET.get("format", "csv")
    if fmt not in FORMATS:
        raise BadRequest("format must be csv or jsonl")
    filterset, queryset = _filtered(request)
    if queryset is None:
        raise BadRequest("invalid filter: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in filterset.errors.items()))
    record(
        "audit.exported",
        actor=request.user,
        request=request,
        data={"format": fmt, "filter": filterset.used()},
    )
    return streaming_response(queryset, fmt)


HOST_SUGGESTIONS = 20


@require_GET
@require_permission("audit")
def host_names(request):
    """Completion for the Host filter (htmx fills the input's <datalist>): host names starting
    with what was typed, at most HOST_SUGGESTIONS, one indexed query."""
    typed = request.GET.get("host", "").strip()[:63]
    hosts = apps.get_model("hosts", "Hypervisor").objects.order_by("name")
    names = []
    if typed:
        names = list(hosts.filter(name__istartswith=typed).values_list("name", flat=True)[:HOST_SUGGESTIONS])
    return render(request, "audit/_host_names.html", {"names": names})
