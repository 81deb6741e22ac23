"""Writes on service keys: create one (its secret is returned once) and revoke it."""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from llm_providers.models import ServiceKey, Tenant


@transaction.atomic
def service_key_create(
    *, tenant: Tenant, name: str, expiry_date: datetime | None = None
) -> tuple[ServiceKey, str]:
    """Create a key for `tenant`; returns the key row and the full secret, which is
    stored only as a hash and cannot be shown again."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Name the service key, e.g. after the program using it."})
    if expiry_date is not None and expiry_date <= timezone.now():
        raise ValidationError({"expiry_date": "The expiry date must be in the future."})
    service_key = ServiceKey(tenant=tenant, name=name, expiry_date=expiry_date)
    secret = ServiceKey.objects.assign_key(service_key)
    service_key.full_clean(exclude=["id", "prefix", "hashed_key"])
    service_key.save()
    return service_key, secret


def service_key_revoke(*, service_key: ServiceKey) -> bool:
    """Revoke the key for good; returns False when it was revoked already."""
    if service_key.revoked:
        return False
    service_key.revoked = True
    service_key.save(update_fields=["revoked"])
    return True
