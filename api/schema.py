"""OpenAPI generation (drf-spectacular): each operation says which console permission it needs and
documents the shared error body."""

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers

from .permissions import route_permission

ERROR_STATUSES = {
    "400": "Invalid input (see error.fields).",
    "401": "Not authenticated: send a Bearer token or use a logged-in session.",
    "403": "The user lacks the permission, or a rule (e.g. four-eyes) refuses the action.",
    "404": "No such object.",
    "409": "Refused in the object's current state.",
}

ErrorSerializer = inline_serializer(
    name="Error",
    fields={
        "error": inline_serializer(
            name="ErrorDetail",
            fields={
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "fields": serializers.DictField(child=serializers.ListField(child=serializers.CharField())),
            },
        )
    },
)


class ConsoleAutoSchema(AutoSchema):
    def _permission(self) -> str | None:
        view = self.view
        action = getattr(view, "action", None)
        mapping = getattr(view, "action_permissions", None)
        if mapping is not None and action in mapping:
            return mapping[action]
        methods = getattr(view, "method_permissions", None)
        if methods is not None:
            return methods.get(self.method.upper()) or route_permission(type(view))
        return None

    def get_description(self):
        description = super().get_description() or ""
        codename = self._permission()
        if codename:
            description = (description + "\n\n" if description else "") + f"Permission: `{codename}`."
        return description

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code, text in ERROR_STATUSES.items():
            if code in responses:
                continue
            if code == "404" and "{" not in self.path:
                continue
            if code == "409" and self.method.upper() == "GET":
                continue
            responses[code] = self._get_response_for_code(ErrorSerializer, code, direction=direction)
            responses[code]["description"] = text
        return responses
