"""The API root, the current user and API tokens. The resources are in each app's api/ (hosts,
changes, audit); api/urls.py routes them all under /api/v1/."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.response import Response
from rest_framework.reverse import reverse

from api.authentication import BearerTokenAuthentication
from api.exceptions import error_response
from api.models import ApiToken
from api.tokens import create_token, revoke_token
from api.viewsets import READ, ConsoleAPIView, ConsoleViewSet
from console.roles import PERMISSIONS, has_permission, user_roles

from . import serializers as s

# ---------------------------------------------------------------------------------------------
# Root and the current user
# ---------------------------------------------------------------------------------------------


class ApiRootView(ConsoleAPIView):
    """The collections of the API."""

    method_permissions = {"GET": READ}
    name = "SR-IOV Console API"

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, format=None):
        names = [
            "hypervisor",
            "nic",
            "vf",
            "credential",
            "change",
            "rollout",
            "hostrun",
            "step",
            "auditevent",
            "token",
        ]
        links = {name: reverse(f"api:{name}-list", request=request) for name in names}
        links["me"] = reverse("api:me", request=request)
        links["schema"] = reverse("api:schema", request=request)
        links["docs"] = reverse("api:docs", request=request)
        return Response(links)


class MeView(ConsoleAPIView):
    """Who the request is authenticated as, with roles and permissions (check a token with it)."""

    method_permissions = {"GET": READ}

    @extend_schema(responses=s.MeSerializer)
    def get(self, request):
        user = request.user
        by = "token" if isinstance(request.successful_authenticator, BearerTokenAuthentication) else "session"
        return Response(
            s.MeSerializer(
                {
                    "username": user.get_username(),
                    "roles": user_roles(user),
                    "permissions": [code for code in PERMISSIONS if has_permission(user, code)],
                    "authenticated_by": by,
                }
            ).data
        )


# ---------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------


class TokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ConsoleViewSet):
    """Your own API tokens. Create (shown once; only from a logged-in browser session), list,
    revoke (DELETE). Tokens of others are not visible."""

    serializer_class = s.ApiTokenSerializer
    filterset_class = None
    action_permissions = {"list": READ, "retrieve": READ, "create": READ, "destroy": READ}
    http_method_names = ["get", "post", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return ApiToken.objects.none()
        return ApiToken.objects.filter(user=self.request.user).select_related("user")

    @extend_schema(
        summary="Create a token (returned once; needs a session, not a token)",
        request=s.ApiTokenCreateSerializer,
        responses={201: s.ApiTokenCreatedSerializer},
    )
    def create(self, request):
        if isinstance(request.successful_authenticator, BearerTokenAuthentication):
            return error_response(
                "permission_denied",
                "Tokens are created from a logged-in browser session (/api/tokens/), not with another token.",
                403,
            )
        data = s.ApiTokenCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        token, text = create_token(
            request.user,
            data.validated_data["name"],
            expires_at=data.validated_data["expires_at"],
            request=request,
        )
        body = s.ApiTokenCreatedSerializer(token, context={"token_text": text}).data
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Revoke a token (it stops working at once)", responses={204: None})
    def destroy(self, request, pk=None):
        revoke_token(self.get_object(), request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)
