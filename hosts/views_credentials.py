"""Administrator pages: SSH credentials and host-key trust.

The private key of a credential is never rendered, logged or exported: pages show the public key
and its fingerprint; POST bodies carrying a key are marked sensitive so Django's error reports
leave them out.
"""

from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from console.htmx import render_page
from console.roles import require_permission

from . import credentials as service
from . import hostkeys
from .credential_forms import AcceptHostKeyForm, CredentialEditForm, CredentialForm, KeyPairForm
from .models import Credential, Hypervisor


def _bound(request):
    """(data, files) for a POST, even an empty one (so it is answered with errors), else (None, None)."""
    if request.method == "POST":
        return request.POST, request.FILES
    return None, None


def _see_other(url: str) -> HttpResponseRedirect:
    return HttpResponseRedirect(url, status=303)


@require_GET
@require_permission("administer")
def credential_list(request):
    credentials = Credential.objects.annotate(host_count=Count("hosts")).order_by("name")
    return render_page(request, "hosts/credentials.html", {"credentials": credentials})


@sensitive_variables("key_text")
@sensitive_post_parameters("private_key")
@require_http_methods(["GET", "POST"])
@require_permission("administer")
def credential_add(request):
    form = CredentialForm(*_bound(request))
    status = 200
    if request.method == "POST":
        if form.is_valid():
            key_text = form.cleaned_data["key_text"]
            try:
                credential = service.create_credential(
                    form.cleaned_data["name"], key_text, form.cleaned_data["username"], actor=request.user
                )
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                return _see_other(reverse("hosts:credentials") + f"#credential-{credential.pk}")
        status = 400
    return render_page(request, "hosts/credential_form.html",
                       {"form": form, "title": "Add credential", "credential": None, "multipart": True},
                       status=status)


@require_http_methods(["GET", "POST"])
@require_permission("administer")
def credential_edit(request, pk):
    credential = get_object_or_404(Credential, pk=pk)
    form = CredentialEditForm(*_bound(request)[:1], instance=Credential.objects.get(pk=pk))
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                service.update_credential(
                    credential, name=form.cleaned_data["name"], username=form.cleaned_data["username"],
                    actor=request.user,
                )
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                return _see_other(reverse("hosts:credentials") + f"#credential-{credential.pk}")
        status = 400
    return render_page(request, "hosts/credential_form.html",
                       {"form": form, "title": f"Edit {credential.name}", "credential": credential},
                       status=status)


@sensitive_variables("key_text")
@sensitive_post_parameters("private_key")
@require_http_methods(["GET", "POST"])
@require_permission("administer")
def credential_rotate(request, pk):
    credential = get_object_or_404(Credential, pk=pk)
    form = KeyPairForm(*_bound(request))
    status = 200
    if request.method == "POST":
        if form.is_valid():
            key_text = form.cleaned_data["key_text"]
            try:
                service.replace_key_pair(credential, key_text, actor=request.user)
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                return _see_other(reverse("hosts:credentials") + f"#credential-{credential.pk}")
        status = 400
    return render_page(request, "hosts/credential_form.html",
                       {"form": form, "title": f"Replace the key pair of {credential.name}",
                        "credential": credential, "multipart": True, "rotate": True},
                       status=status)


@require_http_methods(["GET", "POST"])
@require_permission("administer")
def credential_delete(request, pk):
    credential = get_object_or_404(Credential.objects.annotate(host_count=Count("hosts")), pk=pk)
    error = ""
    status = 200
    if request.method == "POST":
        try:
            service.delete_credential(credential, actor=request.user)
        except service.CredentialInUse as exc:
            error, status = str(exc), 409
        else:
            return _see_other(reverse("hosts:credentials"))
    return render_page(request, "hosts/credential_delete.html",
                       {"credential": credential, "error": error}, status=status)


# --------------------------------------------------------------------------------------------
# Host-key trust
# --------------------------------------------------------------------------------------------

def _key_context(host, form=None, error=""):
    return {
        "host": host,
        "form": form or AcceptHostKeyForm(initial={"fingerprint": host.pending_host_key_fingerprint}),
        "error": error,
        "mismatch": host.status == Hypervisor.Status.HOST_KEY_MISMATCH,
        "trusted": hostkeys.is_trusted(host),
    }


@require_GET
@require_permission("administer")
def host_key(request, pk):
    host = get_object_or_404(Hypervisor.objects.select_related("host_key_accepted_by"), pk=pk)
    return render_page(request, "hosts/host_key.html", _key_context(host))


@require_POST
@require_permission("administer")
def host_key_accept(request, pk):
    host = get_object_or_404(Hypervisor.objects.select_related("host_key_accepted_by"), pk=pk)
    form = AcceptHostKeyForm(request.POST)
    if form.is_valid():
        try:
            hostkeys.accept_host_key(host, request.user, form.cleaned_data["reason"],
                                     fingerprint=form.cleaned_data["fingerprint"])
        except hostkeys.HostKeyError as exc:
            form.add_error(None, str(exc))
            return render_page(request, "hosts/host_key.html", _key_context(host, form), status=409)
        except PermissionDenied:
            raise
        return _see_other(reverse("hosts:key", args=[host.pk]))
    return render_page(request, "hosts/host_key.html", _key_context(host, form), status=400)
