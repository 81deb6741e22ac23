"""Base URL checks for provider configs: http(s) only, and no private hosts (SSRF)."""

from __future__ import annotations

import ipaddress
import socket
from contextlib import suppress
from urllib.parse import urlsplit

import idna
from django.conf import settings
from django.core.exceptions import ValidationError


def address_forbidden_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Name the kind of non-public address, or None when it is a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            address = address.ipv4_mapped
        else:
            # 6to4 and Teredo addresses carry an IPv4 address inside them; one
            # that is private would reach that host through a relay.
            embedded = [address.sixtofour, *(address.teredo or ())]
            for inner in filter(None, embedded):
                label = address_forbidden_kind(inner)
                if label:
                    return label
    # Most specific first: `is_private` also covers link-local, unspecified
    # and documentation ranges, and the message should name the real kind.
    checks = (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    )
    for label, forbidden in checks:
        if forbidden:
            return label
    # Anything else not globally routable: shared address space (100.64.0.0/10,
    # where some clouds serve instance metadata), benchmarking ranges, …
    if not address.is_global:
        return "non-public"
    return None


def _host_names(host: str) -> list[str]:
    """The ASCII names under which a client may look `host` up.

    An internationalised name has two: IDNA 2008, which httpx (so the OpenAI
    and Anthropic SDKs) and urllib3 use, and IDNA 2003, the standard library's
    (urllib, so webhooks). They differ ("ß" is kept or becomes "ss"), so both
    are checked: each may be a host of its own.
    """
    if host.isascii():
        return [host]
    names = []
    with suppress(idna.IDNAError, UnicodeError):
        names.append(idna.encode(host).decode("ascii"))
    with suppress(UnicodeError):
        names.append(host.encode("idna").decode("ascii"))
    return list(dict.fromkeys(names))


def _host_addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    with suppress(ValueError):
        return [ipaddress.ip_address(host)]
    names = _host_names(host)
    addresses = []
    try:
        if not names:
            raise UnicodeError(host)
        for name in names:
            infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
            addresses += [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    except (socket.gaierror, UnicodeError) as exc:
        raise ValidationError(
            f"The host “{host}” could not be resolved; check the base URL.",
            code="unresolvable_host",
        ) from exc
    return addresses


def _parse_error_reason(error: ValueError) -> str:
    """The parser's reason without the part of the URL it quotes.

    It quotes a port ("... as 'abc'") or the whole host part, credentials
    included ("netloc 'user:pw＠host' contains ..."): a webhook token or a key
    pasted there must not come back in the error.
    """
    message = str(error)
    head, quoted, rest = message.partition("'")
    if quoted:
        _, closing, tail = rest.rpartition("'")
        message = head + (tail if closing else "")
    return " ".join(message.partition(" as ")[0].split())


def base_url_validate(url: str, *, allow_private: bool | None = None) -> None:
    """Raise ValidationError unless `url` is an http(s) URL of a public host.

    Private, loopback, link-local and multicast hosts are refused unless
    `allow_private` (default: the PROVIDER_ALLOW_PRIVATE_URLS setting) is on.
    """
    if allow_private is None:
        allow_private = settings.PROVIDER_ALLOW_PRIVATE_URLS
    if any(
        character.isspace() or ord(character) < 32 or ord(character) == 127 for character in url
    ):
        raise ValidationError(
            "The base URL must not contain spaces or control characters.", code="invalid_characters"
        )
    try:
        parts = urlsplit(url)
        # Reading the port parses it: "host:abc" or ":99999" fail here.
        parts.port  # noqa: B018
    except ValueError as exc:
        raise ValidationError(
            f"The base URL is not a valid URL ({_parse_error_reason(exc)}).", code="invalid_url"
        ) from None
    if parts.scheme not in ("http", "https"):
        raise ValidationError(
            "The base URL must start with http:// or https://.", code="invalid_scheme"
        )
    if not parts.hostname:
        raise ValidationError("The base URL has no host.", code="missing_host")
    if parts.username or parts.password:
        raise ValidationError(
            "The base URL must not carry credentials; put the key in the key field.",
            code="credentials_in_url",
        )
    if allow_private:
        return
    for address in _host_addresses(parts.hostname):
        kind = address_forbidden_kind(address)
        if kind:
            raise ValidationError(
                f"The base URL points at a {kind} address ({address}); provider URLs must be "
                "public unless PROVIDER_ALLOW_PRIVATE_URLS is on.",
                code="private_address",
            )
