"""Admin forms: write-only secrets, provider type help, tenant-limited choices; login forms
that throttle failed logins per client address."""

from __future__ import annotations

import math
import re

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.forms.fields import InvalidJSONInput
from django.forms.models import construct_instance
from django.template.defaultfilters import pluralize
from django.utils import timezone
from django.utils.html import format_html_join

from .api.throttling import authentication_attempt
from .json_values import MAX_JSON_DEPTH, json_value_problem
from .models import (
    ProviderConfig,
    ServiceKey,
    TenantMembership,
    UserToken,
    model_names_unique,
)
from .provider_types import PROVIDER_TYPE_SPECS, Protocol, ProviderType, ProviderTypeSpec
from .services import provider_config_endpoint_changed, provider_config_new_endpoint_secrets_check

# A provider config's credentials: stored encrypted, never read back into the
# form (the page shows their mask), and left empty to keep the stored value.
SECRET_FORM_FIELDS = ("api_key", "aws_access_key_id", "aws_secret_access_key")
# Of those, the secrets proper: not sent back to the page even as typed into
# the form that is shown again with errors. The AWS access key id is an
# identifier (AWS shows it in consoles and logs, SigV4 names it in every
# request's header), kept as typed like the other fields, so a form shown
# again for a missing region keeps it.
WRITE_ONLY_FORM_FIELDS = ("api_key", "aws_secret_access_key")
# What a provider config stores of its credentials, the parts shown included.
_STORED_KEY_FIELDS = (*SECRET_FORM_FIELDS, "key_prefix", "key_last4", "key_fingerprint")


def provider_type_requirements(spec: ProviderTypeSpec) -> str:
    """What a provider type needs, in words, e.g. "API key; base URL; option api_version"."""
    needs = []
    if spec.requires_api_key:
        needs.append("API key")
    if spec.requires_aws_credentials:
        needs.append("AWS access key id, AWS secret access key and region")
    if spec.requires_base_url:
        needs.append("base URL (your endpoint)")
    if spec.required_options:
        options = spec.required_options
        needs.append(f"option{pluralize(options)} " + ", ".join(options))
    if spec.provider_type == ProviderType.AZURE_OPENAI:
        needs.append('option "deployment" or a "deployments" map of model → deployment')
    if not needs:
        needs.append(
            "no key" if spec.provider_type != ProviderType.OLLAMA else "no key (local server)"
        )
    text = "; ".join(needs)
    if spec.default_base_url and not spec.requires_base_url:
        text += f". Default endpoint: {spec.default_base_url}"
    options = sorted(
        spec.allowed_options - set(spec.required_options) - {"deployment", "deployments"}
    )
    if options:
        text += f". Optional options: {', '.join(options)}"
    return text + "."


def options_help_text() -> str:
    """The options field's help, naming the types whose specs take no timeout."""
    without_timeout = [
        str(ProviderType(provider_type).label)
        for provider_type, spec in PROVIDER_TYPE_SPECS.items()
        if "timeout" not in spec.allowed_options
    ]
    types = "any type"
    if without_timeout:
        types += f" but {' or '.join(without_timeout)}"
    return (
        'A JSON object, e.g. {"api_version": "2024-10-21", "deployment": "gpt-4o"} '
        f'for Azure or {{"timeout": 30}} for {types}.'
    )


def provider_type_unused_fields() -> dict[str, list[str]]:
    """The provider config form fields each provider type has no use for, by type.

    The admin hides them once a type is chosen: AWS credentials are for
    Bedrock only, which takes no API key, and the Fake provider needs neither
    a key nor an endpoint.
    """
    unused: dict[str, list[str]] = {}
    for provider_type, spec in PROVIDER_TYPE_SPECS.items():
        fields = []
        if spec.protocol in (Protocol.BEDROCK_CONVERSE, Protocol.FAKE):
            fields.append("api_key")
        if not spec.requires_aws_credentials:
            fields += ["aws_access_key_id", "aws_secret_access_key", "aws_region"]
        if spec.protocol == Protocol.FAKE:
            fields.append("base_url")
        unused[str(provider_type)] = fields
    return unused


def provider_type_help_html() -> str:
    """An HTML list of every provider type and what it needs, for the admin form."""
    rows = (
        (ProviderType(provider_type).label, provider_type_requirements(spec))
        for provider_type, spec in PROVIDER_TYPE_SPECS.items()
    )
    return format_html_join("", "<li><strong>{}</strong>: {}</li>", rows)


class ModelNamesField(forms.CharField):
    """A list of model names typed one per line or separated by commas."""

    widget = forms.Textarea(attrs={"rows": 3})

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return "\n".join(value)
        return value

    def to_python(self, value):
        text = super().to_python(value)
        if isinstance(text, list):
            return text
        return model_names_unique(re.split(r"[,\n]", text or ""))


class OptionsJSONField(forms.JSONField):
    """Provider options as typed JSON. Nesting too deep for the JSON decoder is a
    form error, and a value the model refuses (an unpaired surrogate, deep
    nesting) is shown back as typed rather than re-encoded."""

    def to_python(self, value):
        try:
            return super().to_python(value)
        except RecursionError:
            raise ValidationError(
                f"Options must not be nested more than {MAX_JSON_DEPTH} levels deep.",
                code="too_deep",
            ) from None

    def bound_data(self, data, initial):
        try:
            value = super().bound_data(data, initial)
        except RecursionError:
            return InvalidJSONInput(data)
        if isinstance(data, str) and json_value_problem(value) is not None:
            return InvalidJSONInput(data)
        return value


def secret_inputs_ask_again(form: forms.BaseForm, messages: dict[str, str]) -> None:
    """After a failed validation, flag each secret input that was typed into.

    A secret input comes back empty (it is never rendered), and an empty one
    means "keep the stored value": saving the corrected form as shown would
    silently keep the old key or URL. `messages` maps field names to what to say.
    """
    if not form.is_bound or not form._errors:
        return
    for name, message in messages.items():
        typed = (form.data.get(form.add_prefix(name)) or "").strip()
        if typed and name in form.fields and name not in form._errors:
            form.add_error(name, ValidationError(message, code="enter_again"))


def _secret_widget() -> forms.PasswordInput:
    # render_value=False: a stored secret is never sent back to the browser,
    # not even after a validation error.
    return forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})


class ProviderConfigAdminForm(forms.ModelForm):
    """Validates a provider config as it will be stored, without saving it.

    Secrets are write-only: a field left empty keeps the stored value. Saving
    goes through `provider_config_create` / `provider_config_update` (see the
    admin), never through `ModelForm.save()`.
    """

    api_key = forms.CharField(
        label="API key", required=False, strip=True, widget=_secret_widget(), max_length=2000
    )
    aws_access_key_id = forms.CharField(
        label="AWS access key id",
        required=False,
        strip=True,
        # Shows what was typed into the form being answered; a stored id is
        # never an initial value (see __init__), so it shows as the mask only.
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "spellcheck": "false", "class": "vTextField"}
        ),
        max_length=200,
    )
    aws_secret_access_key = forms.CharField(
        label="AWS secret access key",
        required=False,
        strip=True,
        widget=_secret_widget(),
        max_length=200,
    )
    allowed_models = ModelNamesField(
        required=False,
        help_text="One model name per line (or comma-separated); empty means any model.",
    )

    class Meta:
        model = ProviderConfig
        fields = [
            "tenant",
            "name",
            "provider_type",
            "default_model",
            "allowed_models",
            "base_url",
            "aws_region",
            "options",
            "is_active",
            "is_default",
            "priority",
            "rpm_limit",
            "tpm_limit",
        ]
        field_classes = {"options": OptionsJSONField}
        labels = {
            "base_url": "Base URL",
            "aws_region": "AWS region",
            "rpm_limit": "RPM limit",
            "tpm_limit": "TPM limit",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Stored credentials never become initial values: nothing of them
        # reaches a page, and an empty field does not count as a change.
        for name in SECRET_FORM_FIELDS:
            self.initial.pop(name, None)
        instance = self.instance
        if not instance._state.adding:
            mask = instance.key_mask
            if instance.key_unreadable:
                note = f"Stored: {mask}."
            elif mask:
                note = f"Stored: {mask}. Leave empty to keep it."
            else:
                note = "Nothing stored."
            for name in SECRET_FORM_FIELDS:
                self.fields[name].help_text = note
        if "provider_type" in self.fields:
            self.fields[
                "provider_type"
            ].help_text = "What each type needs is listed above the form."
        if "options" in self.fields:
            self.fields["options"].help_text = options_help_text()

    def full_clean(self):
        super().full_clean()
        secret_inputs_ask_again(
            self,
            {
                name: "Enter the key again: a typed key is never sent back to the page."
                for name in WRITE_ONLY_FORM_FIELDS
            },
        )

    def secrets(self) -> dict[str, str]:
        """The secrets typed into the form; empty ones are left out (kept as stored)."""
        cleaned = getattr(self, "cleaned_data", {})
        return {name: cleaned[name] for name in SECRET_FORM_FIELDS if cleaned.get(name)}

    def _config_field_names(self) -> list[str]:
        # The admin lists the secret fields in Meta.fields too (they are model
        # fields); they must never be copied onto the instance as typed.
        return [name for name in self._meta.fields or () if name not in SECRET_FORM_FIELDS]

    def config_fields(self) -> dict:
        """The non-secret fields of the form, as `provider_config_*` services take them."""
        return {
            name: self.cleaned_data[name]
            for name in self._config_field_names()
            if name in self.cleaned_data and name != "tenant"
        }

    def _config_errors_add(self, exc: ValidationError) -> None:
        # A value its own field refused (a key too long, options that are not
        # JSON) was typed, yet it is left out of what the config checks see:
        # they would call it missing (a key, Azure's api_version option), or
        # ask for it again, beside the field's own error. Only that error shows.
        refused = {name for name in self._errors if name != NON_FIELD_ERRORS}
        if refused and hasattr(exc, "error_dict"):
            kept = {name: errors for name, errors in exc.error_dict.items() if name not in refused}
            if not kept:
                return
            exc = ValidationError(kept)
        self._update_errors(exc)

    def _post_clean(self):
        # Validate the config as the services will store it: with the typed
        # secrets applied, and letting a new default replace the tenant's old
        # one (the services demote the previous default in the same transaction).
        try:
            self.instance = construct_instance(
                self, self.instance, self._config_field_names(), self._meta.exclude
            )
        except ValidationError as exc:
            self._update_errors(exc)
            return
        if "provider_type" in self._errors:
            # No type (none chosen, or a forged one): what the config needs,
            # and how its key is shown, are unknown, so there is nothing more to check.
            return
        stored = {name: getattr(self.instance, name) for name in _STORED_KEY_FIELDS}
        self._config_check()
        if self._errors:
            # The page shown again says what is stored (the key's mask and
            # fingerprint), as the key fields' help does, not what the typed
            # keys would have made of it: nothing was saved.
            for name, value in stored.items():
                setattr(self.instance, name, value)

    def _config_check(self) -> None:
        secrets = self.secrets()
        if provider_config_endpoint_changed(provider_config=self.instance):
            try:
                provider_config_new_endpoint_secrets_check(
                    provider_config=self.instance, secrets=secrets
                )
            except ValidationError as exc:
                self._config_errors_add(exc)
                return
        if "api_key" in secrets:
            self.instance.set_api_key(secrets["api_key"])
        if "aws_access_key_id" in secrets or "aws_secret_access_key" in secrets:
            self.instance.set_aws_credentials(
                access_key_id=secrets.get("aws_access_key_id")
                or self.instance.aws_access_key_id
                or "",
                secret_access_key=secrets.get("aws_secret_access_key")
                or self.instance.aws_secret_access_key
                or "",
            )
        exclude = self._get_validation_exclusions() | set(SECRET_FORM_FIELDS)
        try:
            self.instance.full_clean(
                exclude=exclude, validate_unique=False, validate_constraints=False
            )
        except ValidationError as exc:
            self._config_errors_add(exc)
        constraint_exclude = exclude | {"is_default"}
        if "tenant" not in self._errors:
            # On change the tenant is read-only, hence not a form field; the name
            # must still be unique within it.
            constraint_exclude.discard("tenant")
        try:
            self.instance.validate_constraints(exclude=constraint_exclude)
        except ValidationError as exc:
            self._update_errors(exc)


class TenantMembershipAdminForm(forms.ModelForm):
    """A membership names its user by username, so no list of all users is shown."""

    user = forms.ModelChoiceField(
        queryset=get_user_model().objects.filter(is_active=True),
        to_field_name=get_user_model().USERNAME_FIELD,
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
        label="Username",
        help_text="The user must already exist; a superuser creates users.",
        error_messages={"invalid_choice": "No active user has this username."},
    )

    class Meta:
        model = TenantMembership
        fields = ["tenant", "user", "role"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The model's initial value is the user's id; the field takes a username.
        if self.instance.user_id is not None:
            self.initial["user"] = self.instance.user.get_username()


def _hashed_key_help_texts(kind: str) -> dict[str, str]:
    """The fields explained in terms of the key's kind: the API key library's
    model, which both kinds extend, speaks of "the API key"."""
    return {
        "name": f"What this {kind} is for, e.g. the script or program that uses it; it need "
        "not be unique. 50 characters at most.",
        "expiry_date": f"From then on, calls with this {kind} are refused. Empty: it never "
        "expires.",
        "revoked": f"A revoked {kind} is refused on every call. Revoking cannot be undone.",
    }


class _HashedKeyAdminForm(forms.ModelForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "expiry_date" in self.fields:
            # Entered and shown in the server's zone, named like the admin's other times.
            self.fields["expiry_date"].label = "Expires (UTC)"

    def clean_expiry_date(self):
        expiry_date = self.cleaned_data.get("expiry_date")
        # A new key is created by a service that refuses a past expiry; said
        # here, it is a form error rather than a failed save. An existing key
        # may be given a past expiry: that is how it is made to expire now.
        if self.instance._state.adding and expiry_date and expiry_date <= timezone.now():
            raise ValidationError("The expiry date must be in the future.", code="past")
        return expiry_date


class ServiceKeyAdminForm(_HashedKeyAdminForm):
    """A service key's name, tenant and expiry; the secret is generated on save."""

    class Meta:
        model = ServiceKey
        fields = ["tenant", "name", "expiry_date", "revoked"]
        help_texts = _hashed_key_help_texts("service key")


class UserTokenAdminForm(_HashedKeyAdminForm):
    """A user token's owner, name and expiry; the token is generated on save."""

    class Meta:
        model = UserToken
        fields = ["user", "name", "expiry_date", "revoked"]
        help_texts = _hashed_key_help_texts("user token")

    def clean_user(self):
        user = self.cleaned_data.get("user")
        # Only a new token names its owner (a superuser's choice), as the command does.
        if user is not None and self.instance._state.adding and not user.is_active:
            raise ValidationError(
                f"The user “{user.get_username()}” is inactive: its tokens are refused.",
                code="inactive",
            )
        return user


# --- login --------------------------------------------------------------------


def _login_throttled(wait: float) -> ValidationError:
    return ValidationError(
        "Too many failed login attempts from this address. Try again in %(seconds)s seconds.",
        code="throttled",
        params={"seconds": max(1, math.ceil(wait))},
    )


class _AddressThrottledLogin:
    """A failed login counts against the client address's `auth_failure` rate, as a
    failed API authentication does; beyond it the password is not checked."""

    def clean(self):
        if self.request is None:
            return super().clean()
        with authentication_attempt(
            self.request, failure=ValidationError, refusal=_login_throttled
        ):
            return super().clean()


class LoginForm(_AddressThrottledLogin, AuthenticationForm):
    """The browsable API's login (`/api/auth/login/`)."""


class AdminLoginForm(_AddressThrottledLogin, AdminAuthenticationForm):
    """The admin's login."""
