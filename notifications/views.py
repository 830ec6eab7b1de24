"""Webhook pages (admins): list, create (the secret shown once), edit, delete, test, and the
delivery log; a log of every recent delivery, e-mails included."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.http import require_POST

from console.htmx import render_page
from console.roles import require_permission

from . import services
from .forms import WebhookForm
from .models import Topic, Webhook


def _form_errors(form, exc: ValidationError) -> None:
    for field, errors in exc.message_dict.items():
        for error in errors:
            form.add_error(field if field in form.fields else None, error)


def _detail(request, webhook, *, new_secret=None, status=200):
    context = {"webhook": webhook, "attempts": services.delivery_log(webhook), "new_secret": new_secret,
               "topics": dict(Topic.choices)}
    return render_page(request, "notifications/webhook.html", context,
                       partial="notifications/_delivery_log.html", status=status)


@require_permission("administer")
def webhook_list(request):
    webhooks = Webhook.objects.order_by("name")
    return render_page(request, "notifications/webhooks.html", {"webhooks": webhooks, "topics": dict(Topic.choices)})


@require_permission("administer")
def webhook_create(request):
    form = WebhookForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            webhook, secret = services.create_webhook(form.cleaned_data, request.user, request=request)
        except ValidationError as exc:
            _form_errors(form, exc)
        else:
            # Answered directly (no redirect): the only time the secret is ever shown.
            return _detail(request, webhook, new_secret=secret, status=201)
    status = 400 if request.method == "POST" else 200
    return render_page(request, "notifications/webhook_form.html", {"form": form, "webhook": None}, status=status)


@require_permission("administer")
def webhook_detail(request, pk):
    return _detail(request, get_object_or_404(Webhook, pk=pk))


@require_permission("administer")
def webhook_edit(request, pk):
    webhook = get_object_or_404(Webhook, pk=pk)
    initial = {"name": webhook.name, "payload_format": webhook.payload_format, "topics": webhook.topics,
               "enabled": webhook.enabled}
    form = WebhookForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            services.update_webhook(webhook.pk, form.cleaned_data, request.user, request=request)
        except ValidationError as exc:
            _form_errors(form, exc)
        else:
            messages.success(request, f"Webhook {form.cleaned_data['name']} saved.")
            return HttpResponseRedirect(reverse("notifications:webhook", args=[webhook.pk]))
    status = 400 if request.method == "POST" else 200
    return render_page(request, "notifications/webhook_form.html", {"form": form, "webhook": webhook}, status=status)


@require_POST
@require_permission("administer")
def webhook_rotate(request, pk):
    webhook = get_object_or_404(Webhook, pk=pk)
    webhook, secret = services.rotate_secret(webhook.pk, request.user, request=request)
    return _detail(request, webhook, new_secret=secret)


@require_permission("administer")
def webhook_delete(request, pk):
    webhook = get_object_or_404(Webhook, pk=pk)
    if request.method == "POST":
        services.delete_webhook(webhook.pk, request.user, request=request)
        messages.success(request, f"Webhook {webhook.name} deleted.")
        return HttpResponseRedirect(reverse("notifications:webhooks"))
    return render_page(request, "notifications/webhook_delete.html", {"webhook": webhook})


@require_POST
@require_permission("administer")
def webhook_test(request, pk):
    webhook = get_object_or_404(Webhook, pk=pk)
    services.send_test(webhook.pk, request.user, request=request)
    messages.success(request, "A test delivery is queued; its attempts appear below.")
    return HttpResponseRedirect(reverse("notifications:webhook", args=[webhook.pk]))


@require_permission("administer")
def deliveries(request):
    return render_page(request, "notifications/deliveries.html", {"deliveries": services.recent_deliveries()})
