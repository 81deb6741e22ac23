"""OpenAPI additions shared by every endpoint: tenant selection and the error shape.

A drf-spectacular post-processing hook adds, to each tenant-scoped operation,
the optional `X-Tenant` header and `tenant` query parameter, and the error
responses every such operation can give (400, 401, 403, 404, 429; and 413,
415 where it takes a body), all in the one `Error` shape.
"""

from __future__ import annotations

from .tenancy import TENANT_HEADER, TENANT_QUERY_PARAMETER

API_PREFIX = "/api/v1/"
# Operations outside any tenant: no tenant parameters, no authentication errors.
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

ERROR_DESCRIPTIONS = {
    "400": "Invalid input (`validation_error`, with `fields`), a body that is not JSON "
    "(`parse_error`), or the tenant to act for is ambiguous (`tenant_ambiguous`) or named "
    "twice differently (`tenant_invalid`).",
    "401": "No credentials, or invalid ones.",
    "403": "The caller's role may not do this, or it may not act for the named tenant.",
    "404": "No such object in this tenant.",
    "429": "Too many requests for this credential (`throttled`), or too many failed "
    "authentications from this client address (`auth_throttled`); see `Retry-After`.",
}

# What every operation that reads a body can answer before its view runs.
BODY_ERROR_DESCRIPTIONS = {
    "413": "The body is larger than the server accepts (`request_too_large`, `extra.max_bytes`).",
    "415": "The body is not `application/json` (`unsupported_media_type`).",
}

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


def _error_response(description: str) -> dict:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}
        },
    }


def postprocess_add_tenant_and_errors(result, generator, request, public):
    """drf-spectacular POSTPROCESSING_HOOKS entry."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas[ERROR_COMPONENT] = ERROR_SCHEMA
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
            responses = operation.setdefault("responses", {})
            for code, description in ERROR_DESCRIPTIONS.items():
                responses.setdefault(code, _error_response(description))
            if "requestBody" in operation:
                for code, description in BODY_ERROR_DESCRIPTIONS.items():
                    responses.setdefault(code, _error_response(description))
            for code, response in responses.items():
                if code.startswith(("4", "5")) and not response.get("content"):
                    response["content"] = _error_response("")["content"]
    return result
