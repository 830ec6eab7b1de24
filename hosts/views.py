"""Host pages: list, detail, NIC detail, add/edit, bulk import, refresh (discovery).

Views stay thin: reading is annotated querysets (hosts/filters.py), writing goes through
hosts.services (the discovery engineer's create_host / update_host / import_hosts /
request_discovery). Every page costs a constant number of queries whatever the fleet size.
"""

from datetime import timedelta

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Prefetch
from django.http import HttpResponseBadRequest, HttpResponseRedirect, QueryDict
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from audit.models import AuditEvent
from console.dispatch import BROKER_DOWN
from console.htmx import render_page, wants_partial
from console.roles import has_permission, require_permission

from . import importers, selection, services, truth
from .filters import DEFAULT_PER_PAGE, PER_PAGE_CHOICES, HostFilterSet, annotated_hosts
from .forms import HostForm, ImportConfirmForm, ImportUploadForm
from .intents import annotate_nics, annotate_vfs
from .models import Hypervisor, LibvirtNetwork, Nic, VirtualFunction

TIMELINE_LENGTH = 50
# A discovery requested longer ago than this and still without a result stops being polled:
# the page then says the result is overdue instead of polling forever (e.g. no worker running).
DISCOVERY_POLL_LIMIT = timedelta(minutes=10)
# One host's inventory takes seconds; longer means the workers are busy (or none is running).
DISCOVERY_SLOW = timedelta(minutes=1)
# Tokens GRUB itself puts on the kernel command line (not from GRUB_CMDLINE_LINUX*).
BOOTLOADER_TOKENS = {"BOOT_IMAGE", "root", "ro", "rw", "initrd", "quiet", "splash"}


# --------------------------------------------------------------------------------------------
# List
# --------------------------------------------------------------------------------------------

def _per_page(params) -> int:
    try:
        value = int(params.get("per_page", DEFAULT_PER_PAGE))
    except ValueError:
        return DEFAULT_PER_PAGE
    return value if value in PER_PAGE_CHOICES else DEFAULT_PER_PAGE


def _filtered_hosts(params):
    """(filterset, queryset, status) of the host list for these GET parameters."""
    filterset = HostFilterSet(params or None, queryset=annotated_hosts())
    if filterset.is_bound and not filterset.is_valid():
        return filterset, Hypervisor.objects.none(), 400
    return filterset, filterset.qs, 200


def _selection_context(request, queryset, hosts) -> dict:
    """What the operator's selection looks like from this page (two queries, only when not empty)."""
    ids = selection.selected_ids(request.session)
    shown = [host.pk for host in hosts]
    chosen = set(ids)
    context = {"selection": chosen, "page_ids": shown, "selected_count": 0, "selected_matching": 0,
               "page_all_selected": bool(shown) and chosen.issuperset(shown)}
    if ids:
        context["selected_count"] = Hypervisor.objects.filter(pk__in=ids).count()
        context["selected_matching"] = queryset.filter(pk__in=ids).count()
        context["selected_elsewhere"] = sorted(chosen - set(shown))
    return context


def _list_context(request, params) -> tuple[dict, int]:
    """The hosts table for these GET parameters (filters, sort, page), as the operator sees it."""
    filterset, queryset, status = _filtered_hosts(params)
    per_page = _per_page(params)
    page = Paginator(queryset, per_page).get_page(params.get("page"))
    hosts = list(page.object_list)
    for host in hosts:
        host.discovering = _discovery_context(host)["discovery_pending"]
    query = params.urlencode()
    context = {
        "filter": filterset,
        "form": filterset.form,
        "page": page,
        "hosts": hosts,
        "per_page": per_page,
        "per_page_choices": PER_PAGE_CHOICES,
        "sort": params.get("sort", ""),
        "list_query": query,
        "list_url": reverse("hosts:list") + (f"?{query}" if query else ""),
        "polling": any(host.discovering for host in hosts),
        "is_partial": wants_partial(request),
    }
    if has_permission(request.user, "operate"):
        context.update(_selection_context(request, queryset, hosts))
    return context, status


@require_GET
@require_permission("view_fleet")
def host_list(request):
    context, status = _list_context(request, request.GET)
    return render_page(request, "hosts/list.html", context, partial="hosts/_table.html", status=status)


def _ids(values) -> list[int]:
    return [int(v) for v in values if v.isascii() and v.isdigit() and len(v) <= 18]


@require_POST
@require_permission("operate")
def host_selection(request):
    """Change the selection.

    POST: op (selection.OPS), shown (the ids of the rows on the page), hosts (the checked ones),
    query (the list's query string: for "matching", and to come back to).
    A ticked or unticked row (op "sync", htmx) answers with the selection bar only, so the rows,
    whose boxes the browser already shows, are not redrawn under the next click. Everything else
    answers 303 to the list as it was (filter, sort, page), which redraws the table."""
    op = request.POST.get("op", "sync")
    if op not in selection.OPS:
        return HttpResponseBadRequest(f"op must be one of {', '.join(selection.OPS)}")
    query = QueryDict(request.POST.get("query", ""))
    matching = ()
    if op == "matching":
        _filterset, queryset, status = _filtered_hosts(query)
        if status != 200:
            return HttpResponseBadRequest("the filter is not valid")
        # One id past the limit is enough to know the selection would be too big.
        matching = list(queryset.values_list("pk", flat=True)[: selection.LIMIT + 1])
    refused = selection.update(request.session, op, shown=_ids(request.POST.getlist("shown")),
                               checked=_ids(request.POST.getlist("hosts")), matching=matching)
    if refused:
        messages.warning(request, refused)
    if op == "sync" and wants_partial(request):
        context, status = _list_context(request, query)
        context["oob"] = True  # the page checkbox follows too
        return render_page(request, "hosts/_selection_bar.html", context, status=status)
    target = reverse("hosts:list") + (f"?{query.urlencode()}" if query else "")
    return HttpResponseRedirect(target, status=303)


# --------------------------------------------------------------------------------------------
# Detail
# --------------------------------------------------------------------------------------------

def cmdline_comparison(host) -> dict:
    """Tokens of the running /proc/cmdline next to the configured GRUB command line.

    running: [(token, state)] with state "both" (also configured), "bootloader" (added by GRUB
    itself, e.g. BOOT_IMAGE=, root=) or "running-only" (not in the configuration any more).
    configured: [(token, state)] for GRUB_CMDLINE_LINUX_DEFAULT with state "both" or
    "configured-only" (not active: regenerate the boot config and/or reboot).
    """
    running = host.cmdline.split()
    default = host.grub_cmdline_default.split()
    linux = host.grub_cmdline_linux.split()
    configured = set(linux) | set(default)
    running_set = set(running)

    def running_state(token):
        if token in configured:
            return "both"
        if token.split("=", 1)[0] in BOOTLOADER_TOKENS:
            return "bootloader"
        return "running-only"

    return {
        "running": [(t, running_state(t)) for t in running],
        "configured": [(t, "both" if t in running_set else "configured-only") for t in default],
        "linux": [(t, "both" if t in running_set else "configured-only") for t in linux],
        "differs": any(t not in running_set for t in configured)
        or any(running_state(t) == "running-only" for t in running),
    }


def discovery_pending(host) -> bool:
    requested = host.discovery_requested_at
    if requested is None:
        return False
    return host.last_discovery_at is None or requested > host.last_discovery_at


def _discovery_context(host) -> dict:
    pending = discovery_pending(host)
    waited = timezone.now() - host.discovery_requested_at if pending else timedelta(0)
    overdue = waited > DISCOVERY_POLL_LIMIT
    return {"host": host, "discovery_pending": pending and not overdue, "discovery_overdue": overdue,
            "discovery_slow": pending and DISCOVERY_SLOW < waited <= DISCOVERY_POLL_LIMIT}


def _detail_context(pk) -> dict:
    nics = Nic.objects.order_by("-present", "name", "pci_address").prefetch_related(
        Prefetch("vfs", queryset=VirtualFunction.objects.order_by("index"))
    )
    host = get_object_or_404(
        Hypervisor.objects.select_related("credential", "host_key_accepted_by").prefetch_related(
            "labels", "intents", Prefetch("nics", queryset=nics),
            Prefetch("libvirt_networks", queryset=LibvirtNetwork.objects.order_by("name")),
        ),
        pk=pk,
    )
    context = _discovery_context(host)
    host_nics = list(host.nics.all())
    annotate_nics(host, host_nics)
    for nic in host_nics:
        annotate_vfs(nic, nic.vfs.all())
    context.update(
        truth.host_truth(host, host_nics),
        nics=host_nics,
        cmdline=cmdline_comparison(host),
        events=list(AuditEvent.objects.filter(host_id=host.pk)[:TIMELINE_LENGTH]),
    )
    return context


@require_GET
@require_permission("view_fleet")
def host_detail(request, pk):
    """The host page. While a discovery runs, the whole page (header, facts, NICs, VFs, command line,
    timeline) polls itself as the `hosts/_detail.html` partial, so it shows the result when it lands."""
    return render_page(request, "hosts/detail.html", _detail_context(pk), partial="hosts/_detail.html")


@require_POST
@require_permission("operate")
def host_refresh(request, pk):
    host = get_object_or_404(Hypervisor, pk=pk)
    with transaction.atomic():
        ticket = services.request_discovery(host, request.user)
    delayed = ticket is not None and ticket.delayed
    if not wants_partial(request):
        if delayed:
            messages.error(request, BROKER_DOWN)
        return HttpResponseRedirect(host.get_absolute_url(), status=303)
    context = _detail_context(pk) | {"broker_down": BROKER_DOWN if delayed else ""}
    return render_page(request, "hosts/_detail.html", context, status=503 if delayed else 200)


@require_GET
@require_permission("view_fleet")
def nic_detail(request, pk):
    nic = get_object_or_404(
        Nic.objects.select_related("host").prefetch_related(
            Prefetch("vfs", queryset=VirtualFunction.objects.order_by("index"))
        ),
        pk=pk,
    )
    vfs = list(nic.vfs.all())
    annotate_nics(nic.host, [nic])
    annotate_vfs(nic, vfs)
    pools = [n for n in LibvirtNetwork.objects.filter(host_id=nic.host_id).order_by("name") if nic.name in n.pfs]
    context = {"nic": nic, "host": nic.host, "vfs": vfs, "pools": pools, **truth.nic_truth(nic)}
    return render_page(request, "hosts/nic.html", context)


# --------------------------------------------------------------------------------------------
# Add / edit (hosts.services validates, writes all or nothing, audits)
# --------------------------------------------------------------------------------------------

def _add_service_errors(form, exc: ValidationError) -> None:
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc)
        return
    for key, errors in exc.message_dict.items():
        field = {"labels": "labels_text"}.get(key, key)
        form.add_error(field if field in form.fields else None, errors)


def _edit(request, form, context):
    status = 200
    if request.method == "POST":
        if form.is_valid():
            fields = form.host_fields()
            try:
                if form.instance.pk is None:
                    host = services.create_host(fields, request.user, request=request)
                else:
                    host = services.update_host(form.instance, fields, request.user, request=request)
            except ValidationError as exc:
                _add_service_errors(form, exc)
            else:
                return HttpResponseRedirect(host.get_absolute_url(), status=303)
        status = 400
    return render_page(request, "hosts/form.html", {"form": form, **context}, status=status)


@require_http_methods(["GET", "POST"])
@require_permission("operate")
def host_add(request):
    # Bound on every POST, even an empty one, so an empty submission shows "this field is required".
    form = HostForm(request.POST if request.method == "POST" else None)
    return _edit(request, form, {"title": "Add host", "host": None})


@require_http_methods(["GET", "POST"])
@require_permission("operate")
def host_delete(request, pk):
    """GET: what deleting removes and keeps; POST: delete (refused while a change names the host)."""
    host = get_object_or_404(Hypervisor, pk=pk)
    context = {"host": host, "nic_count": host.nics.count(), "error": None}
    if request.method == "POST":
        try:
            services.delete_host(host, request.user, request=request)
        except services.HostInUse as exc:
            context["error"] = exc.message
            return render_page(request, "hosts/delete.html", context, status=409)
        messages.success(request, f"{host.name} was removed from the inventory; its audit history stays.")
        return redirect("hosts:list")
    return render_page(request, "hosts/delete.html", context)


@require_http_methods(["GET", "POST"])
@require_permission("operate")
def host_edit(request, pk):
    hosts = Hypervisor.objects.select_related("credential").prefetch_related("labels")
    host = get_object_or_404(hosts, pk=pk)
    form = HostForm(request.POST if request.method == "POST" else None, instance=host)
    return _edit(request, form, {"title": f"Edit {host.name}", "host": host})


# --------------------------------------------------------------------------------------------
# Bulk import: upload → preview (nothing written; every row's errors) → confirm (all or nothing)
# --------------------------------------------------------------------------------------------

@require_http_methods(["GET", "POST"])
@require_permission("operate")
def host_import(request):
    if request.method == "GET":
        return render_page(request, "hosts/import.html", {"form": ImportUploadForm(), "preview": None})

    if "confirm" in request.POST:
        confirm = ImportConfirmForm(request.POST)
        if confirm.is_valid():
            data = confirm.cleaned_data
            try:
                report = importers.commit(
                    data["text"], data["format"], request.user, data["default_credential"],
                    filename=data["filename"], request=request,
                )
            except ValidationError:
                pass  # changed since the preview (e.g. a host added meanwhile): show the new preview
            else:
                created = len(report.created)
                messages.success(request, f"Imported {created} host{'s' if created != 1 else ''}; "
                                          "discovering them over SSH now.")
                return HttpResponseRedirect(reverse("hosts:list"), status=303)
            preview = importers.preview(
                data["text"], data["format"], request.user, data["default_credential"],
                filename=data["filename"],
            )
        else:
            preview = importers.Preview("", [], [e for errors in confirm.errors.values() for e in errors])
        context = {"form": ImportUploadForm(), "preview": preview, "confirm_form": None}
        return render_page(request, "hosts/import.html", context, status=400)

    form = ImportUploadForm(request.POST, request.FILES)
    context = {"form": form, "preview": None}
    if not form.is_valid():
        return render_page(request, "hosts/import.html", context, status=400)
    data = form.cleaned_data
    preview = importers.preview(data["text"], data["format"], request.user, data["default_credential"],
                                filename=data["file"].name)
    context["preview"] = preview
    if not preview.ok:
        return render_page(request, "hosts/import.html", context, status=400)
    context["confirm_form"] = ImportConfirmForm(initial={
        "text": data["text"], "format": preview.format, "filename": data["file"].name,
        "default_credential": data["default_credential"],
    })
    return render_page(request, "hosts/import.html", context)
