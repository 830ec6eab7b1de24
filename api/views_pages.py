"""Pages of the API for people: the OpenAPI schema, a server-rendered docs page built from it
(no JavaScript, so the console's CSP holds), and the personal token page."""

from datetime import timedelta
from functools import lru_cache

from django import forms
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.views import SpectacularAPIView

from console.roles import require_permission

from .models import ApiToken
from .permissions import ConsolePermission, DeclaredPermissionMixin
from .tokens import create_token, revoke_token


class SchemaView(DeclaredPermissionMixin, SpectacularAPIView):
    """The OpenAPI 3 schema (YAML; `?format=json` or `Accept: application/json` for JSON)."""

    permission_classes = [ConsolePermission]
    method_permissions = {"GET": "view_fleet"}


# ---------------------------------------------------------------------------------------------
# Docs page
# ---------------------------------------------------------------------------------------------

METHODS = ("get", "post", "put", "patch", "delete")


@lru_cache(maxsize=1)
def _operations():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    groups: dict[str, list] = {}
    for path, item in schema.get("paths", {}).items():
        for method in METHODS:
            op = item.get(method)
            if not op:
                continue
            description = op.get("description", "")
            permission = ""
            if "Permission: `" in description:
                permission = description.rsplit("Permission: `", 1)[1].split("`", 1)[0]
                description = description.rsplit("Permission: `", 1)[0].strip()
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            groups.setdefault((op.get("tags") or ["api"])[0], []).append(
                {
                    "method": method.upper(),
                    "path": path,
                    "summary": op.get("summary", ""),
                    "description": description,
                    "permission": permission,
                    "parameters": [p for p in op.get("parameters", []) if p.get("in") == "query"],
                    "body": body.get("$ref", "").rsplit("/", 1)[-1],
                    "responses": sorted(op.get("responses", {})),
                }
            )
    return sorted(groups.items())


@require_http_methods(["GET"])
@require_permission("view_fleet")
def docs(request):
    return render(request, "api/docs.html", {"groups": _operations()})


# ---------------------------------------------------------------------------------------------
# Personal tokens
# ---------------------------------------------------------------------------------------------

EXPIRY_CHOICES = (("", "never"), ("30", "in 30 days"), ("90", "in 90 days"), ("365", "in a year"))


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What will use it, e.g. ci-pipeline or chat-bot.")
    expires = forms.ChoiceField(choices=EXPIRY_CHOICES, required=False, label="Expires")


def _token_context(request, form, new_token=None):
    tokens = ApiToken.objects.filter(user=request.user).order_by("-id")
    return {"form": form, "tokens": tokens, "new_token": new_token}


@require_http_methods(["GET", "POST"])
@require_permission("view_fleet")
def token_page(request):
    """List your tokens; create one (its text is on this response only, never again)."""
    if request.method == "GET":
        return render(request, "api/tokens.html", _token_context(request, TokenForm()))
    form = TokenForm(request.POST)
    if form.is_valid():
        days = form.cleaned_data["expires"]
        expires_at = timezone.now() + timedelta(days=int(days)) if days else None
        try:
            token, text = create_token(
                request.user, form.cleaned_data["name"], expires_at=expires_at, request=request
            )
        except ValidationError as exc:
            form.add_error(None, " ".join(exc.messages))
        else:
            response = render(
                request,
                "api/tokens.html",
                _token_context(request, TokenForm(), {"token": token, "text": text}),
            )
            response["Cache-Control"] = "no-store"
            return response
    return render(request, "api/tokens.html", _token_context(request, form), status=400)


@require_POST
@require_permission("view_fleet")
def token_revoke(request, pk):
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    revoke_token(token, request.user, request=request)
    return HttpResponseRedirect(reverse("api:tokens"), status=303)
