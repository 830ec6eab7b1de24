"""The profile page (who you are, where your roles come from, what you are told) and the two
OIDC endpoints (thin wrappers over mozilla-django-oidc that answer 404 while OIDC is off)."""

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponseRedirect
from django.urls import reverse
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from console.htmx import render_page
from console.roles import require_permission, user_roles
from notifications.forms import SubscriptionForm
from notifications.services import save_subscriptions, subscriptions_of

from . import services


@require_permission("view_fleet")
def profile(request):
    user = request.user
    current = subscriptions_of(user)
    if request.method == "POST":
        form = SubscriptionForm(request.POST, instance=current)
        if form.is_valid():
            save_subscriptions(user, form.cleaned_data, request=request)
            messages.success(request, "Your notification settings are saved.")
            return HttpResponseRedirect(reverse("accounts:profile"))
        status = 400
    else:
        form = SubscriptionForm(instance=current)
        status = 200
    context = {
        "roles": user_roles(user),
        "identities": services.identities_of(user),
        "form": form,
        "email_enabled": settings.NOTIFY_EMAIL_ENABLED,
    }
    return render_page(request, "accounts/profile.html", context, status=status)


def _require_oidc():
    if not getattr(settings, "OIDC_ENABLED", False):
        raise Http404("single sign-on with OpenID Connect is not configured")


def oidc_login(request):
    """Public: starts the authorization-code flow (state, nonce, PKCE challenge in the session)."""
    _require_oidc()
    return OIDCAuthenticationRequestView.as_view()(request)


def oidc_callback(request):
    """Public: the provider sends the browser back here with the code."""
    _require_oidc()
    return OIDCAuthenticationCallbackView.as_view()(request)
