"""Tenants, memberships, service keys, user tokens, provider configs (encrypted credentials)
and prices."""

from __future__ import annotations

import re
import uuid
import zoneinfo
from collections.abc import Iterable

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, router, transaction
from django.db.models import Q
from django.template.defaultfilters import pluralize
from rest_framework_api_key.models import AbstractAPIKey

from .encryption import (
    GuardedEncryptedTextField,
    UnreadableSecret,
    secret_display_parts,
    secret_fingerprint,
    secret_mask,
)
from .exceptions import SecretUnreadableError
from .json_values import (
    CONTROL_CHARACTERS,
    MODEL_NAME_CONTROL,
    json_value_error,
    model_name_validate,
)
from .network import base_url_validate
from .provider_types import ProviderType, provider_type_spec

# An AWS region name: us-east-1, eu-central-2, us-gov-west-1. The SDK builds the
# endpoint's host from it and refuses anything else only when a call is made.
_AWS_REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}$")


def _timezone_validate(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"“{value}” is not a known time zone, e.g. UTC or Europe/Paris.")


def _slug_validate(value: str) -> None:
    # The API names a tenant by slug or id in the same place and tries the id first.
    try:
        uuid.UUID(value)
    except ValueError:
        return
    raise ValidationError(
        f"“{value}” reads as a tenant id (a UUID) where the API takes a slug or an id: "
        "choose a slug that is not one."
    )


def _rows_locked(queryset) -> None:
    """Lock `queryset`'s rows FOR UPDATE, in the order of their keys."""
    list(queryset.order_by("pk").select_for_update().values_list("pk", flat=True))


class LockedDeleteQuerySet(models.QuerySet):
    """A queryset whose delete() first locks what it deletes: see LockedDeleteModel."""

    def delete(self):
        with transaction.atomic(using=self.db, savepoint=False):
            if not self.query.is_sliced:  # refused by delete() below
                self.model.rows_lock_for_delete(self.db, self.values("pk"))
            return super().delete()

    delete.alters_data = True
    delete.queryset_only = True


class LockedDeleteModel(models.Model):
    """A model for whose rows background work writes rows of other models.

    Its deletes (one instance, or a queryset's) lock its rows
    (`rows_lock_for_delete`) before Django collects the rows that refer to
    them: a row that the work added meanwhile would be left out and fail the
    delete at its commit. The work locks the rows it refers to first
    (FOR KEY SHARE), so it waits for the delete and finds them gone, or the
    delete waits for it and takes its rows with it. Rows are locked in one
    order, tenants, then budgets, then provider configs, by deletes and work
    alike, so that neither waits for the other in a cycle.
    """

    class Meta:
        abstract = True

    @classmethod
    def rows_lock_for_delete(cls, using: str, pks) -> None:
        _rows_locked(cls._base_manager.using(using).filter(pk__in=pks))

    @classmethod
    def _budgets_lock_for_delete(cls, using: str, field: str, pks) -> None:
        # The budgets going with these rows: a database budget counter's rows
        # are written for a budget, which that writer locks alone.
        budget = cls._meta.get_field("budgets").related_model
        _rows_locked(budget._base_manager.using(using).filter(**{f"{field}__in": pks}))

    def delete(self, using=None, keep_parents=False):
        using = using or router.db_for_write(type(self), instance=self)
        with transaction.atomic(using=using, savepoint=False):
            type(self).rows_lock_for_delete(using, [self.pk])
            return super().delete(using=using, keep_parents=keep_parents)


class Tenant(LockedDeleteModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True, validators=[_slug_validate])
    is_active = models.BooleanField(default=True)
    timezone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[_timezone_validate],
        help_text=(
            "An IANA time zone name such as Europe/Berlin or America/New_York; usage days "
            "and daily budgets follow it."
        ),
    )
    response_cache_ttl_seconds = models.PositiveIntegerField(
        "response cache TTL (seconds)",
        default=0,
        validators=[MaxValueValidator(30 * 24 * 3600)],
        help_text="How long identical completions are served from cache; 0 turns caching off.",
    )
    store_prompt_previews = models.BooleanField(
        default=False,
        help_text="Keep a truncated preview of prompts in call logs.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = LockedDeleteQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        # What a save's signals write for it commits with it, even outside an
        # atomic block: a new time zone's recount request (usage.invalidation)
        # must never be missing while the zone is seen, or an aggregation and
        # alert check in between would count some hours in both zones.
        using = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        with transaction.atomic(using=using, savepoint=False):
            super().save(*args, **kwargs)

    @classmethod
    def rows_lock_for_delete(cls, using: str, pks) -> None:
        # Call logs and alerts lock their tenant; budget counters only their budget.
        super().rows_lock_for_delete(using, pks)
        cls._budgets_lock_for_delete(using, "tenant", pks)


class TenantMembership(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin", "Admin"
        VIEWER = "viewer", "Viewer"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tenant_memberships"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="membership_unique_user_tenant")
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.tenant} ({self.role})"


class ServiceKey(AbstractAPIKey):
    """A hashed API key with which an internal program acts for one tenant."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="service_keys")

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "service key"
        verbose_name_plural = "service keys"


# The first characters of a user token, kept in clear to find its row: a new
# token's generated prefix, or the start of a token carried over from DRF's
# authtoken (40 hex characters, no separator).
USER_TOKEN_PREFIX_LENGTH = 8


class UserToken(AbstractAPIKey):
    """A hashed API token with which a person's scripts act as that person.

    A new token is `<prefix>.<secret>`; a token carried over from DRF's
    authtoken is 40 hex characters. Either way its first 8 characters are
    its prefix and only the SHA-512 hash of the whole token is stored.
    """

    # Not unique, unlike a service key's: a carried-over token's prefix is a
    # slice of it, which two tokens may share. The hash tells them apart.
    prefix = models.CharField(max_length=USER_TOKEN_PREFIX_LENGTH, db_index=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "user token"
        verbose_name_plural = "user tokens"


# Credentials travel in HTTP headers (or a SigV4 signature): visible ASCII only.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
_SECRET_FIELDS = (
    ("api_key", "API key"),
    ("aws_access_key_id", "AWS access key id"),
    ("aws_secret_access_key", "AWS secret access key"),
)


def _secret_given(value):
    """A secret as given, without blanks around it; a stored unreadable one is kept."""
    if isinstance(value, str):
        return value.strip() or None
    return value or None


class ProviderConfig(LockedDeleteModel):
    """One tenant's account at one provider: credentials, endpoint, models and limits.

    Credentials are Fernet-encrypted at rest; plaintext leaves this model only
    through `credentials()`, which the adapter factory hands to an SDK client.
    """

    class TestStatus(models.TextChoices):
        UNTESTED = "", "Not tested"
        OK = "ok", "OK"
        ERROR = "error", "Error"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="provider_configs")
    name = models.CharField(max_length=100)
    provider_type = models.CharField(max_length=32, choices=ProviderType.choices)

    api_key = GuardedEncryptedTextField(blank=True, null=True)
    aws_access_key_id = GuardedEncryptedTextField(blank=True, null=True)
    aws_secret_access_key = GuardedEncryptedTextField(blank=True, null=True)
    aws_region = models.CharField(max_length=32, blank=True)
    base_url = models.CharField(
        max_length=500,
        blank=True,
        help_text=(
            "Leave empty to use the provider's standard endpoint; Azure OpenAI (the "
            "resource endpoint) and OpenAI-compatible servers need one."
        ),
    )
    options = models.JSONField(default=dict, blank=True)

    allowed_models = models.JSONField(
        default=list, blank=True, help_text="Models this config may serve; empty means any."
    )
    default_model = models.CharField(max_length=200, blank=True, validators=[model_name_validate])

    is_active = models.BooleanField(default=True)
    is_default = models.BooleanField(default=False)
    priority = models.PositiveIntegerField(
        default=100, help_text="Fallback order for the tenant default route: lower goes first."
    )
    rpm_limit = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text="Requests per minute."
    )
    tpm_limit = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text="Tokens per minute."
    )

    key_fingerprint = models.CharField(max_length=16, blank=True, editable=False)
    key_prefix = models.CharField(max_length=10, blank=True, editable=False)
    key_last4 = models.CharField(max_length=4, blank=True, editable=False)

    last_test_status = models.CharField(
        max_length=8, choices=TestStatus.choices, blank=True, default=TestStatus.UNTESTED
    )
    last_tested_at = models.DateTimeField(null=True, blank=True)
    last_test_latency_ms = models.PositiveIntegerField(
        "last test latency (ms)", null=True, blank=True
    )
    last_test_error = models.CharField(max_length=500, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = LockedDeleteQuerySet.as_manager()

    class Meta:
        ordering = ["tenant", "priority", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"],
                name="provider_config_unique_name",
                violation_error_message="A provider config with this name already exists in "
                "this tenant.",
            ),
            models.UniqueConstraint(
                fields=["tenant"],
                condition=Q(is_default=True),
                name="provider_config_one_default_per_tenant",
                violation_error_message="This tenant already has a default provider config.",
            ),
        ]
        indexes = [models.Index(fields=["tenant", "is_active", "priority"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_provider_type_display()})"

    @classmethod
    def rows_lock_for_delete(cls, using: str, pks) -> None:
        # Budgets come before provider configs (LockedDeleteModel).
        cls._budgets_lock_for_delete(using, "provider_config", pks)
        super().rows_lock_for_delete(using, pks)

    # --- secrets -------------------------------------------------------------

    @property
    def spec(self):
        return provider_type_spec(self.provider_type)

    def _display_secret_source(self):
        if self.spec.requires_aws_credentials:
            return self.aws_access_key_id
        return self.api_key

    def _fingerprint_source(self):
        if self.spec.requires_aws_credentials:
            return self.aws_secret_access_key
        return self.api_key

    def set_api_key(self, value: str) -> None:
        """Store a new API key and the parts of it that are safe to show.

        Blanks around it (a key pasted with its line break) are not part of it."""
        self.api_key = _secret_given(value)
        self._refresh_key_display()

    def set_aws_credentials(self, *, access_key_id: str, secret_access_key: str) -> None:
        self.aws_access_key_id = _secret_given(access_key_id)
        self.aws_secret_access_key = _secret_given(secret_access_key)
        self._refresh_key_display()

    def _refresh_key_display(self) -> None:
        shown = self._display_secret_source()
        hashed = self._fingerprint_source()
        if isinstance(shown, str) and shown:
            self.key_prefix, self.key_last4 = secret_display_parts(shown)
        else:
            self.key_prefix, self.key_last4 = "", ""
        self.key_fingerprint = (
            secret_fingerprint(hashed) if isinstance(hashed, str) and hashed else ""
        )

    @property
    def has_key(self) -> bool:
        return bool(self._fingerprint_source())

    @property
    def key_unreadable(self) -> bool:
        return any(
            isinstance(value, UnreadableSecret)
            for value in (self.api_key, self.aws_access_key_id, self.aws_secret_access_key)
        )

    @property
    def key_mask(self) -> str:
        """What the admin and the API show instead of the key."""
        if self.key_unreadable:
            return "key unreadable — enter it again"
        if not self.has_key:
            return ""
        return secret_mask(self.key_prefix, self.key_last4)

    def _readable(self, field_name: str, label: str) -> str:
        value = getattr(self, field_name)
        if isinstance(value, UnreadableSecret):
            raise SecretUnreadableError(
                f"The {label} of provider config “{self.name}” ({self.id}) cannot be decrypted "
                "with the configured SECRET_KEY/SALT_KEY: restore the old key or enter the "
                f"{label} again.",
                extra={"provider_config_id": str(self.id), "field": field_name},
            )
        return value or ""

    def credentials(self) -> dict[str, str]:
        """Decrypted credentials for an SDK client; raises SecretUnreadableError."""
        if self.spec.requires_aws_credentials:
            return {
                "aws_access_key_id": self._readable("aws_access_key_id", "AWS access key id"),
                "aws_secret_access_key": self._readable(
                    "aws_secret_access_key", "AWS secret access key"
                ),
            }
        return {"api_key": self._readable("api_key", "API key")}

    # --- validation ----------------------------------------------------------

    def endpoint_validate(self) -> None:
        """Raise ValidationError unless calls may go to the URL this config uses.

        That is the typed base URL or, without one, the type's default. The
        defaults of vendors are their public endpoints, fixed in code; the
        default of a self-hosted type (Ollama's localhost) is this server's
        own machine, so it is checked like a typed URL.
        """
        if self.base_url:
            base_url_validate(self.base_url)
            return
        spec = self.spec
        if not (spec.self_hosted and spec.default_base_url):
            return
        try:
            base_url_validate(spec.default_base_url)
        except ValidationError:
            raise ValidationError(
                f"{self.get_provider_type_display()} needs a base URL on a public address: "
                f"its default endpoint ({spec.default_base_url}) is not public. Enter one, or "
                "turn on PROVIDER_ALLOW_PRIVATE_URLS to allow private addresses.",
                code="private_address",
            ) from None

    def clean(self) -> None:
        super().clean()
        errors: dict[str, list[str]] = {}
        try:
            spec = self.spec
        except ValueError:
            raise ValidationError({"provider_type": "Choose a provider type."}) from None
        label = self.get_provider_type_display()

        if spec.requires_api_key and not self.api_key:
            errors.setdefault("api_key", []).append(f"{label} needs an API key.")
        for field, name in _SECRET_FIELDS:
            value = getattr(self, field)
            if isinstance(value, str) and value and not _HEADER_SAFE.fullmatch(value):
                # The key itself is never quoted back.
                errors.setdefault(field, []).append(
                    f"The {name} holds a character that cannot be sent to the provider (a "
                    "space, a line break, an accented letter or a symbol outside ASCII): "
                    "copy the key again, whole and alone."
                )
        if spec.requires_aws_credentials:
            missing = [
                (field, name)
                for field, name, value in (
                    ("aws_access_key_id", "an AWS access key id", self.aws_access_key_id),
                    (
                        "aws_secret_access_key",
                        "an AWS secret access key",
                        self.aws_secret_access_key,
                    ),
                    ("aws_region", "a region", self.aws_region),
                )
                if not value
            ]
            if missing:
                # Shown at the first field left empty, where the admin looks.
                field = missing[0][0]
                missing = [name for _, name in missing]
                errors.setdefault(field, []).append(
                    f"{label} needs an AWS access key id, an AWS secret access key and a "
                    f"region; missing: {', '.join(missing)}."
                )
            if self.aws_region and not _AWS_REGION.fullmatch(self.aws_region):
                errors.setdefault("aws_region", []).append(
                    f"“{self.aws_region}” is not an AWS region; enter one such as us-east-1."
                )
        if spec.requires_base_url and not self.base_url:
            errors.setdefault("base_url", []).append(
                f"{label} needs a base URL (the endpoint of your deployment)."
            )
        try:
            self.endpoint_validate()
        except ValidationError as exc:
            errors.setdefault("base_url", []).extend(exc.messages)

        errors.update(self._options_errors(spec, label))

        if not isinstance(self.allowed_models, list) or not all(
            isinstance(m, str) and m for m in self.allowed_models
        ):
            errors.setdefault("allowed_models", []).append(
                "Allowed models must be a list of model names."
            )
        elif any(CONTROL_CHARACTERS.search(m) for m in self.allowed_models):
            errors.setdefault("allowed_models", []).append(MODEL_NAME_CONTROL)
        elif (
            self.default_model
            and self.allowed_models
            and (self.default_model not in self.allowed_models)
        ):
            errors.setdefault("default_model", []).append(
                f"The default model “{self.default_model}” is not among the allowed models."
            )
        if self.is_default and not self.is_active:
            errors.setdefault("is_default", []).append(
                "An inactive provider config cannot be the tenant default."
            )
        if errors:
            raise ValidationError(errors)

    def options_validate(self) -> None:
        """Raise ValidationError unless the options are ones the adapter can use.

        `clean()` checks them on save; adapters check again, so a config
        stored before a check existed fails with a message, not in an SDK.
        """
        errors = self._options_errors(self.spec, self.get_provider_type_display())
        if errors:
            raise ValidationError(errors)

    def _options_errors(self, spec, label: str) -> dict[str, list[str]]:
        options = self.options
        if not isinstance(options, dict):
            return {"options": ["Options must be a JSON object."]}
        value_error = json_value_error(options, subject="Options")
        if value_error:
            # Nothing else is looked at: the other messages would quote the value.
            return {"options": [value_error]}
        messages = []
        unknown = sorted(set(options) - spec.allowed_options)
        if unknown:
            messages.append(
                f"Unknown option{pluralize(len(unknown))} for {label}: {', '.join(unknown)}. "
                f"Allowed: {', '.join(sorted(spec.allowed_options)) or 'none'}."
            )
        missing = [name for name in spec.required_options if not options.get(name)]
        if missing:
            messages.append(
                f"{label} needs the option{pluralize(len(missing))}: {', '.join(missing)}."
            )
        for name in sorted(_NAME_OPTIONS & spec.allowed_options):
            value = options.get(name)
            if value is not None and name not in missing and not _option_name_is_valid(value):
                messages.append(
                    f"Option “{name}” must be a text of at most {MAX_OPTION_NAME_LENGTH} "
                    "characters without spaces or control characters."
                )
        if self.provider_type == ProviderType.AZURE_OPENAI:
            deployments = options.get("deployments", {})
            if not isinstance(deployments, dict) or not all(
                isinstance(k, str) and k and _option_name_is_valid(v) and v
                for k, v in deployments.items()
            ):
                messages.append("Azure “deployments” must map model names to deployment names.")
            elif not options.get("deployment") and not deployments:
                messages.append(
                    "Azure OpenAI needs a “deployment” (or a “deployments” map of model → "
                    "deployment)."
                )
        if self.provider_type == ProviderType.FAKE:
            messages += _fake_options_errors(options)
        for name in ("timeout", "connect_timeout"):
            value = options.get(name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value <= 600
            ):
                messages.append(
                    f"Option “{name}” must be a number of seconds greater than 0 and at most 600."
                )
        return {"options": messages} if messages else {}

    def model_is_allowed(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models


def model_names_unique(names: Iterable[str]) -> list[str]:
    """Model names as a config stores them: trimmed, empty ones dropped, each
    once, in the order first given (the admin form and the API alike)."""
    unique: list[str] = []
    for name in names:
        name = name.strip()
        if name and name not in unique:
            unique.append(name)
    return unique


# Options sent as HTTP headers (organization, project), in the query (api_version)
# or in the URL path (deployment names).
_NAME_OPTIONS = frozenset({"organization", "project", "api_version", "deployment"})
MAX_OPTION_NAME_LENGTH = 200


def _option_name_is_valid(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) <= MAX_OPTION_NAME_LENGTH
        and not any(character.isspace() or not character.isprintable() for character in value)
    )


def _fake_options_errors(options: dict) -> list[str]:
    from .adapters.fake import FAILURES

    messages = []
    for name in ("latency_ms", "chunk_latency_ms", "fail_first"):
        value = options.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 60_000
        ):
            messages.append(f"Option “{name}” must be a whole number from 0 to 60000.")
    failure = options.get("failure")
    # Checked as text first: a list or an object is no key of FAILURES (nor hashable).
    if failure is not None and (not isinstance(failure, str) or failure not in FAILURES):
        messages.append(f"Option “failure” must be one of: {', '.join(sorted(FAILURES))}.")
    models_offered = options.get("models")
    if models_offered is not None and (
        not isinstance(models_offered, list)
        or not all(isinstance(m, str) and m for m in models_offered)
    ):
        messages.append("Option “models” must be a list of model names.")
    reply = options.get("reply")
    if reply is not None and not isinstance(reply, str):
        messages.append("Option “reply” must be a string.")
    return messages


class ModelPrice(models.Model):
    """A price that overrides genai-prices, for every tenant or for one, from a date on.

    Prices are USD per million tokens. Cache prices left empty fall back to the
    input price.
    """

    tenant = models.ForeignKey(
        Tenant,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="model_prices",
        help_text="Empty: applies to every tenant.",
    )
    provider_type = models.CharField(max_length=32, choices=ProviderType.choices)
    model = models.CharField(max_length=200)
    # A negative price, cache ones included, would make calls earn money back.
    input_per_mtok = models.DecimalField(
        max_digits=14, decimal_places=6, validators=[MinValueValidator(0)]
    )
    output_per_mtok = models.DecimalField(
        max_digits=14, decimal_places=6, validators=[MinValueValidator(0)]
    )
    cache_read_per_mtok = models.DecimalField(
        max_digits=14, decimal_places=6, null=True, blank=True, validators=[MinValueValidator(0)]
    )
    cache_write_per_mtok = models.DecimalField(
        max_digits=14, decimal_places=6, null=True, blank=True, validators=[MinValueValidator(0)]
    )
    effective_from = models.DateField(
        help_text="Applies to calls from 00:00 UTC on this day, as providers date their prices."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["provider_type", "model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider_type", "model", "effective_from"],
                condition=Q(tenant__isnull=True),
                name="model_price_unique_global",
                violation_error_message="A global price for this model from this day already "
                "exists: change that one, or choose another day.",
            ),
            models.UniqueConstraint(
                fields=["tenant", "provider_type", "model", "effective_from"],
                condition=Q(tenant__isnull=False),
                name="model_price_unique_tenant",
                violation_error_message="This tenant already has a price for this model from "
                "this day: change that one, or choose another day.",
            ),
            models.CheckConstraint(
                condition=Q(input_per_mtok__gte=0) & Q(output_per_mtok__gte=0),
                name="model_price_non_negative",
            ),
        ]

    def __str__(self) -> str:
        scope = self.tenant.slug if self.tenant_id else "all tenants"
        return f"{self.provider_type}/{self.model} from {self.effective_from} ({scope})"
