"""OpenAPI additions shared by every endpoint: tenant selection and the error answers.

The API's views describe themselves with `AutoSchema` (through `ViewSchema`,
set by `base.APIViewMixin`), which lists in each operation the error answers
its view can give, all in the one `Error` shape: 400 and 500 always; 401 and
403 where credentials are needed; 404 on an object's path and on a paginated
list (a page that is not one); 406 unless the view answers JSON whatever the
`Accept` header asks (completions); 413 and 415 where it takes a body; 429
where credentials are checked or requests throttled. A 401 documents its
`WWW-Authenticate` header and a 429 its `Retry-After`.

A drf-spectacular post-processing hook adds to each tenant-scoped operation
the optional `X-Tenant` header and `tenant` query parameter, and to the
schema's description the answers no operation can list (405 to a method a
path does not have, 404 to an unknown URL).
"""

from __future__ import annotations

import copy

from drf_spectacular import openapi
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework.permissions import AllowAny
from rest_framework.schemas.inspectors import ViewInspector

from .negotiation import JSONFallbackNegotiation
from .tenancy import TENANT_HEADER, TENANT_QUERY_PARAMETER

API_PREFIX = "/api/v1/"
# Operations outside any tenant: no tenant parameters.
UNSCOPED_PATHS = frozenset({"/api/v1/health/"})

ERROR_COMPONENT = "Error"
ERROR_SCHEMA = {
    "type": "object",
    "description": "The one shape of every error answer.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {
                    "type": "string",
                    "description": "Stable and machine-readable, e.g. `validation_error`, "
                    "`not_found`, `tenant_ambiguous`, `no_route`, `throttled`, `auth_throttled`.",
                },
                "message": {"type": "string", "description": "What went wrong, for people."},
                "fields": {
                    "type": "object",
                    "additionalProperties": {},
                    "description": "Validation errors: input field → list of messages "
                    "(nested for nested input).",
                },
                "extra": {
                    "type": "object",
                    "additionalProperties": {},
                    "description": "Structured details, e.g. `retry_after_seconds`.",
                },
            },
            "required": ["code", "message", "fields", "extra"],
        }
    },
    "required": ["error"],
}

# What an operation can answer besides its own results; which of them it can
# give depends on its view (`AutoSchema._error_descriptions`).
BAD_REQUEST_INPUT = (
    "invalid input (`validation_error`, with `fields`: a value refused, a body field or "
    "query parameter the operation does not take)"
)
BAD_REQUEST_BODY = "a body that is not JSON (`parse_error`)"
BAD_REQUEST_TENANT = (
    "the tenant to act for is ambiguous (`tenant_ambiguous`) or named twice differently "
    "(`tenant_invalid`)"
)
BAD_REQUEST_MALFORMED = (
    "a request refused as malformed (`bad_request`), e.g. with more query parameters than "
    "the server accepts (`extra.max_parameters`)"
)
ERROR_DESCRIPTIONS = {
    "401": "No credentials, or invalid ones (`not_authenticated`, `authentication_failed`); "
    "`WWW-Authenticate` names the scheme to use.",
    "403": "The caller's role may not do this (`permission_denied`, also for a session's "
    "request without its CSRF token), or it may not act for the named tenant "
    "(`tenant_forbidden`).",
    "406": "The `Accept` header or the `format` query parameter names no format this "
    "operation answers in (`not_acceptable`); the error itself is JSON.",
    "429": "Too many requests for this credential (`throttled`), or too many failed "
    "authentications from this client address (`auth_throttled`); see `Retry-After`.",
    "500": "An unexpected error (`server_error`): logged, with no details given.",
}
NOT_FOUND_OBJECT = "No such object in this tenant (`not_found`)."
NOT_FOUND_PAGE = (
    "No such page (`not_found`): a page number that is none or past the end, or a cursor "
    "this list did not give out."
)

# What every operation that reads a body can answer before its view runs.
BODY_ERROR_DESCRIPTIONS = {
    "413": "The body is larger than the server accepts (`request_too_large`, `extra.max_bytes`).",
    "415": "The body is not `application/json` (`unsupported_media_type`).",
}

# Headers every answer of a status carries.
ERROR_HEADERS = {
    "401": {
        "WWW-Authenticate": {
            "description": "The scheme to authenticate with (`Token`).",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    "429": {
        "Retry-After": {
            "description": "Whole seconds to wait before retrying (also "
            "`extra.retry_after_seconds`).",
            "required": True,
            "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
        }
    },
}

# What the schema's description adds about answers no operation lists.
UNLISTED_ANSWERS = (
    "Every error answers in one shape, the `Error` schema. A method a path does not list "
    "answers 405 `method_not_allowed`, with an `Allow` header naming the ones it has, "
    "before the credentials, the tenant or the query are looked at. An unknown URL under "
    "/api/ answers 404 `not_found`."
)

TENANT_PARAMETERS = [
    {
        "in": "header",
        "name": TENANT_HEADER,
        "required": False,
        "schema": {"type": "string"},
        "description": "The tenant to act for (slug or id), for users of several tenants. "
        "A service key always acts for its own tenant.",
    },
    {
        "in": "query",
        "name": TENANT_QUERY_PARAMETER,
        "required": False,
        "schema": {"type": "string"},
        "description": f"The same as the {TENANT_HEADER} header.",
    },
]


ERROR_CONTENT = {
    "application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}
}


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's inspector, adding to each operation the error answers its view
    can give, in the `Error` shape: a status the view documents itself keeps its own
    description and gets the shape when it names no content."""

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        registry.register_on_missing(
            ResolvedComponent(
                name=ERROR_COMPONENT,
                type=ResolvedComponent.SCHEMA,
                schema=ERROR_SCHEMA,
                object=ERROR_COMPONENT,
            )
        )
        responses = operation["responses"]
        for code, description in self._error_descriptions(operation).items():
            responses.setdefault(code, {"description": description})
        for code, response in responses.items():
            if not code.startswith(("4", "5")):
                continue
            if not response.get("content"):
                response["content"] = copy.deepcopy(ERROR_CONTENT)
            if code in ERROR_HEADERS:
                response["headers"] = {
                    **copy.deepcopy(ERROR_HEADERS[code]),
                    **response.get("headers", {}),
                }
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _error_descriptions(self, operation: dict) -> dict[str, str]:
        """The error statuses the view of `operation` can answer, with what each means."""
        view = self.view
        authenticates = bool(view.authentication_classes)
        needs_credentials = authenticates and not all(
            issubclass(permission, AllowAny) for permission in view.permission_classes
        )
        takes_body = "requestBody" in operation
        acts_for_tenant = getattr(view, "acts_for_tenant", False)
        causes = [
            cause
            for cause, applies in (
                (BAD_REQUEST_INPUT, acts_for_tenant or takes_body),
                (BAD_REQUEST_BODY, takes_body),
                (BAD_REQUEST_TENANT, acts_for_tenant),
                (BAD_REQUEST_MALFORMED, True),
            )
            if applies
        ]
        found = {"400": _sentence(causes)}
        if needs_credentials:
            found["401"] = ERROR_DESCRIPTIONS["401"]
            found["403"] = ERROR_DESCRIPTIONS["403"]
        if "{" in self.path:
            found["404"] = NOT_FOUND_OBJECT
        elif getattr(view, "action", None) == "list" and getattr(view, "pagination_class", None):
            found["404"] = NOT_FOUND_PAGE
        if not issubclass(view.content_negotiation_class, JSONFallbackNegotiation):
            found["406"] = ERROR_DESCRIPTIONS["406"]
        if takes_body:
            found.update(BODY_ERROR_DESCRIPTIONS)
        if authenticates or view.throttle_classes:
            found["429"] = ERROR_DESCRIPTIONS["429"]
        found["500"] = ERROR_DESCRIPTIONS["500"]
        return found


def _sentence(causes: list[str]) -> str:
    """`A.`, `A or b.`, `A, b, or c.`"""
    text = causes[-1]
    if len(causes) > 1:
        text = f"{', '.join(causes[:-1])}{',' if len(causes) > 2 else ''} or {text}"
    return f"{text[0].upper()}{text[1:]}."


class ViewSchema(ViewInspector):
    """The `schema` of the API's views: an `AutoSchema` of its own per view, as DRF's
    DefaultSchema gives one of DEFAULT_SCHEMA_CLASS (an inspector keeps the operation
    it describes: one shared by every view would mix up two schemas made at once)."""

    def __get__(self, instance, owner):
        inspector = super().__get__(instance, owner)
        if inspector is not self:
            return inspector
        inspector = AutoSchema()
        inspector.view = instance
        return inspector


def postprocess_add_tenant_and_errors(result, generator, request, public):
    """drf-spectacular POSTPROCESSING_HOOKS entry: the tenant parameters of every
    tenant-scoped operation, the answers no operation lists, and request bodies that
    refuse unknown fields."""
    info = result.setdefault("info", {})
    info["description"] = " ".join(filter(None, (info.get("description"), UNLISTED_ANSWERS)))
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    # Request bodies refuse fields they do not have (serializers.KnownFieldsOnly).
    for name, schema in schemas.items():
        if name.endswith("Request") and schema.get("type") == "object":
            schema["additionalProperties"] = False
    for path, operations in result.get("paths", {}).items():
        if not path.startswith(API_PREFIX) or path in UNSCOPED_PATHS:
            continue
        for method, operation in operations.items():
            if method == "parameters":
                continue
            parameters = operation.setdefault("parameters", [])
            names = {(p.get("in"), p.get("name")) for p in parameters}
            for parameter in TENANT_PARAMETERS:
                if (parameter["in"], parameter["name"]) not in names:
                    parameters.append(dict(parameter))
    return result
