"""One error body for every 4xx of the API:

    {"error": {"code": "invalid", "message": "...", "fields": {"name": ["..."]}}}

`fields` is present (possibly empty) on every error; field errors of nested input are keyed by the
dotted path ("policy.parallelism"). Errors raised by the services are mapped here, so views only
call services: Django's ValidationError → 400, PermissionDenied → 403, a refused state change
(ChangeError, a host-key conflict, a credential in use) → 409, an IntegrityError → 409.
"""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from console.roles import record_denied

logger = logging.getLogger("api")


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state of the resource."
    default_code = "conflict"


def _service_conflicts():
    """Exception classes of the services that mean 'refused in the current state' (409)."""
    classes = []
    for module, name in (
        ("changes.services", "ChangeError"),
        ("hosts.hostkeys", "HostKeyError"),
        ("hosts.credentials", "CredentialInUse"),
        ("hosts.services", "HostInUse"),
    ):
        try:
            classes.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):  # an app still being built
            continue
    return tuple(classes)


def _django_validation_detail(exc: DjangoValidationError):
    if hasattr(exc, "error_dict"):
        detail = {}
        for key, messages in exc.message_dict.items():
            detail["non_field_errors" if key == "__all__" else key] = list(messages)
        return detail
    return list(exc.messages)


def translate(exc):
    """Service and database exceptions → DRF exceptions (anything else is returned as is)."""
    if isinstance(exc, DjangoValidationError):
        return exceptions.ValidationError(_django_validation_detail(exc))
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied(str(exc) or None)
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, IntegrityError):
        logger.info("integrity error answered as 409: %s", exc)
        return Conflict("The request conflicts with existing data (a duplicate, or an object in use).")
    conflicts = _service_conflicts()
    if conflicts and isinstance(exc, conflicts):
        return Conflict(getattr(exc, "message", None) or str(exc))
    return exc


def _flatten(detail, prefix=""):
    """DRF error detail → ({field path: [messages]}, [messages without a field])."""
    fields, general = {}, []
    if isinstance(detail, dict):
        for key, value in detail.items():
            key = str(key)
            if key in ("non_field_errors", "__all__") and not prefix:
                sub_fields, sub_general = _flatten(value)
                general.extend(sub_general)
                fields.update(sub_fields)
                continue
            path = f"{prefix}.{key}" if prefix else key
            sub_fields, sub_general = _flatten(value, path)
            fields.update(sub_fields)
            if sub_general:
                fields.setdefault(path, []).extend(sub_general)
    elif isinstance(detail, list):
        for index, item in enumerate(detail):
            if isinstance(item, dict | list):
                sub_fields, sub_general = _flatten(item, f"{prefix}.{index}" if prefix else str(index))
                fields.update(sub_fields)
                general.extend(sub_general)
            else:
                general.append(str(item))
    else:
        general.append(str(detail))
    return fields, general


def _code(exc) -> str:
    if isinstance(exc, exceptions.ValidationError):
        return "invalid"
    code = getattr(exc, "default_code", "") or "error"
    return {"error": "bad_request"}.get(code, code)


def error_body(code: str, message: str, fields: dict | None = None, **extra) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}, **extra}}


def exception_handler(exc, context):
    exc = translate(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a real bug: a 500, logged by Django
    detail = getattr(exc, "detail", None)
    if isinstance(exc, exceptions.ValidationError):
        fields, general = _flatten(detail)
        message = " ".join(general) if general else "Some fields are invalid; see fields."
    else:
        fields, general = ({}, [str(detail)]) if detail is not None else ({}, [str(exc)])
        message = " ".join(general)
    extra = getattr(exc, "extra", None) or {}
    response.data = error_body(_code(exc), message, fields, **extra)
    if isinstance(exc, exceptions.PermissionDenied) and "request" in context:
        _audit_denied(context["request"], context.get("view"), message)
        response._has_been_logged = True  # record_denied logged it as one line, with the reason
    return response


def _audit_denied(request, view, reason: str) -> None:
    """The API's 403s are audited like the web's (`access.denied`), about the object in the URL."""
    model, pk = None, None
    kwargs = getattr(view, "kwargs", None) or {}
    if "pk" in kwargs:
        pk = kwargs["pk"]
        queryset = getattr(view, "queryset", None)
        model = queryset.model if queryset is not None else _model_of(view)
    record_denied(request, reason, model=model, pk=pk, via="api")


def _model_of(view):
    try:
        return view.get_queryset().model
    except Exception:  # a view whose queryset needs more than the failed request gave it
        return None


def error_response(code: str, message: str, status_code: int, fields=None, **extra) -> Response:
    return Response(error_body(code, message, fields, **extra), status=status_code)
