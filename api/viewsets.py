"""The base classes of every API view: each declares the console permission of each action."""

from rest_framework import viewsets
from rest_framework.views import APIView

from .permissions import DeclaredPermissionMixin

READ = "view_fleet"


class ConsoleViewSet(DeclaredPermissionMixin, viewsets.GenericViewSet):
    action_permissions: dict[str, str] = {}


class ConsoleAPIView(DeclaredPermissionMixin, APIView):
    method_permissions: dict[str, str] = {}


