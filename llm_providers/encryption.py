"""Encrypted model fields that refuse to pass ciphertext off as a secret.

django-fernet-encrypted-fields returns the stored ciphertext unchanged when it
cannot decrypt it (wrong SECRET_KEY or SALT_KEY). Handed to an SDK, that
ciphertext would be sent upstream as if it were the key. `GuardedEncryptedTextField`
returns an `UnreadableSecret` instead: it is not a string, cannot be used as a
key, and saves back the original ciphertext untouched so nothing is lost.
"""

from __future__ import annotations

import hashlib

from cryptography.fernet import InvalidToken
from encrypted_fields.fields import EncryptedFieldMixin, EncryptedTextField


class UnreadableSecret:
    """A stored secret that does not decrypt under any configured key."""

    __slots__ = ("ciphertext",)

    def __init__(self, ciphertext: str):
        self.ciphertext = ciphertext

    def __repr__(self) -> str:
        return "<UnreadableSecret>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnreadableSecret) and other.ciphertext == self.ciphertext

    def __hash__(self) -> int:
        return hash(self.ciphertext)


class GuardedEncryptedTextField(EncryptedTextField):
    """Fernet-encrypted text; an undecryptable value reads back as `UnreadableSecret`."""

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        try:
            return self.f.decrypt(value.encode("utf-8")).decode("utf-8")
        except (InvalidToken, UnicodeError, ValueError):
            return UnreadableSecret(value)

    def to_python(self, value):
        if isinstance(value, UnreadableSecret):
            return value
        return super().to_python(value)

    def get_prep_value(self, value):
        if isinstance(value, UnreadableSecret):
            # Keep the stored ciphertext as it is: it may become readable again
            # once the right key is restored.
            return value.ciphertext
        return super().get_prep_value(value)

    def value_to_string(self, obj):
        # Serialisation (dumpdata) never writes a secret out in clear.
        return "<secret>"


def secret_fingerprint(secret: str) -> str:
    """A short, stable, non-reversible identifier of a high-entropy secret."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:16]


# Public prefixes that vendors print on their own dashboards; anything else
# of the key is shown only as its last four characters.
_PUBLIC_KEY_PREFIXES = ("sk-ant-", "sk-proj-", "sk-", "gsk_", "AIza", "AKIA", "ASIA")
# Below this many characters after the public prefix, even four characters are
# too large a share of what is secret (and "sk-proj-wxyz" would be shown whole).
_MIN_SECRET_LENGTH_TO_SHOW_LAST4 = 12


def secret_display_parts(secret: str) -> tuple[str, str]:
    """Return (public prefix, last four characters) safe to store and display.

    The last four are shown only when at least 12 characters follow the
    public prefix; otherwise nothing of the key is.
    """
    prefix = next((p for p in _PUBLIC_KEY_PREFIXES if secret.startswith(p)), "")
    secret_part = secret[len(prefix) :]
    last4 = secret[-4:] if len(secret_part) >= _MIN_SECRET_LENGTH_TO_SHOW_LAST4 else ""
    return prefix, last4


def secret_mask(prefix: str, last4: str) -> str:
    """`sk-…abcd`, or `…abcd`, or `••••` when nothing may be shown."""
    if not last4:
        return "••••"
    return f"{prefix}…{last4}"


def encrypted_fields_reset_keys() -> None:
    """Forget the derived Fernet keys so the next use re-reads SECRET_KEY / SALT_KEY."""
    from django.apps import apps

    for model in apps.get_models():
        for field in model._meta.get_fields():
            if isinstance(field, EncryptedFieldMixin):
                field.__dict__.pop("keys", None)
                field.__dict__.pop("f", None)


def _on_setting_changed(*, setting, **kwargs):
    if setting in {"SECRET_KEY", "SALT_KEY", "SECRET_KEY_FALLBACKS"}:
        encrypted_fields_reset_keys()


def _connect_setting_changed() -> None:
    from django.test.signals import setting_changed

    setting_changed.connect(_on_setting_changed, dispatch_uid="llm_providers.encryption")


_connect_setting_changed()
