"""Call logs (one row per provider attempt) and what is derived from them: daily usage,
budgets and their live counters, cost alerts and their deliveries."""

from __future__ import annotations

import re
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, validate_email
from django.db import models
from django.db.models import Q
from django.utils import timezone

from llm_providers.chat_input import scope_fields_clean
from llm_providers.encryption import GuardedEncryptedTextField, UnreadableSecret
from llm_providers.models import LockedDeleteModel, LockedDeleteQuerySet, ProviderConfig, Tenant
from llm_providers.provider_types import ProviderType

from .money import priced_cost, usd_format_exact
from .webhooks import webhook_url_validate


class CallLog(models.Model):
    """One attempt at a provider (retries and fallbacks each get a row), or a
    cache hit, or a call refused by a budget. Rows of one request share
    `request_id` and are numbered by `attempt`.

    Prompts are not kept unless the tenant turns previews on.
    """

    class Status(models.TextChoices):
        OK = "ok", "OK"
        ERROR = "error", "Error"
        BLOCKED = "blocked", "Blocked"
        CACHED = "cached", "Cached"

    class PriceSource(models.TextChoices):
        GENAI_PRICES = "genai_prices", "genai-prices"
        OVERRIDE = "override", "ModelPrice override"
        SELF_HOSTED = "self_hosted", "Self-hosted (free)"
        NONE = "none", "Nothing to price"
        UNKNOWN = "unknown", "Unknown model price"

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="call_logs")
    request_id = models.UUIDField()
    attempt = models.PositiveSmallIntegerField(default=1)
    operation = models.CharField(max_length=16, default="complete")

    provider_config = models.ForeignKey(
        ProviderConfig, on_delete=models.SET_NULL, null=True, blank=True, related_name="call_logs"
    )
    provider_type = models.CharField(max_length=32, choices=ProviderType.choices, blank=True)
    model_requested = models.CharField(max_length=200, blank=True)
    model_answered = models.CharField(max_length=200, blank=True)
    customer_id = models.CharField(max_length=200, blank=True)
    service_name = models.CharField(max_length=200, blank=True)
    route_rule = models.CharField(max_length=32, blank=True)

    status = models.CharField(max_length=8, choices=Status.choices)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.CharField(max_length=500, blank=True)

    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cache_read_tokens = models.PositiveIntegerField(default=0)
    cache_write_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)

    cost_usd = models.DecimalField(max_digits=20, decimal_places=12, null=True, blank=True)
    price_source = models.CharField(max_length=16, choices=PriceSource.choices, blank=True)

    latency_ms = models.PositiveIntegerField("latency (ms)", default=0)
    time_to_first_token_ms = models.PositiveIntegerField(
        "time to first token (ms)", null=True, blank=True
    )
    streamed = models.BooleanField(default=False)
    input_hash = models.CharField(max_length=64, blank=True)
    prompt_preview = models.CharField(max_length=500, blank=True)

    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["request_id", "attempt"], name="call_log_unique_request_attempt"
            )
        ]
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="call_log_tenant_created"),
            models.Index(fields=["created_at"], name="call_log_created"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id}#{self.attempt} {self.status}"


# --- daily usage ---------------------------------------------------------------


class DailyUsage(models.Model):
    """CallLog rolled up per tenant-local day, provider config, model, service and customer.

    Rows are *recomputed* from CallLog (grouped, then set: never incremented),
    so rerunning gives the same table and late logs are picked up.

    `provider_config` is NULL for calls whose config was deleted or never
    resolved. The unique key is one index where NULLs are distinct (it also
    serves every "tenant and days" query) plus a small partial unique index
    for the NULL rows, so NULL is one group on PostgreSQL and SQLite alike.

    A derived table: its foreign keys are not database constraints (Django
    still deletes a tenant's rows with the tenant). Checking them would cost
    one trigger per written row, and every row comes from a CallLog row that
    has the real constraints. A deleted provider config keeps its history here
    until its days are recomputed.

    `cost_usd` sums the costs of the `priced_count` requests whose cost is
    known ($0 included: cache hits, free models); the `unpriced_count`
    requests whose model has no known price are not in it. A group with
    unpriced requests and none priced has an unknown cost (`cost_known`), not $0.
    """

    tenant = models.ForeignKey(
        Tenant,
        on_delete=models.CASCADE,
        db_constraint=False,
        db_index=False,
        related_name="daily_usage",
    )
    day = models.DateField(help_text="In the tenant's time zone.")
    provider_config = models.ForeignKey(
        ProviderConfig,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        null=True,
        blank=True,
        related_name="+",
    )
    provider_type = models.CharField(max_length=32, choices=ProviderType.choices, blank=True)
    model = models.CharField(max_length=200, blank=True)
    service_name = models.CharField(max_length=200, blank=True)
    customer_id = models.CharField(max_length=200, blank=True)

    request_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    blocked_count = models.PositiveIntegerField(default=0)
    cached_count = models.PositiveIntegerField(default=0)
    unpriced_count = models.PositiveIntegerField(
        default=0, help_text="Requests whose model has no known price (cost unknown, not $0)."
    )
    priced_count = models.PositiveIntegerField(
        default=0,
        help_text="Requests with a known cost, $0 included (cache hits, free models): "
        "the ones cost_usd sums.",
    )
    estimated_count = models.PositiveIntegerField(
        default=0, help_text="Requests whose usage was estimated (e.g. a broken stream)."
    )
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_tokens = models.PositiveBigIntegerField(default=0)
    reasoning_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=24, decimal_places=12, default=Decimal(0))
    latency_ms_sum = models.PositiveBigIntegerField("latency sum (ms)", default=0)
    updated_at = models.DateTimeField(default=timezone.now, help_text="Last time a value changed.")

    KEY_FIELDS = (
        "tenant_id",
        "day",
        "provider_config_id",
        "provider_type",
        "model",
        "service_name",
        "customer_id",
    )
    VALUE_FIELDS = (
        "request_count",
        "error_count",
        "blocked_count",
        "cached_count",
        "unpriced_count",
        "priced_count",
        "estimated_count",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "cost_usd",
        "latency_ms_sum",
    )

    class Meta:
        verbose_name = "daily usage"
        verbose_name_plural = "daily usage"
        ordering = ["-day", "tenant", "-cost_usd"]
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "tenant",
                    "day",
                    "provider_config",
                    "provider_type",
                    "model",
                    "service_name",
                    "customer_id",
                ],
                name="daily_usage_unique_group",
            ),
            models.UniqueConstraint(
                fields=["tenant", "day", "provider_type", "model", "service_name", "customer_id"],
                condition=Q(provider_config__isnull=True),
                name="daily_usage_unique_group_no_config",
            ),
        ]
        indexes = [
            # The unpriced-usage check reads recent days of every tenant.
            models.Index(
                fields=["day"], condition=Q(unpriced_count__gt=0), name="daily_usage_unpriced_day"
            )
        ]

    def __str__(self) -> str:
        # The admin's title and breadcrumb: every part of the row's key, named.
        service = f"service {self.service_name}" if self.service_name else "no service"
        customer = f"customer {self.customer_id}" if self.customer_id else "no customer"
        model = self.model or "no model"
        return f"{self.day} {model}, {service}, {customer}: {self.cost_text}"

    @property
    def cost_known(self) -> Decimal | None:
        """The cost of the priced requests; None (unknown, not $0) when there are
        unpriced requests and none priced."""
        return priced_cost(self.cost_usd, priced=self.priced_count, unpriced=self.unpriced_count)

    @property
    def cost_text(self) -> str:
        """The cost exactly, saying how many unpriced requests it leaves out:
        "$0.42", "$0.42 (2 unpriced requests not included)", "unpriced"."""
        text = usd_format_exact(self.cost_known)
        unpriced = self.unpriced_count
        if unpriced and self.cost_known is not None:
            text += f" ({unpriced} unpriced request{'' if unpriced == 1 else 's'} not included)"
        return text

    @property
    def average_latency_ms(self) -> int:
        return self.latency_ms_sum // self.request_count if self.request_count else 0


class AggregationState(models.Model):
    """Where a periodic job stopped, one row per job.

    The aggregation's ("daily_usage"): call logs with a higher id are new or
    late. The unpriced-usage check's ("unpriced_usage_check"): `last_run_at`,
    from which on changed DailyUsage rows are read again.
    """

    name = models.CharField(max_length=32, unique=True)
    last_call_log_id = models.BigIntegerField(default=0)
    last_run_at = models.DateTimeField(null=True, blank=True)
    call_logs_purged_before = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The retention purge has deleted call logs older than this: days up to it "
        "are never recomputed, whatever the retention setting says now.",
    )

    def __str__(self) -> str:
        return f"{self.name} @ {self.last_call_log_id}"


class DailyUsageRecount(models.Model):
    """A tenant whose stored days must be recounted in the time zone it was given.

    Written with the change of time zone, in its transaction, and removed once
    every day of the tenant has been recomputed in the new zone: a recount that
    was never queued (the broker was down) or stopped part way is finished by
    the periodic aggregation.
    """

    tenant = models.OneToOneField(
        Tenant, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    # Replaced by every change of zone: a recount removes only the request it served.
    token = models.UUIDField()
    requested_at = models.DateTimeField()
    recounted_from = models.DateField(
        null=True,
        blank=True,
        help_text="Days from this one on are already recounted in the new zone.",
    )

    def __str__(self) -> str:
        return f"recount {self.tenant_id} since {self.requested_at:%Y-%m-%d %H:%M}"


# --- budgets -------------------------------------------------------------------

_EMAIL_SPLIT = re.compile(r"[\s,;]+")


def email_list_parse(text: str) -> list[str]:
    """Addresses from a comma-, semicolon- or newline-separated text, in order, deduplicated."""
    seen: dict[str, None] = {}
    for part in _EMAIL_SPLIT.split(text or ""):
        if part:
            seen.setdefault(part, None)
    return list(seen)


class Budget(LockedDeleteModel):
    """A spending limit for a tenant, optionally scoped, per tenant-local day or month.

    Empty scope fields mean "any". A *block* budget refuses calls that would go
    over the limit; an *alert* budget only alerts. Alerts fire when spend
    crosses each of `alert_percentages` of the limit.
    """

    class Period(models.TextChoices):
        DAILY = "daily", "Daily"
        MONTHLY = "monthly", "Monthly"

    class Action(models.TextChoices):
        ALERT = "alert", "Alert only"
        BLOCK = "block", "Block calls over the limit"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="budgets")
    name = models.CharField(max_length=100)
    is_active = models.BooleanField(default=True)
    period = models.CharField(max_length=8, choices=Period.choices, default=Period.MONTHLY)
    limit_usd = models.DecimalField(
        max_digits=14,
        decimal_places=4,
        validators=[MinValueValidator(Decimal("0.0001"))],
        help_text="USD per period.",
    )
    action = models.CharField(max_length=8, choices=Action.choices, default=Action.ALERT)
    provider_config = models.ForeignKey(
        ProviderConfig,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="budgets",
        help_text="Only calls to this provider config; empty: every provider.",
    )
    service_name = models.CharField(
        max_length=200, blank=True, help_text="Only calls of this service; empty: every service."
    )
    customer_id = models.CharField(
        max_length=200, blank=True, help_text="Only calls for this customer; empty: every customer."
    )
    alert_percentages = models.JSONField(
        default=list,
        blank=True,
        help_text="Alert when spend crosses these percentages of the limit, e.g. [50, 80, 100].",
    )
    alert_emails = models.TextField(
        blank=True, help_text="Addresses to alert, separated by commas or new lines."
    )
    webhook_url = GuardedEncryptedTextField(
        blank=True,
        null=True,
        help_text="Receives a JSON POST with a Slack-compatible “text”. Stored encrypted.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Deleting one locks it first: a database budget counter's rows are written for it.
    objects = LockedDeleteQuerySet.as_manager()

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="budget_unique_name"),
            models.CheckConstraint(condition=Q(limit_usd__gt=0), name="budget_limit_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        # Remember the stored URL: only a changed one is checked (and resolved) again.
        instance._stored_webhook_url = instance.__dict__.get("webhook_url")
        return instance

    @property
    def is_blocking(self) -> bool:
        return self.action == self.Action.BLOCK

    @property
    def email_list(self) -> list[str]:
        return email_list_parse(self.alert_emails)

    @property
    def webhook_url_readable(self) -> str:
        """The webhook URL, or '' when none is set or it does not decrypt."""
        value = self.webhook_url
        return value if isinstance(value, str) else ""

    @property
    def webhook_unreadable(self) -> bool:
        return isinstance(self.webhook_url, UnreadableSecret)

    @property
    def scope_label(self) -> str:
        parts = []
        if self.provider_config_id:
            parts.append(f"provider {self.provider_config.name}")
        if self.service_name:
            parts.append(f"service {self.service_name}")
        if self.customer_id:
            parts.append(f"customer {self.customer_id}")
        return ", ".join(parts) or "whole tenant"

    def clean(self) -> None:
        super().clean()
        errors: dict[str, list[str]] = {}
        percentages = self.alert_percentages
        if not isinstance(percentages, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 1000 for p in percentages
        ):
            errors["alert_percentages"] = [
                "Alert percentages must be whole numbers between 1 and 1000, e.g. 50, 80, 100."
            ]
        elif len(set(percentages)) != len(percentages):
            errors["alert_percentages"] = ["Each alert percentage may appear only once."]
        errors.update(scope_fields_clean(self, consequence="this budget would never apply."))
        bad_emails = []
        for address in self.email_list:
            try:
                validate_email(address)
            except ValidationError:
                bad_emails.append(address)
        if bad_emails:
            errors["alert_emails"] = [f"Not valid email addresses: {', '.join(bad_emails)}."]
        webhook_changed = self.webhook_url != getattr(self, "_stored_webhook_url", None)
        if isinstance(self.webhook_url, str) and self.webhook_url and webhook_changed:
            try:
                webhook_url_validate(self.webhook_url)
            except ValidationError as exc:
                errors["webhook_url"] = exc.messages
        if (
            self.provider_config_id
            and self.tenant_id
            and self.provider_config.tenant_id != self.tenant_id
        ):
            errors["provider_config"] = ["This provider config belongs to another tenant."]
        if errors:
            raise ValidationError(errors)


class BudgetCounter(models.Model):
    """The live spend of one budget period when counters live in the database (no Redis).

    `settled_usd` starts as the period's CallLog cost and grows as calls settle;
    a reservation finding it read from CallLog (`settled_read_at`) at least
    USAGE_BUDGET_COUNTER_REBUILD_SECONDS ago reads it again. Rows are locked
    (SELECT ... FOR UPDATE) while reserving, so reservations are atomic across
    processes. `definition` fingerprints what is counted (scope,
    period kind, time zone): a budget given a new scope starts a fresh counter
    rebuilt from CallLog; other edits keep the counter and its holds.
    """

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="counters")
    period_key = models.CharField(max_length=10)
    definition = models.CharField(max_length=40)
    period_end = models.DateTimeField()
    settled_usd = models.DecimalField(max_digits=24, decimal_places=12, default=Decimal(0))
    settled_read_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "period_key", "definition"], name="budget_counter_unique"
            )
        ]
        indexes = [models.Index(fields=["period_end"], name="budget_counter_period_end")]

    def __str__(self) -> str:
        return f"{self.budget_id} {self.period_key}: ${self.settled_usd}"


class BudgetHold(models.Model):
    """An outstanding reservation against a database budget counter; it lapses at expires_at."""

    counter = models.ForeignKey(BudgetCounter, on_delete=models.CASCADE, related_name="holds")
    reservation_id = models.CharField(max_length=64)
    amount_usd = models.DecimalField(max_digits=24, decimal_places=12)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["counter", "reservation_id"], name="budget_hold_unique_reservation"
            )
        ]
        indexes = [
            models.Index(fields=["reservation_id"], name="budget_hold_reservation"),
            models.Index(fields=["counter", "expires_at"], name="budget_hold_counter_expiry"),
        ]

    def __str__(self) -> str:
        return f"{self.reservation_id}: ${self.amount_usd}"


# --- alerts --------------------------------------------------------------------


class CostAlert(models.Model):
    """Something a tenant should know about: a budget threshold crossed, a provider
    failing, or usage that could not be priced. Unique per subject, period and
    percent (and, for a budget, the limit the percent is of), so reruns and
    concurrent checks never alert twice."""

    class Kind(models.TextChoices):
        BUDGET = "budget", "Budget threshold"
        ERROR_RATE = "error_rate", "Provider error rate"
        UNPRICED = "unpriced", "Unpriced usage"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="cost_alerts")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    budget = models.ForeignKey(
        Budget, on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts"
    )
    provider_config = models.ForeignKey(
        ProviderConfig, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    subject_key = models.CharField(
        max_length=300, help_text="What the alert is about (budget id, provider, model)."
    )
    period_key = models.CharField(max_length=32, help_text="The period or window it is for.")
    percent = models.PositiveSmallIntegerField(default=0)
    spend_usd = models.DecimalField(max_digits=24, decimal_places=12, null=True, blank=True)
    limit_usd = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # A budget's percentage is of the limit it had: one raised (or lowered)
            # mid-period alerts again at the new limit, once.
            models.UniqueConstraint(
                fields=["budget", "period_key", "percent", "limit_usd"],
                condition=Q(budget__isnull=False),
                name="cost_alert_once_per_budget_period_percent_limit",
            ),
            models.UniqueConstraint(
                fields=["tenant", "kind", "subject_key", "period_key", "percent", "limit_usd"],
                condition=Q(kind="budget"),
                name="cost_alert_once_per_budget_subject_period_percent_limit",
            ),
            models.UniqueConstraint(
                fields=["tenant", "kind", "subject_key", "period_key", "percent"],
                condition=~Q(kind="budget"),
                name="cost_alert_once_per_subject_period_percent",
            ),
        ]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="cost_alert_tenant_created")]

    def __str__(self) -> str:
        # A title and breadcrumb: a long message is cut at a word, never in the
        # middle of an amount, and says it was cut.
        if len(self.message) <= 80:
            return self.message
        head = self.message[:79]
        cut = head.rfind(" ")
        return (head[:cut] if cut > 0 else head).rstrip() + " …"


class AlertDelivery(models.Model):
    """One channel of one alert (an email to its recipients, or one webhook) and its state.

    A failed send is retried with backoff until delivered or out of attempts;
    attempts, the last error and the next attempt are kept, so nothing is lost.
    The target is taken when the alert fired, stored encrypted (webhook URLs
    are secrets); a budget alert's webhook follows the budget's current URL.
    """

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        WEBHOOK = "webhook", "Webhook"

    alert = models.ForeignKey(CostAlert, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    target = GuardedEncryptedTextField()
    target_label = models.CharField(max_length=300, help_text="What may be shown of the target.")
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Set anew by each claim: an attempt records a failure only while the claim is
    # still its own, not once a later attempt or a retry has taken the delivery over.
    claim = models.UUIDField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name_plural = "alert deliveries"
        ordering = ["alert", "channel", "id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(delivered_at__isnull=True, next_attempt_at__isnull=False),
                name="alert_delivery_due",
            )
        ]

    # The error a claimed attempt holds until it records its outcome.
    NO_OUTCOME = (
        "No outcome recorded: the attempt is still running or the worker stopped "
        "during it (see the worker's log)."
    )

    def __str__(self) -> str:
        return f"{self.get_channel_display()} to {self.target_label}"

    @property
    def state(self) -> str:
        if self.delivered_at:
            return "delivered"
        if self.next_attempt_at is None:
            return "failed"
        if self.last_error == self.NO_OUTCOME and self.next_attempt_at > timezone.now():
            # Claimed by a worker whose claim has not expired: being sent now.
            return "sending"
        # A retry asked for in the admin starts a new series at 0 attempts
        # but keeps the last error: it is retrying, not new.
        return "retrying" if self.attempts or self.last_error else "pending"

    @property
    def summary(self) -> str:
        """Channel and state as the admin lists them; a delivered email whose
        mail server refused some recipients keeps them in `last_error`."""
        text = f"{self.get_channel_display()}: {self.state}"
        if self.delivered_at and self.last_error:
            text += ", not to every recipient"
        return text


class UsageDashboard(DailyUsage):
    """The usage dashboard's entry in the admin (a proxy: no table of its own)."""

    class Meta:
        proxy = True
        verbose_name = "usage dashboard"
        verbose_name_plural = "usage dashboard"
