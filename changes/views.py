"""Change pages: list, wizard with live plan preview, detail with the live rollout, approval
queue, step transcripts, and the POST-only actions. Views are thin: services decide."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from audit.models import AuditEvent
from console.htmx import render_page, wants_partial
from console.roles import has_permission, require_permission

from . import approvals, operations, retries, services
from .filters import ChangeFilter, annotated_changes
from .forms import CancelForm, ChangeForm, VoteForm, is_db_id
from .models import Approval, ChangeRequest, HostRun, PlanItem, Step
from .progress import progress_of

PER_PAGE = 50
TIMELINE_LIMIT = 300


@require_permission("view_fleet")
@require_GET
def change_list(request):
    filterset = ChangeFilter(request.GET or None, queryset=annotated_changes().order_by("-id"))
    page = Paginator(filterset.qs, PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render_page(
        request,
        "changes/list.html",
        {"filter": filterset, "page": page, "changes": page.object_list, "query": query.urlencode()},
        partial="changes/_list_table.html",
    )


def _plan_context(plan) -> dict:
    return {"plan": plan, "counts": plan.counts}


@require_permission("operate")
@require_http_methods(["GET", "POST"])
def change_new(request):
    if request.method == "POST":
        form = ChangeForm(request.POST)
        if form.is_valid():
            try:
                change = services.create_change(form.service_data(), request.user, request=request)
            except ValidationError as exc:
                form.add_service_errors(exc)
            else:
                messages.success(
                    request, f"Change #{change.pk} saved as a draft. Review the plan, then submit it."
                )
                return redirect(change)
        return render_page(request, "changes/form.html", {"form": form, "change": None}, status=400)
    # ?host= from a host page, ?hosts= from the hosts table's bulk-select form.
    given = request.GET.getlist("host") + request.GET.getlist("hosts")
    if len(given) > 1000 or not all(is_db_id(h) for h in given):
        return HttpResponseBadRequest("host must be a host id (a whole number), e.g. ?host=1&host=2")
    host_ids = [int(h) for h in given]
    form = ChangeForm(initial={"hosts": host_ids})
    return render_page(request, "changes/form.html", {"form": form, "change": None})


@require_permission("operate")
@require_http_methods(["GET", "POST"])
def change_edit(request, pk):
    change = get_object_or_404(ChangeRequest, pk=pk)
    if change.state not in services.EDITABLE or change.requested_by_id != request.user.pk:
        raise PermissionDenied("only the requester can edit a draft or submitted change")
    too_much = ChangeForm.cannot_hold(change)
    if too_much:
        # Saving the form would silently drop what it does not show: refuse, say why.
        messages.error(request, f"This change cannot be edited here: {too_much}. Edit it through the API.")
        return redirect(change)
    if request.method == "POST":
        form = ChangeForm(request.POST)
        if form.is_valid():
            try:
                services.update_change(change.pk, form.service_data(), request.user, request=request)
            except ValidationError as exc:
                form.add_service_errors(exc)
            except services.ChangeError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(request, "Change updated. It is a draft again: submit it for approval.")
                return redirect(change)
        return render_page(request, "changes/form.html", {"form": form, "change": change}, status=400)
    form = ChangeForm.for_change(change)
    return render_page(request, "changes/form.html", {"form": form, "change": change})


@require_permission("operate")
@require_POST
def change_preview(request):
    """The live plan preview (htmx): nothing is written."""
    form = ChangeForm(request.POST)
    context = {"form": form, "plan": None, "picker": form.picker()}
    if not (request.POST.getlist("hosts") or request.POST.get("filter", "").strip()):
        # Nothing targeted yet (the wizard's first load): the neutral hint, not a list of errors.
        neutral = {"form": ChangeForm(), "plan": None, "picker": context["picker"]}
        return render_page(request, "changes/preview.html", neutral, partial="changes/_preview.html")
    if form.is_valid():
        try:
            _clean, plan = services.preview_plan(form.service_data())
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            context.update(_plan_context(plan))
            return render_page(request, "changes/preview.html", context, partial="changes/_preview.html")
    # While someone types, an incomplete form is the preview's normal state, not a failed request:
    # htmx gets it as 200 (a 4xx would be logged by the browser on every keystroke); a plain POST
    # gets 422.
    status = 200 if wants_partial(request) else 422
    return render_page(request, "changes/preview.html", context, partial="changes/_preview.html", status=status)


def _latest_rollout(change):
    runs = HostRun.objects.select_related("host", "plan_item").prefetch_related(
        Prefetch("steps", queryset=Step.objects.order_by("seq"))
    )
    return change.rollouts.order_by("-attempt").prefetch_related(Prefetch("host_runs", queryset=runs)).first()


def _history(change) -> list:
    return list(AuditEvent.objects.filter(change_id=change.pk).order_by("-id")[:TIMELINE_LIMIT])


def _rollout_context(change, rollout) -> dict:
    runs = list(rollout.host_runs.all()) if rollout else []
    return {
        "change": change,
        "rollout": rollout,
        "runs": runs,
        "progress": progress_of(runs),
        "polling": bool(rollout) and not rollout.is_finished,
    }


@require_permission("view_fleet")
@require_GET
def change_detail(request, pk):
    change = get_object_or_404(ChangeRequest.objects.select_related("requested_by"), pk=pk)
    items = list(PlanItem.objects.filter(change=change).select_related("host").order_by("order"))
    votes = list(Approval.objects.filter(change=change).select_related("user").order_by("created_at", "id"))
    current_votes = [v for v in votes if approvals.counts(v, change)]
    approvals_in = len({v.user_id for v in current_votes if v.decision == Approval.Decision.APPROVE})
    rollout = _latest_rollout(change)
    earlier = list(change.rollouts.exclude(pk=rollout.pk).order_by("attempt")) if rollout else []
    events = _history(change)
    user = request.user
    context = {
        "change": change,
        "items": items,
        "votes": votes,
        "approvals_in": approvals_in,
        "plan_errors": sum(len(i.errors) for i in items),
        "plan_warnings": sum(len(i.warnings) for i in items),
        "is_requester": change.requested_by_id == user.pk,
        "can_edit": change.state in services.EDITABLE
        and change.requested_by_id == user.pk
        and has_permission(user, "operate"),
        "can_submit": change.state == ChangeRequest.State.DRAFT
        and change.requested_by_id == user.pk
        and has_permission(user, "operate"),
        "can_vote": approvals.can_vote(change, user, votes),
        "can_cancel": services.can_cancel(change, user),
        "can_retry": retries.can_retry(change, user),
        "vote_form": VoteForm(
            initial={"plan_hash": change.plan_hash, "approval_hash": approvals.approval_hash(change)}
        ),
        "cancel_form": CancelForm(),
        "events": events,
        "operation_summaries": operations.summaries(change.operations),
        "retry_offer": retries.retry_offer(change) if retries.can_retry(change, user) else None,
        "earlier_rollouts": earlier,
    }
    context.update(_rollout_context(change, rollout))
    return render_page(request, "changes/detail.html", context)


@require_permission("view_fleet")
@require_GET
def change_rollout(request, pk):
    """The live rollout section (polled by htmx every 2 s while the rollout is active)."""
    change = get_object_or_404(ChangeRequest, pk=pk)
    context = _rollout_context(change, _latest_rollout(change))
    if wants_partial(request):  # the header's state badge and the history follow the rollout live
        context.update(oob=True, events=_history(change))
    response = render_page(request, "changes/rollout.html", context, partial="changes/_rollout.html")
    if wants_partial(request) and not context["polling"]:
        # The rollout just finished: reload the page once so its header and actions show the outcome.
        response["HX-Refresh"] = "true"
    return response


@require_permission("approve")
@require_GET
def approval_queue(request):
    waiting = list(annotated_changes().filter(state=ChangeRequest.State.SUBMITTED).order_by("submitted_at"))
    for change in waiting:
        change.mine = change.requested_by_id == request.user.pk
    return render_page(request, "changes/queue.html", {"changes": waiting})


@require_permission("view_fleet")
@require_GET
def step_detail(request, pk):
    step = get_object_or_404(
        Step.objects.select_related("host_run__host", "host_run__rollout__change"), pk=pk
    )
    return render_page(
        request,
        "changes/step.html",
        {"step": step, "change": step.host_run.rollout.change},
        partial="changes/_step.html",
    )


# ---------------------------------------------------------------------------------------------
# POST actions
# ---------------------------------------------------------------------------------------------


def _done(request, change_id, *, ok: str | None = None, error: str | None = None):
    if error:
        messages.error(request, error)
    elif ok:
        messages.success(request, ok)
    response = redirect("changes:detail", pk=change_id)
    if wants_partial(request):
        response["HX-Redirect"] = response["Location"]
    return response


def _act(request, pk, action, ok_message):
    get_object_or_404(ChangeRequest.objects.only("pk"), pk=pk)
    try:
        action()
    except services.ChangeError as exc:
        return _done(request, pk, error=exc.message)
    return _done(request, pk, ok=ok_message)


@require_permission("operate")
@require_POST
def change_submit(request, pk):
    return _act(
        request,
        pk,
        lambda: services.submit_change(pk, request.user, request=request),
        "Submitted for approval.",
    )


def _vote(request, pk, decide, done_message):
    """Approve and reject share one form and one path; the four-eyes rules are in `decide`."""
    form = VoteForm(request.POST)
    if not form.is_valid():
        return _done(request, pk, error="The vote form was incomplete; reload the page.")
    data = form.cleaned_data
    return _act(
        request,
        pk,
        lambda: decide(
            pk,
            request.user,
            comment=data["comment"],
            plan_hash=data["plan_hash"],
            approval_hash=data["approval_hash"],
            request=request,
        ),
        done_message,
    )


@require_permission("approve")
@require_POST
def change_approve(request, pk):
    return _vote(request, pk, approvals.approve, "Your approval is recorded.")


@require_permission("approve")
@require_POST
def change_reject(request, pk):
    return _vote(request, pk, approvals.reject, "The change is rejected.")


@require_permission("operate")
@require_POST
def change_cancel(request, pk):
    form = CancelForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    return _act(
        request,
        pk,
        lambda: services.cancel_change(pk, request.user, reason=reason, request=request),
        "Cancelled. Hosts not started will not run; a host in the middle of a step finishes that step; a "
        "host waiting to come back from a reboot is no longer waited for (the change says which). "
        "Nothing is rolled back.",
    )


@require_permission("operate")
@require_POST
def change_retry(request, pk):
    return _act(
        request,
        pk,
        lambda: retries.retry_change(pk, request.user, request=request),
        "Retrying the hosts that did not succeed as a new rollout of the same approved plan.",
    )

