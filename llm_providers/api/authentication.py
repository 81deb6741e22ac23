"""API authentication: a person's token (`Authorization: Token <token>`) acts as that
person, a service key (`Authorization: Api-Key <key>`) for the key's tenant.

Both are stored as SHA-512 hashes under a prefix kept in clear. Credentials that
cannot exist are refused before any query: PostgreSQL refuses a NUL in a
query's text, which would otherwise be a server error.

Every presented token or key is an authentication attempt of the client
address (`throttling.authentication_attempt`): one that fails counts against
the address's `auth_failure` rate, and beyond that rate the address's
credentials are refused with 429 `auth_throttled` before they are looked up.
A genuine credential that is no longer accepted (revoked, expired, of an
inactive user or tenant) is refused with 401 too, but is no guess and does
not count: a program still calling with its revoked key must not lock its
successor, or every other credential of its address, out.
"""

from __future__ import annotations

import re

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework_api_key.permissions import KeyParser

from llm_providers.api.throttling import authentication_attempt
from llm_providers.models import ServiceKey
from llm_providers.selectors import user_token_for_key

KEYWORD = "Api-Key"
# Prefixes are generated as 8 letters and digits.
_PREFIX = re.compile(r"[A-Za-z0-9]{1,8}")
# A user token is `<prefix>.<secret>` (41 characters) or, carried over from
# DRF's authtoken, 40 hex characters: visible ASCII either way.
_USER_TOKEN = re.compile(r"[\x21-\x7e]{1,150}")
INVALID_TOKEN = "Invalid token."


class AuthenticationThrottled(exceptions.Throttled):
    """429: the client address has failed to authenticate too often of late."""

    default_code = "auth_throttled"
    summary = "Too many failed authentication attempts from this address; retry later."


class CredentialRefused(exceptions.AuthenticationFailed):
    """401 for a credential whose secret is right but which is no longer accepted.

    Only its holder can present it, so it is not counted as a failed guess.
    """


def _attempt(request):
    """The checking of the request's credential, counted per client address."""
    return authentication_attempt(
        request,
        failure=exceptions.AuthenticationFailed,
        refusal=lambda wait: AuthenticationThrottled(wait=wait),
        not_a_guess=CredentialRefused,
    )


class TokenAuthentication(authentication.TokenAuthentication):
    """A person's API token (`Authorization: Token <token>`), a UserToken.

    An unknown, revoked or expired token is refused alike, with 401
    "Invalid token."; a token of an inactive user with "User inactive or
    deleted.".
    """

    def authenticate(self, request):
        words = authentication.get_authorization_header(request).split()
        if not words or words[0].lower() != self.keyword.lower().encode():
            return None
        with _attempt(request):
            return super().authenticate(request)

    def authenticate_credentials(self, key):
        user_token = user_token_for_key(key=key) if _USER_TOKEN.fullmatch(key) else None
        if user_token is None:
            raise exceptions.AuthenticationFailed(INVALID_TOKEN)
        if user_token.revoked or user_token.has_expired:
            raise CredentialRefused(INVALID_TOKEN)
        if not user_token.user.is_active:
            raise CredentialRefused("User inactive or deleted.")
        return user_token.user, user_token


class ServiceKeyPrincipal:
    """`request.user` of a request made with a service key: a program, not a person.

    It belongs to exactly one tenant and holds no membership; the key itself
    is `request.auth`.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, service_key: ServiceKey):
        self.service_key = service_key
        self.tenant = service_key.tenant

    def __str__(self) -> str:
        return f"service key {self.service_key.prefix} ({self.service_key.name})"

    def get_username(self) -> str:
        return str(self)


class ServiceKeyAuthentication(authentication.BaseAuthentication):
    """Authenticate a request by a tenant's service key.

    The key is `<prefix>.<secret>`; only its SHA-512 hash is stored. A
    revoked or expired key, or one of an inactive tenant, is refused with 401.
    """

    key_parser = KeyParser()

    def authenticate(self, request):
        key = self.key_parser.get_from_authorization(request)
        if key is None:
            return None
        with _attempt(request):
            return self._authenticate_key(key.strip())

    def _authenticate_key(self, key: str):
        prefix, dot, _ = key.partition(".")
        service_key = (
            ServiceKey.objects.select_related("tenant").filter(prefix=prefix).first()
            if dot and _PREFIX.fullmatch(prefix)
            else None
        )
        if service_key is None or not service_key.is_valid(key):
            raise exceptions.AuthenticationFailed("Invalid service key.")
        if service_key.revoked:
            raise CredentialRefused("This service key has been revoked.")
        if service_key.has_expired:
            raise CredentialRefused("This service key has expired.")
        if not service_key.tenant.is_active:
            raise CredentialRefused("The tenant of this service key is inactive.")
        return ServiceKeyPrincipal(service_key), service_key

    def authenticate_header(self, request) -> str:
        return KEYWORD


class ServiceKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes service keys in the OpenAPI schema."""

    target_class = ServiceKeyAuthentication
    name = "serviceKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "A tenant's service key: `Authorization: Api-Key <prefix>.<secret>`.",
        }


class TokenAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes user tokens in the OpenAPI schema."""

    target_class = TokenAuthentication
    name = "tokenAuth"
    # Before drf-spectacular's own description of DRF's TokenAuthentication.
    priority = 1

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "A person's API token: `Authorization: Token <prefix>.<secret>` "
            "(tokens from before hashing: 40 hex characters).",
        }
