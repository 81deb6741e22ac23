"""One error shape for the whole API.

Every error answers::

    {"error": {"code": "...", "message": "...", "fields": {...}, "extra": {...}}}

`code` is stable and machine-readable, `message` is for people, `fields`
maps input fields to their messages (validation errors), `extra` carries
structured details such as `retry_after_seconds`, and `request_id` (also in
the `X-Request-Id` header) when the error ends a completion or embedding
whose attempts are in the call log. Django `ValidationError`s
raised by services become 400, and so do application errors that name the
one input `field` at fault (the completion service's `InvalidRequest`): all
three are `validation_error` with `fields`. Other `ApplicationError`s answer
their own `http_status` and `code`; every 429 carries a `Retry-After` header.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.conf import settings
from django.core.exceptions import (
    NON_FIELD_ERRORS,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
)
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from llm_providers.exceptions import ApplicationError

logger = logging.getLogger(__name__)

VALIDATION_CODE = "validation_error"
REQUEST_ID_HEADER = "X-Request-Id"
# A 429 whose cause gives no time to wait (a provider's 429 without Retry-After).
DEFAULT_RETRY_AFTER_SECONDS = 1
THROTTLED_MESSAGE = "Too many requests for this credential; retry later."
NON_FIELD_KEY = "non_field_errors"
# How many field messages the summary `message` of a validation error quotes.
_SUMMARY_MESSAGES = 3


def error_body(
    *,
    code: str,
    message: str,
    fields: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "error": {"code": code, "message": message, "fields": fields or {}, "extra": extra or {}}
    }


def _plain(detail: Any) -> Any:
    """DRF error details (ErrorDetail, nested lists and dicts) as plain JSON values."""
    if isinstance(detail, dict):
        return {str(key): _plain(value) for key, value in detail.items()}
    if isinstance(detail, list | tuple):
        return [_plain(item) for item in detail]
    return str(detail)


def _owner(label: str, name: str, prefix: str) -> str:
    """What a message is about: its field; for a non-field error of nested input
    (e.g. an object where a list was expected), the nested field it belongs to."""
    if name != NON_FIELD_KEY:
        return f"{label}: "
    return f"{prefix.removesuffix('.')}: " if prefix else ""


def _field_messages(fields: dict[str, Any], prefix: str = "") -> list[str]:
    messages: list[str] = []
    for name, value in fields.items():
        label = f"{prefix}{name}"
        if isinstance(value, dict):
            messages.extend(_field_messages(value, f"{label}."))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    messages.extend(_field_messages(item, f"{label}[{index}]."))
                elif isinstance(item, list):
                    messages.extend(f"{label}[{index}]: {m}" for m in item)
                elif item:
                    messages.append(f"{_owner(label, name, prefix)}{item}")
        elif value:
            messages.append(f"{label}: {value}")
    return messages


def _validation_response(fields: dict[str, Any], messages: list[str]) -> Response:
    summary = messages[:_SUMMARY_MESSAGES]
    more = len(messages) - len(summary)
    message = "Invalid input: " + " ".join(
        m if m.endswith((".", "!", "?")) else f"{m}." for m in summary
    )
    if more > 0:
        message += f" (and {more} more)"
    return Response(
        error_body(code=VALIDATION_CODE, message=message, fields=fields),
        status=status.HTTP_400_BAD_REQUEST,
    )


def _django_validation_response(exc: DjangoValidationError) -> Response:
    if hasattr(exc, "error_dict"):
        fields = {
            (NON_FIELD_KEY if name == NON_FIELD_ERRORS else name): list(messages)
            for name, messages in exc.message_dict.items()
        }
        return _validation_response(fields, _field_messages(fields))
    messages = list(exc.messages)
    return _validation_response({NON_FIELD_KEY: messages} if messages else {}, messages)


def _drf_validation_response(exc: exceptions.ValidationError) -> Response:
    detail = _plain(exc.detail)
    if isinstance(detail, dict):
        fields = detail
    else:
        fields = {NON_FIELD_KEY: detail if isinstance(detail, list) else [detail]}
    return _validation_response(fields, _field_messages(fields))


def _names_one_field(exc: ApplicationError) -> bool:
    return exc.http_status == status.HTTP_400_BAD_REQUEST and isinstance(
        getattr(exc, "field", None), str
    )


def _invalid_input_response(exc: ApplicationError) -> Response:
    """A service's refusal of one input field (e.g. `InvalidRequest`): a validation error."""
    return Response(
        error_body(
            code=VALIDATION_CODE,
            message=exc.message,
            fields={exc.field: [exc.message]},
            extra=dict(exc.extra),
        ),
        status=status.HTTP_400_BAD_REQUEST,
    )


def _retry_after_seconds(exc: Exception) -> int | None:
    value = getattr(exc, "extra", {}).get("retry_after_seconds")
    if value is None:
        value = getattr(exc, "retry_after", None)
    if value is None:
        value = getattr(exc, "wait", None)
    if value is None:
        return None
    return max(1, math.ceil(float(value)))


def _application_error_response(exc: ApplicationError) -> Response:
    extra = dict(exc.extra)
    headers = {}
    if exc.http_status == status.HTTP_429_TOO_MANY_REQUESTS:
        seconds = _retry_after_seconds(exc)
        if seconds is None:
            seconds = DEFAULT_RETRY_AFTER_SECONDS
        extra["retry_after_seconds"] = seconds
        headers["Retry-After"] = str(seconds)
    if "request_id" in extra:
        headers[REQUEST_ID_HEADER] = extra["request_id"]
    return Response(
        error_body(code=exc.code, message=exc.message, extra=extra),
        status=exc.http_status,
        headers=headers,
    )


def _api_exception_response(exc: exceptions.APIException) -> Response:
    headers = {}
    extra: dict[str, Any] = {}
    auth_header = getattr(exc, "auth_header", None)
    if auth_header:
        headers["WWW-Authenticate"] = auth_header
    if isinstance(exc, exceptions.Throttled):
        seconds = _retry_after_seconds(exc)
        if seconds is not None:
            headers["Retry-After"] = str(seconds)
            extra["retry_after_seconds"] = seconds
        message = getattr(exc, "summary", THROTTLED_MESSAGE)
    else:
        message = str(exc.detail) if not isinstance(exc.detail, list | dict) else str(exc)
    code = exc.default_code
    return Response(
        error_body(code=code, message=message, extra=extra),
        status=exc.status_code,
        headers=headers,
    )


def _too_large_response() -> Response:
    """A body over DATA_UPLOAD_MAX_MEMORY_SIZE: Django refuses to read it, the client must
    send less (e.g. split the embedding inputs over several calls)."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return Response(
        error_body(
            code="request_too_large",
            message=f"The request body is larger than the {limit:,} bytes this API accepts.",
            extra={"max_bytes": limit},
        ),
        status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    )


def _suspicious_request_response(exc: SuspiciousOperation) -> Response:
    """A request Django refuses to read (e.g. more query parameters than
    DATA_UPLOAD_MAX_NUMBER_FIELDS): the client's fault, so 400, logged where
    Django logs these."""
    logging.getLogger(f"django.security.{type(exc).__name__}").warning("%s", exc)
    if isinstance(exc, TooManyFieldsSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        message = f"The request has more parameters than the {limit:,} this API accepts."
        extra = {"max_parameters": limit}
    else:
        message, extra = "The request was refused as malformed.", {}
    return Response(
        error_body(code="bad_request", message=message, extra=extra),
        status=status.HTTP_400_BAD_REQUEST,
    )


def api_exception_handler(exc: Exception, context: dict) -> Response:
    """DRF's EXCEPTION_HANDLER: every error, expected or not, in the one shape."""
    if isinstance(exc, Http404):
        response = Response(
            error_body(code="not_found", message="Not found."), status=status.HTTP_404_NOT_FOUND
        )
    elif isinstance(exc, DjangoPermissionDenied):
        response = _api_exception_response(exceptions.PermissionDenied(*exc.args))
    elif isinstance(exc, DjangoValidationError):
        response = _django_validation_response(exc)
    elif isinstance(exc, exceptions.ValidationError):
        response = _drf_validation_response(exc)
    elif isinstance(exc, ApplicationError) and _names_one_field(exc):
        response = _invalid_input_response(exc)
    elif isinstance(exc, ApplicationError):
        response = _application_error_response(exc)
    elif isinstance(exc, exceptions.APIException):
        response = _api_exception_response(exc)
    elif isinstance(exc, RequestDataTooBig):
        response = _too_large_response()
    elif isinstance(exc, SuspiciousOperation):
        response = _suspicious_request_response(exc)
    else:
        view = context.get("view")
        logger.exception("Unexpected error in %s", type(view).__name__ if view else "the API")
        response = Response(
            error_body(
                code="server_error",
                message="An unexpected error occurred; it has been logged.",
            ),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    set_rollback()
    return response
