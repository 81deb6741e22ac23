"""Base URL checks: http(s) only, private hosts refused unless allowed (no external DNS used)."""

from __future__ import annotations

import socket

import httpx2
import pytest
from django.core.exceptions import ValidationError

from llm_providers.network import base_url_validate


def _message(url: str, **kwargs) -> str:
    with pytest.raises(ValidationError) as caught:
        base_url_validate(url, **kwargs)
    return caught.value.messages[0]


@pytest.mark.parametrize(
    ("url", "kind", "address"),
    [
        ("http://127.0.0.1:11434/v1", "loopback", "127.0.0.1"),
        ("http://[::1]/v1", "loopback", "::1"),
        ("http://10.1.2.3/v1", "private", "10.1.2.3"),
        ("https://192.168.0.10/v1", "private", "192.168.0.10"),
        ("https://172.16.5.4/v1", "private", "172.16.5.4"),
        ("http://169.254.169.254/latest/meta-data", "link-local", "169.254.169.254"),
        ("http://224.0.0.1/", "multicast", "224.0.0.1"),
        ("http://0.0.0.0:8000/", "unspecified", "0.0.0.0"),
        ("http://[::ffff:127.0.0.1]/", "loopback", "::ffff:7f00:1"),
        ("http://[fe80::1]/", "link-local", "fe80::1"),
        # Decimal and octal spellings of 127.0.0.1 resolve locally, without DNS.
        ("http://2130706433/", "loopback", "127.0.0.1"),
        ("http://0177.0.0.1/", "loopback", "127.0.0.1"),
        # Shared address space: one cloud serves instance metadata at this one.
        ("http://100.100.100.200/latest/meta-data", "non-public", "100.100.100.200"),
        ("http://198.18.0.1/", "private", "198.18.0.1"),
        # 6to4 and Teredo addresses with a private IPv4 address inside.
        ("http://[2002:7f00:1::]/", "loopback", "2002:7f00:1::"),
        ("http://[2002:a00:1::]/", "private", "2002:a00:1::"),
        (
            "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
            "loopback",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
        ),
    ],
)
def test_non_public_address_refused(settings, url, kind, address):
    settings.PROVIDER_ALLOW_PRIVATE_URLS = False
    assert _message(url) == (
        f"The base URL points at a {kind} address ({address}); provider URLs must be public "
        "unless PROVIDER_ALLOW_PRIVATE_URLS is on."
    )


def test_localhost_refused(settings):
    settings.PROVIDER_ALLOW_PRIVATE_URLS = False
    message = _message("http://localhost:11434/v1")
    assert "loopback address" in message
    assert message.endswith(
        "provider URLs must be public unless PROVIDER_ALLOW_PRIVATE_URLS is on."
    )


def test_private_address_allowed_when_setting_on(settings):
    settings.PROVIDER_ALLOW_PRIVATE_URLS = True
    assert base_url_validate("http://127.0.0.1:11434/v1") is None
    assert base_url_validate("http://localhost:11434/v1") is None


def test_allow_private_argument_overrides_setting(settings):
    settings.PROVIDER_ALLOW_PRIVATE_URLS = True
    assert "loopback" in _message("http://127.0.0.1/", allow_private=False)


def test_public_address_accepted(settings):
    settings.PROVIDER_ALLOW_PRIVATE_URLS = False
    assert base_url_validate("https://8.8.8.8/v1") is None
    assert base_url_validate("https://[2001:4860:4860::8888]/v1") is None
    # 6to4 of a public IPv4 address.
    assert base_url_validate("https://[2002:808:808::]/v1") is None


@pytest.mark.parametrize(
    "url", ["ftp://8.8.8.8/", "file:///etc/passwd", "gopher://8.8.8.8/", "8.8.8.8/v1"]
)
def test_non_http_scheme_refused(url):
    assert _message(url) == "The base URL must start with http:// or https://."


def test_scheme_checked_even_when_private_allowed(settings):
    settings.PROVIDER_ALLOW_PRIVATE_URLS = True
    assert _message("file:///etc/passwd") == "The base URL must start with http:// or https://."


@pytest.mark.parametrize(
    "url", ["https://example.com/a b", "https://example.com/\x00", "https://exa\tmple.com/"]
)
def test_url_with_spaces_or_control_characters_refused(url):
    with pytest.raises(ValidationError) as caught:
        base_url_validate(url, allow_private=True)
    assert caught.value.messages == ["The base URL must not contain spaces or control characters."]


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("https://93.184.216.34:abc/hook", "Port could not be cast to integer value"),
        ("https://93.184.216.34:99999/v1", "Port out of range"),
        ("http://[::1/v1", "Invalid IPv6 URL"),
        (
            "https://user:sk-secret\uff20example.com/v1",
            "netloc contains invalid characters under NFKC normalization",
        ),
    ],
)
def test_malformed_url_refused_with_reason(url, detail):
    with pytest.raises(ValidationError) as caught:
        base_url_validate(url, allow_private=True)
    assert caught.value.messages[0].startswith("The base URL is not a valid URL (")
    assert detail in caught.value.messages[0]
    # The part of the URL the parser quotes (a token, a key) never comes back.
    assert "'" not in caught.value.messages[0]
    assert "secret" not in caught.value.messages[0]


def test_url_without_host_refused():
    assert _message("https:///v1") == "The base URL has no host."


def test_credentials_in_url_refused():
    assert _message("https://user:sk-secret@8.8.8.8/v1") == (
        "The base URL must not carry credentials; put the key in the key field."
    )


@pytest.fixture
def dns_zone(monkeypatch):
    """Answers for the names below in place of a DNS server; any other name is unknown."""
    zone = {
        # IDNA 2003 (the standard library's codec) maps "ß" to "ss"...
        "strasse.example": "93.184.216.34",
        # ...IDNA 2008 (httpx, so the OpenAI and Anthropic SDKs, and urllib3) keeps it.
        "xn--strae-oqa.example": "10.0.0.7",
        "xn--bcher-kva.example": "93.184.216.35",
    }

    def getaddrinfo(host, port, *args, **kwargs):
        name = host.decode("ascii") if isinstance(host, bytes) else host.encode("idna").decode()
        if name not in zone:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (zone[name], port or 0))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_idna_host_checked_under_the_name_the_sdk_connects_to(settings, dns_zone):
    settings.PROVIDER_ALLOW_PRIVATE_URLS = False
    url = "https://straße.example/v1"
    # Where the SDKs' HTTP client sends the call: the IDNA 2008 name, a private host.
    assert httpx2.URL(url).raw_host == b"xn--strae-oqa.example"

    assert _message(url) == (
        "The base URL points at a private address (10.0.0.7); provider URLs must be public "
        "unless PROVIDER_ALLOW_PRIVATE_URLS is on."
    )


def test_idna_host_accepted_when_every_spelling_is_public(settings, dns_zone):
    settings.PROVIDER_ALLOW_PRIVATE_URLS = False
    assert base_url_validate("https://bücher.example/v1") is None
