"""The completion service: `complete()`, `stream()` and `embed()` for internal code and the API.

One pipeline for every call:

1. resolve the route (cached under the tenant's config version);
2. budget gate (`usage.budget`): reserve the worst-case cost, refuse when a
   blocking budget has no room, settle the real cost afterwards;
3. rate limit the provider config (rpm / tpm);
4. response cache (per-tenant TTL; 0 = off);
5. call the adapter — this module is the one owner of retries: retryable
   failures are retried with backoff honouring Retry-After, then the next
   fallback target is tried, all within the call's deadline (each attempt's
   timeout capped at the time left; no attempt, fallback or wait starts that
   the deadline leaves no time for);
6. price the usage and write one CallLog row per attempt.

Refusals that happen before a provider is called (budget, rate limit) are
logged with status ``blocked``; cache hits with status ``cached`` and zero
cost. Streaming logs the call when the stream ends, when the caller stops
early and when the upstream breaks (usage then estimated and flagged).
"""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import NoReturn

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError
from django.utils import timezone

from overrides.routing import Route, RouteTarget, route_resolve
from usage.bookkeeping import bookkeeping_submit
from usage.budget import (
    BudgetBackendError,
    BudgetExceeded,
    BudgetReservation,
    BudgetUnavailable,
    budget_release,
    budget_reserve,
    budget_settle,
)
from usage.call_logs import call_log_record
from usage.models import CallLog

from .adapters.base import (
    DEADLINE_MIN_REQUEST_SECONDS,
    Adapter,
    StreamCut,
    estimate_message_tokens,
    estimate_output_tokens,
    estimate_text_tokens,
    usage_estimate,
)
from .adapters.errors import (
    CallDeadlineReached,
    ProviderAuthenticationError,
    ProviderError,
    ProviderPermissionError,
    ProviderRateLimited,
    ProviderTimeout,
    scrub_secrets,
)
from .adapters.types import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    ToolCall,
    Usage,
)
from .chat_input import (
    InvalidRequest,
    deadline_validate,
    embed_inputs_validate,
    messages_validate,
    model_validate,
    parameters_validate,
    scope_validate,
    tools_validate,
)
from .clients import adapter_for_config
from .config_cache import config_version
from .exceptions import CALL_INTERRUPTED_CODE, ApplicationError, SecretUnreadableError
from .models import Tenant
from .pricing import ZERO, PriceSource, cost_for_usage, cost_worst_case, price_lookup
from .rate_limiting import Admission, RateLimited, TokensCounted, rate_limit_send, rate_limit_settle
from .response_cache import (
    provider_endpoint,
    request_fingerprint,
    response_cache_get,
    response_cache_set,
)

logger = logging.getLogger(__name__)

Status = CallLog.Status


class ProviderConfigUnusable(ApplicationError):
    """The provider config cannot be used as stored (e.g. its base URL is now refused)."""

    code = "provider_config_unusable"
    http_status = 502


@dataclass(frozen=True, slots=True)
class CompletionResult:
    request_id: uuid.UUID
    content: str
    tool_calls: list[ToolCall]
    finish_reason: str
    usage: Usage
    cost_usd: Decimal | None
    price_source: str
    provider: str
    provider_config_id: uuid.UUID
    provider_type: str
    model: str
    cached: bool
    latency_ms: int
    route_rule: str
    attempts: int
    usage_estimated: bool = False


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    request_id: uuid.UUID
    vectors: list[list[float]]
    usage: Usage
    cost_usd: Decimal | None
    price_source: str
    provider: str
    provider_config_id: uuid.UUID
    provider_type: str
    model: str
    latency_ms: int
    attempts: int
    usage_estimated: bool = False


class _MoveOn(Exception):
    """This target cannot serve the call; try the next one.

    `retry_refusal` is the config's own rate limit refusing a retry after
    `error`, the provider's: the caller is told the provider's error.
    `deadline_cut`: the target was left because the call's deadline had no
    time for the wait before its next attempt."""

    def __init__(
        self,
        error: ApplicationError,
        *,
        retry_refusal: ApplicationError | None = None,
        deadline_cut: bool = False,
    ):
        super().__init__(str(error))
        self.error = error
        self.retry_refusal = retry_refusal
        self.deadline_cut = deadline_cut


class _DeadlineReached(Exception):
    """The call's deadline leaves no time for another attempt on this target;
    `error` is how its last attempt failed (None: it had none)."""

    def __init__(self, error: ApplicationError | None):
        super().__init__(str(error))
        self.error = error


class _Deadline:
    """The whole call's time: its attempts, the waits between them, its fallbacks."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        # Whether the latest attempt's timeout was the time left, not its own.
        self.capped_attempt = False
        self.start()

    def start(self) -> None:
        # The `time.monotonic()` at which the call's time is up.
        self.ends = time.monotonic() + self.seconds

    def left(self) -> float:
        return self.ends - time.monotonic()

    # With less than DEADLINE_MIN_REQUEST_SECONDS left an attempt would only
    # time out (no provider answers sooner): none starts, and no wait is taken
    # that leaves less.
    def allows_attempt(self) -> bool:
        return self.left() >= DEADLINE_MIN_REQUEST_SECONDS

    def allows_wait(self, seconds: float) -> bool:
        return self.left() - seconds >= DEADLINE_MIN_REQUEST_SECONDS

    def attempt_timeout(self, adapter: Adapter, requested: float | None) -> float | None:
        """The next attempt's timeout: its own (the call's, else the config's),
        or the time left when that is less."""
        left = self.left()
        self.capped_attempt = left < adapter.call_timeout(requested)
        if self.capped_attempt:
            return max(left, 0.001)
        return requested

    def ended_attempt(self, error: ApplicationError) -> bool:
        """Whether the deadline is what ended an attempt that failed with
        `error`: a timeout of an attempt it capped, or after which no time is left."""
        return isinstance(error, ProviderTimeout) and (
            self.capped_attempt or not self.allows_attempt()
        )


@dataclass(frozen=True, slots=True)
class _Failed:
    """How one target failed to serve the call."""

    target: RouteTarget
    error: ApplicationError
    retry_refusal: ApplicationError | None = None
    deadline_cut: bool = False

    @classmethod
    def of(cls, target: RouteTarget, move_on: _MoveOn) -> _Failed:
        return cls(target, move_on.error, move_on.retry_refusal, move_on.deadline_cut)


@dataclass
class _Call:
    """What one request carries through the pipeline."""

    tenant: Tenant
    request_id: uuid.UUID
    customer_id: str
    service_name: str
    version: str
    route: Route
    targets: tuple[RouteTarget, ...]
    request: ChatRequest | None
    fingerprint: str
    input_tokens: int
    deadline: _Deadline
    operation: str = "complete"
    prompt_preview: str = ""
    attempts: int = 0
    streamed: bool = False
    embed_request: EmbedRequest | None = field(default=None)

    def next_attempt(self) -> int:
        self.attempts += 1
        return self.attempts

    def log(self, target: RouteTarget, **fields) -> None:
        """Record one attempt (written right after the call, see usage.bookkeeping)."""
        config = target.provider_config
        attempt = self.next_attempt()
        bookkeeping_submit(
            call_log_record,
            label=f"call log {self.request_id}#{attempt}",
            tenant_id=self.tenant.pk,
            request_id=self.request_id,
            attempt=attempt,
            operation=self.operation,
            provider_config_id=config.pk,
            provider_type=config.provider_type,
            model_requested=target.model,
            customer_id=self.customer_id,
            service_name=self.service_name,
            route_rule=self.route.rule,
            streamed=self.streamed,
            input_hash=self.fingerprint,
            prompt_preview=self.prompt_preview,
            **fields,
        )


# --- settings -------------------------------------------------------------------


def _attempts_per_target() -> int:
    return max(int(settings.LLM_RETRY_ATTEMPTS), 1)


def _retry_delay(error: ProviderError, attempt_on_target: int) -> float | None:
    """Seconds to wait before retrying the same target; None: move on instead."""
    if error.retry_after is not None:
        if error.retry_after > settings.LLM_RETRY_AFTER_MAX_SECONDS:
            return None
        return max(float(error.retry_after), 0.0)
    backoff = settings.LLM_RETRY_BACKOFF_SECONDS * 2 ** (attempt_on_target - 1)
    backoff = min(backoff, settings.LLM_RETRY_BACKOFF_MAX_SECONDS)
    # Full jitter on the upper half: concurrent callers do not retry in step.
    return backoff * (0.5 + random.random() / 2)


def _falls_back_on(error: ApplicationError) -> bool:
    """Whether another target may succeed where this one failed.

    Retryable failures (rate limits, timeouts, outages) and failures of the
    target's own account (key rejected or unreadable, no permission, the
    config's own rate limit or budget) move on; a request the provider
    rejects as such (bad request, too long, refused) would fail everywhere.
    """
    if isinstance(error, ProviderError):
        return error.retryable or isinstance(
            error, ProviderAuthenticationError | ProviderPermissionError | ProviderRateLimited
        )
    return isinstance(
        error,
        RateLimited
        | SecretUnreadableError
        | ProviderConfigUnusable
        | BudgetExceeded
        | BudgetUnavailable,
    )


# --- pipeline steps -------------------------------------------------------------


def _preview(messages: list[dict]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return ""


def _targets_with_model(route: Route, model: str | None) -> tuple[RouteTarget, ...]:
    """Apply an explicitly requested model to the primary target."""
    if not model:
        return route.targets
    primary = route.primary
    config = primary.provider_config
    if not config.model_is_allowed(model):
        raise InvalidRequest(
            "model",
            f"The model “{model}” is not allowed on provider config “{config.name}”; allowed: "
            f"{', '.join(config.allowed_models)}.",
        )
    chosen = RouteTarget(provider_config=config, model=model)
    # A fallback that is now the primary target would only be tried a second time.
    return (chosen, *(target for target in route.fallbacks if target != chosen))


def _call_prepare(
    *,
    tenant: Tenant,
    customer_id: str,
    service_name: str,
    model: str | None,
    request: ChatRequest | None,
    operation: str,
    input_tokens: int,
    fingerprint: str,
    preview: str,
    deadline: float | None,
    embed_request: EmbedRequest | None = None,
) -> _Call:
    if not tenant.is_active:
        raise InvalidRequest("tenant", f"The tenant “{tenant.slug}” is inactive.")
    customer_id, service_name = scope_validate(customer_id=customer_id, service_name=service_name)
    model = model_validate(model)
    deadline_seconds = deadline_validate(deadline)
    version = config_version(tenant.pk)
    route = route_resolve(
        tenant=tenant, customer_id=customer_id, service_name=service_name, version=version
    )
    return _Call(
        tenant=tenant,
        request_id=uuid.uuid4(),
        customer_id=customer_id,
        service_name=service_name,
        version=version,
        route=route,
        targets=_targets_with_model(route, model),
        request=request,
        fingerprint=fingerprint,
        input_tokens=input_tokens,
        deadline=_Deadline(deadline_seconds),
        operation=operation,
        prompt_preview=preview if tenant.store_prompt_previews else "",
        embed_request=embed_request,
    )


def _price(
    call: _Call,
    target: RouteTarget,
    model: str,
    requested_model: str = "",
    started_at: datetime | None = None,
):
    config = target.provider_config
    return price_lookup(
        tenant_id=call.tenant.pk,
        provider_type=config.provider_type,
        model=model,
        requested_model=requested_model,
        version=call.version,
        on=started_at.astimezone(UTC).date() if started_at is not None else None,
        base_url=config.base_url,
    )


def _priced(
    call: _Call, target: RouteTarget, usage: Usage, answered_model: str, started_at: datetime
):
    """Cost of `usage`, priced by the model that answered and the one asked for
    (a ModelPrice of either beats genai-prices; see pricing.price_lookup), at
    the prices of the UTC day the call started: the day its log is dated by."""
    price = _price(call, target, answered_model or target.model, target.model, started_at)
    return cost_for_usage(usage=usage, price=price, at=started_at), price.source


def _cost_sum(costs: list[Decimal | None]) -> Decimal | None:
    """The total of attempts' costs; None when none of them was priced."""
    priced = [cost for cost in costs if cost is not None]
    return sum(priced, ZERO) if priced else None


def _max_output_tokens(max_tokens: int | None, adapter: Adapter) -> int:
    """The most output a call can produce, for budget reservations and TPM limits."""
    return max_tokens or adapter.default_max_tokens or settings.LLM_DEFAULT_MAX_TOKENS_ESTIMATE


class _BudgetHold:
    """A budget reservation that is settled once, or released when it was not."""

    def __init__(self, reservation: BudgetReservation):
        self.reservation = reservation
        self.closed = False

    def settle(self, cost_usd: Decimal | None) -> None:
        # After the call log row: see usage.bookkeeping for why the order matters.
        if not self.closed:
            self.closed = True
            self._submit(budget_settle, "budget settlement", cost_usd=cost_usd)

    def release(self) -> None:
        # Inline, not after the call: a call moving on to a fallback target
        # reserves there next, and its own hold, still queued for release,
        # would take the room it gave up. No row needs to precede a release.
        if self.closed:
            return
        self.closed = True
        if not self.reservation:
            return
        try:
            budget_release(reservation=self.reservation)
        except (BudgetBackendError, DatabaseError) as exc:
            # The reservation lapses after its TTL.
            logger.warning("budget release %s failed: %s", self.reservation.reservation_id, exc)

    def _submit(self, fn, what: str, **kwargs) -> None:
        if not self.reservation:
            return
        label = f"{what} {self.reservation.reservation_id}"
        try:
            bookkeeping_submit(fn, label=label, reservation=self.reservation, **kwargs)
        except BudgetBackendError as exc:
            # Run inline, once (no background writer, or it is stuck): the
            # reservation lapses after its TTL, and the cost, in CallLog,
            # returns to the counter at its next rebuild.
            logger.warning("%s failed: %s", label, exc)


def _blocked(call: _Call, target: RouteTarget, refusal: ApplicationError) -> NoReturn:
    """Log a refusal before any provider call (budget, rate limit) as blocked; move on."""
    call.log(
        target,
        status=Status.BLOCKED,
        created_at=timezone.now(),
        error_code=refusal.code,
        error_message=refusal.message,
    )
    raise _MoveOn(refusal) from refusal


class _Gate:
    """A target's budget hold and its rate limit admissions: the first one
    made with the budget reservation, each later one when its attempt starts."""

    def __init__(self, hold: _BudgetHold, first: Admission | None):
        self.hold = hold
        self.first = first
        self.attempts = 0

    def admit(
        self,
        call: _Call,
        target: RouteTarget,
        max_output_tokens: int,
        previous: ProviderError | None,
    ) -> TokensCounted | None:
        """Admit the next attempt by the rate limit; a refusal is logged as
        blocked and moves on. When the limit refuses a retry, the target failed
        with the provider's error of the attempt before (`previous`), not with
        the refusal. Returns where a tpm limit counted the attempt's worst case,
        for `_tokens_used` to replace with what the attempt used.

        The deadline is checked first, the first attempt's too: the budget
        reservation before it may have used up the time left. A first
        admission no attempt uses is given back by `close`."""
        if not call.deadline.allows_attempt():
            raise _DeadlineReached(previous)
        self.attempts += 1
        if self.attempts == 1:
            return _admitted(call, target, self.first)
        try:
            return _admitted(call, target, _admission_sent(call, target, max_output_tokens))
        except _MoveOn as move_on:
            raise _MoveOn(previous, retry_refusal=move_on.error) from None

    def close(self) -> None:
        """Release what was not settled; give back a first admission no attempt used."""
        if self.attempts == 0 and self.first is not None:
            self.first.undo()
        self.hold.release()


def _admission_sent(call: _Call, target: RouteTarget, max_output_tokens: int) -> Admission | None:
    """The target's rate limit admission of an attempt, sent; None without limits."""
    config = target.provider_config
    if not config.rpm_limit and not config.tpm_limit:
        return None
    return rate_limit_send(
        provider_config_id=config.pk,
        rpm_limit=config.rpm_limit,
        tpm_limit=config.tpm_limit,
        tokens=call.input_tokens + max_output_tokens,
    )


def _admitted(call: _Call, target: RouteTarget, admission: Admission | None):
    """The admission's answer; a refusal is logged as blocked and moves on."""
    if admission is None:
        return None
    try:
        return admission.result()
    except RateLimited as exc:
        _blocked(call, target, exc)


@contextmanager
def _gated(call: _Call, target: RouteTarget, max_output_tokens: int):
    """Reserve the call's worst-case cost on the target's budgets and admit its
    first attempt by the rate limit, yielding the `_Gate` of its attempts.

    The admission is sent first and its answer read after the reservation's,
    so the two round trips to Redis overlap. A refusal by either is logged
    as blocked and moves on; the budget's is checked first, and gives back
    what the admission counted. Whatever is not settled is released."""
    if not call.deadline.allows_attempt():
        raise _DeadlineReached(None)
    price = _price(call, target, target.model)
    worst = cost_worst_case(
        price=price, input_tokens=call.input_tokens, max_output_tokens=max_output_tokens
    )
    config = target.provider_config
    admission = _admission_sent(call, target, max_output_tokens)
    try:
        reservation = budget_reserve(
            tenant=call.tenant,
            provider_config_id=config.pk,
            service_name=call.service_name,
            customer_id=call.customer_id,
            # An unpriced model cannot be reserved against: it costs nothing known.
            amount_usd=worst if worst is not None else ZERO,
            request_id=call.request_id,
            version=call.version,
        )
    except BaseException as exc:
        if admission is not None:
            admission.undo()
        if isinstance(exc, (BudgetExceeded, BudgetUnavailable)):
            _blocked(call, target, exc)
        raise
    gate = _Gate(_BudgetHold(reservation), admission)
    try:
        yield gate
    finally:
        gate.close()


def _tokens_used(counted: TokensCounted | None, usage: Usage) -> None:
    """Count in the tpm window the tokens an attempt used instead of its worst case:
    after the call, with its log row (usage.bookkeeping), off the caller's path."""
    if counted is None or usage.total_tokens == counted.tokens:
        return
    bookkeeping_submit(
        rate_limit_settle,
        label=f"rate limit settlement of provider config {counted.provider_config_id}",
        counted=counted,
        tokens=usage.total_tokens,
    )


def _adapter(call: _Call, target: RouteTarget) -> Adapter:
    """The target's adapter; a config that cannot be used as stored (unreadable
    key, refused URL, an option its SDK rejects) is logged and moves on."""
    name = target.provider_config.name
    try:
        return adapter_for_config(target.provider_config)
    except SecretUnreadableError as exc:
        error = exc
    except ValidationError as exc:
        error = ProviderConfigUnusable(
            f"Provider config “{name}” cannot be used: " + "; ".join(exc.messages)
        )
    except ApplicationError as exc:
        error = ProviderConfigUnusable(f"Provider config “{name}” cannot be used: {exc.message}")
    except Exception as exc:  # noqa: BLE001 - e.g. an SDK refusing its arguments
        # The type only: an SDK's message could quote what it was given.
        logger.error(
            "building the adapter of provider config %s failed: %s",
            target.provider_config.pk,
            type(exc).__name__,
        )
        error = ProviderConfigUnusable(
            f"Provider config “{name}” cannot be used ({type(exc).__name__}); check its settings."
        )
    call.log(
        target,
        status=Status.ERROR,
        created_at=timezone.now(),
        error_code=error.code,
        error_message=scrub_secrets(error.message, _secrets(target)),
    )
    raise _MoveOn(error)


def _secrets(target: RouteTarget) -> list[str]:
    config = target.provider_config
    values = (config.api_key, config.aws_access_key_id, config.aws_secret_access_key)
    return [value for value in values if isinstance(value, str) and value]


def _error_code_and_message(error: BaseException) -> tuple[str, str]:
    if isinstance(error, ApplicationError):
        return error.code, error.message
    if not isinstance(error, Exception):
        # Ctrl-C, a worker shutting down: the call was cut off, not broken.
        return CALL_INTERRUPTED_CODE, f"The call was interrupted ({type(error).__name__})."
    return "internal_error", f"{type(error).__name__}: {error}"


def _log_failure(call, target, error: BaseException, started_at, started: float, **fields) -> None:
    code, message = _error_code_and_message(error)
    logger.warning(
        "request %s: attempt on provider config %s failed (%s)",
        call.request_id,
        target.provider_config.pk,
        code,
    )
    call.log(
        target,
        status=Status.ERROR,
        created_at=started_at,
        error_code=code,
        error_message=scrub_secrets(message, _secrets(target)),
        latency_ms=_ms_since(started),
        **fields,
    )


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _result(call, target, chat: ChatResult, *, cost, source, latency_ms, cached=False):
    config = target.provider_config
    return CompletionResult(
        request_id=call.request_id,
        content=chat.content,
        tool_calls=list(chat.tool_calls),
        finish_reason=chat.finish_reason,
        usage=chat.usage,
        cost_usd=cost,
        price_source=source,
        provider=config.name,
        provider_config_id=config.pk,
        provider_type=config.provider_type,
        model=chat.model or target.model,
        cached=cached,
        latency_ms=latency_ms,
        route_rule=call.route.rule,
        attempts=call.attempts,
        usage_estimated=chat.usage_estimated,
    )


def _cache_lookup(call: _Call, target: RouteTarget, started: float) -> CompletionResult | None:
    ttl = call.tenant.response_cache_ttl_seconds
    if not ttl:
        return None
    hit = response_cache_get(
        tenant_id=call.tenant.pk,
        provider_config_id=target.provider_config.pk,
        endpoint=provider_endpoint(target.provider_config),
        model=target.model,
        fingerprint=call.fingerprint,
        max_age_seconds=ttl,
    )
    if hit is None:
        return None
    latency_ms = _ms_since(started)
    # A hit consumed nothing at the provider: no tokens, no cost.
    call.log(
        target,
        status=Status.CACHED,
        created_at=timezone.now(),
        model_answered=hit.model,
        cost_usd=ZERO,
        price_source=PriceSource.NONE,
        latency_ms=latency_ms,
    )
    return _result(
        call, target, hit, cost=ZERO, source=PriceSource.NONE, latency_ms=latency_ms, cached=True
    )


def _cache_store(call: _Call, target: RouteTarget, chat: ChatResult) -> None:
    """Keep the answer for identical requests; nobody waits for it, so it is
    stored after the call like the call log."""
    ttl = call.tenant.response_cache_ttl_seconds
    if ttl:
        bookkeeping_submit(
            response_cache_set,
            label=f"response cache {call.request_id}",
            tenant_id=call.tenant.pk,
            provider_config_id=target.provider_config.pk,
            endpoint=provider_endpoint(target.provider_config),
            model=target.model,
            fingerprint=call.fingerprint,
            result=chat,
            ttl_seconds=ttl,
        )


def _retry_or_raise(
    error: ApplicationError,
    attempt_on_target: int,
    deadline: _Deadline,
    stopping: threading.Event | None = None,
) -> None:
    """Sleep before the next attempt on this target, or raise to move on / give up.
    A wait ends early when `stopping` (a stream's stop()) is set meanwhile.

    A wait the deadline has no time for (with an attempt after it) is not
    taken: the call moves on to the next target, if there is time for one.
    An attempt that the deadline stopped part-way (an embedding batch it left
    no time for) moves on the same way, its retries left or not, and so does
    the last attempt on the target when it timed out at a timeout the
    deadline capped, or left no time: the deadline ended the call, not the
    provider's own timeout."""
    if isinstance(error, CallDeadlineReached):
        raise _MoveOn(error, deadline_cut=True)
    retry_here = (
        isinstance(error, ProviderError)
        and error.retryable
        and attempt_on_target < _attempts_per_target()
    )
    if retry_here:
        delay = _retry_delay(error, attempt_on_target)
        if delay is not None:
            if not deadline.allows_wait(delay):
                # Retryable provider errors always fall back.
                raise _MoveOn(error, deadline_cut=True)
            if stopping is None:
                time.sleep(delay)
            else:
                stopping.wait(delay)
            return
    if deadline.ended_attempt(error):
        raise _MoveOn(error, deadline_cut=True)
    if _falls_back_on(error):
        raise _MoveOn(error)
    raise error


def _failure(failed: _Failed) -> dict:
    """How one target failed, as the caller is told when no target served the call."""
    target, error = failed.target, failed.error
    config = target.provider_config
    failure = {
        "provider": config.name,
        "provider_config": str(config.pk),
        "model": target.model,
        "code": error.code,
        "message": scrub_secrets(error.message, _secrets(target)),
    }
    if failed.retry_refusal is not None:
        failure["retry_refused"] = {
            "code": failed.retry_refusal.code,
            "message": failed.retry_refusal.message,
        }
    return failure


def _error_after_all_targets(failed: list[_Failed]) -> ApplicationError:
    """What to raise when no target served the call: the last target's error,
    naming in `extra.failures` every target tried and how it failed.

    A target whose retry the config's own rate limit refused failed with the
    provider's error of the attempt before: that says what went wrong, the
    refusal only why it was not retried (`retry_refused` of its failure).

    When the last error is a provider config's own rate limit, the refusal
    of whichever rate-limited target admits again soonest: its retry-after
    is when the call can next be served, not when the last fallback frees
    up. A config whose limit the request alone exceeds admits it at no time.
    """
    errors = [entry.error for entry in failed]
    chosen = errors[-1]
    if isinstance(chosen, RateLimited):
        limited = [error for error in errors if isinstance(error, RateLimited)]
        limited = [error for error in limited if error.waiting_helps] or limited
        chosen = min(limited, key=lambda error: error.retry_after)
    chosen.extra = {
        **chosen.extra,
        "failures": [_failure(entry) for entry in failed],
    }
    return chosen


def _deadline_error(call: _Call, failed: list[_Failed], untried: int) -> ProviderTimeout:
    """The timeout a caller gets when the call's deadline ended it: what was
    attempted, and how each target tried failed (`extra.failures`)."""
    seconds = call.deadline.seconds
    attempts = call.attempts
    message = f"The call's deadline of {seconds:g} s was reached " + (
        f"after {attempts} attempt{'' if attempts == 1 else 's'}"
        if attempts
        else "before any attempt"
    )
    if failed:
        message += (
            " ("
            + "; ".join(
                f"“{entry.target.provider_config.name}” ({entry.target.model}): {entry.error.code}"
                for entry in failed
            )
            + ")"
        )
    if untried == len(call.targets):
        message += f"; none of the route's {untried} target{'' if untried == 1 else 's'} tried"
    elif untried:
        message += f"; {untried} fallback target{'' if untried == 1 else 's'} not tried"
    return ProviderTimeout(
        message + ".",
        extra={"deadline_seconds": seconds, "failures": [_failure(entry) for entry in failed]},
    )


def _deadline_reached(
    call: _Call, failed: list[_Failed], target: RouteTarget, index: int, error
) -> ProviderTimeout:
    """The error of a call whose deadline came during its `index`th target,
    which failed with `error` (None: it was not attempted)."""
    if error is not None:
        failed.append(_Failed(target, error))
        index += 1
    return _deadline_error(call, failed, untried=len(call.targets) - index)


def _deadline_check(call: _Call, failed: list[_Failed], index: int) -> None:
    """Start the `index`th target only when the deadline leaves time for an attempt."""
    if not call.deadline.allows_attempt():
        raise _deadline_error(call, failed, untried=len(call.targets) - index)


def _error_when_none_served(call: _Call, failed: list[_Failed]) -> ApplicationError:
    """The deadline's timeout when it left the last target, else `_error_after_all_targets`."""
    if failed and failed[-1].deadline_cut:
        return _deadline_error(call, failed, untried=0)
    return _error_after_all_targets(failed)


def _naming_request(error: ApplicationError, call: _Call) -> None:
    """Name in the error the request id its CallLog rows carry, for the caller to look up."""
    error.extra = {**error.extra, "request_id": str(call.request_id)}


def _run_targets(call: _Call, attempt_target) -> object:
    """Try each target in route order until one serves the call."""
    failed: list[_Failed] = []
    try:
        for index, target in enumerate(call.targets):
            _deadline_check(call, failed, index)
            try:
                return attempt_target(call, target)
            except _MoveOn as move_on:
                failed.append(_Failed.of(target, move_on))
            except _DeadlineReached as reached:
                raise _deadline_reached(call, failed, target, index, reached.error) from None
        raise _error_when_none_served(call, failed)
    except ApplicationError as error:
        _naming_request(error, call)
        raise


# --- complete -------------------------------------------------------------------


def _chat_request(
    *, messages, max_tokens, temperature, top_p, stop, json_mode, tools, timeout, own_copy
) -> ChatRequest:
    messages = messages_validate(messages)
    if own_copy:
        messages, tools = copy.deepcopy(messages), copy.deepcopy(tools)
    stops = parameters_validate(
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stop, timeout=timeout
    )
    return ChatRequest(
        model="",
        messages=messages,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=stops,
        json_mode=bool(json_mode),
        tools=tools_validate(tools),
        timeout=timeout,
    )


def _chat_call_prepare(
    *, operation, tenant, customer_id, service_name, model, deadline, **parameters
) -> _Call:
    """Validate a chat request and resolve its route (shared by complete and stream)."""
    # A stream sends its request only when first read: it keeps its own copy,
    # so that it sends what was validated, counted and fingerprinted here,
    # whatever the caller does to its lists meanwhile. complete() sends at once.
    request = _chat_request(own_copy=operation == "stream", **parameters)
    return _call_prepare(
        tenant=tenant,
        customer_id=customer_id,
        service_name=service_name,
        model=model,
        request=request,
        operation=operation,
        input_tokens=estimate_message_tokens(request.messages, request.tools),
        fingerprint=request_fingerprint(request),
        preview=_preview(request.messages),
        deadline=deadline,
    )


def _call_with_retries(
    call: _Call,
    target: RouteTarget,
    gate: _Gate,
    max_output: int,
    invoke,
    paid: list[Decimal | None] | None = None,
    kept: list[Decimal | None] | None = None,
):
    """Run `invoke()` (one adapter call) until it succeeds, retrying retryable
    failures on this target, each attempt admitted by the rate limit; log the
    successful attempt, priced, and settle the budget with its cost.
    Returns (answer, cost, price source, latency ms); the costs of failed
    attempts that were partly answered (and charged for) are added to `paid`,
    and those of the part of them the answer keeps (an embedding call's
    batches whose vectors it returns) to `kept`."""
    attempt_on_target = 0
    paid = [] if paid is None else paid
    previous: ProviderError | None = None
    try:
        while True:
            attempt_on_target += 1
            counted = gate.admit(call, target, max_output, previous)
            started_at, attempt_started = timezone.now(), time.perf_counter()
            try:
                answer = invoke()
            except ProviderError as error:
                _log_provider_failure(
                    call, target, error, started_at, attempt_started, paid, counted, kept
                )
                _retry_or_raise(error, attempt_on_target, call.deadline)
                previous = error
                continue
            except BaseException as error:
                # Also an interruption: the provider may have been paid already.
                _log_failure(call, target, error, started_at, attempt_started)
                raise
            cost, source, latency_ms = _log_success(
                call, target, answer, counted, started_at, attempt_started
            )
            gate.hold.settle(_cost_sum([*paid, cost]))
            return answer, cost, source, latency_ms
    finally:
        if paid:
            # Settled once: a no-op after the successful attempt's settlement.
            gate.hold.settle(_cost_sum(paid))


def _log_success(
    call: _Call,
    target: RouteTarget,
    answer: ChatResult | EmbedResult,
    counted: TokensCounted | None,
    started_at: datetime,
    started: float,
    **fields,
) -> tuple[Decimal | None, str, int]:
    """Record a successful attempt, priced, and count in the tpm window the
    tokens it used. Returns (cost, price source, latency ms)."""
    latency_ms = _ms_since(started)
    _tokens_used(counted, answer.usage)
    cost, source = _priced(call, target, answer.usage, answer.model, started_at)
    call.log(
        target,
        status=Status.OK,
        created_at=started_at,
        model_answered=answer.model,
        usage=answer.usage,
        usage_estimated=answer.usage_estimated,
        cost_usd=cost,
        price_source=source,
        latency_ms=latency_ms,
        **fields,
    )
    return cost, source, latency_ms


def _log_provider_failure(
    call,
    target,
    error: ProviderError,
    started_at,
    started,
    paid,
    counted: TokensCounted | None,
    kept: list[Decimal | None] | None = None,
) -> None:
    """Record a failed attempt; what the provider answered before it failed
    (`paid_usage`) is priced on its row and added to `paid`, and the cost of
    the part of it a later attempt's answer keeps (`paid_vectors_usage`) to
    `kept`, when given."""
    if error.paid_usage is None:
        _log_failure(call, target, error, started_at, started)
        return
    cost = _log_paid_failure(
        call,
        target,
        error,
        started_at,
        started,
        usage=error.paid_usage,
        answered_model=error.paid_model,
        estimated=error.paid_usage_estimated,
        counted=counted,
    )
    paid.append(cost)
    if kept is None or error.paid_vectors_usage is None:
        return
    if error.paid_vectors_usage != error.paid_usage:
        # The row also holds the batch whose vectors were refused: the part
        # kept is priced on its own, at the prices of the row's day.
        cost, _ = _priced(call, target, error.paid_vectors_usage, error.paid_model, started_at)
    kept.append(cost)


def _log_paid_failure(
    call,
    target,
    error,
    started_at,
    started,
    *,
    usage: Usage,
    answered_model: str,
    estimated: bool,
    counted: TokensCounted | None,
) -> Decimal | None:
    """Record a failed attempt with the `usage` the provider answered (and
    charges for) before it failed, priced on its row. Returns its cost.

    When that usage is the provider's figure for the whole attempt (an answer
    it ended as failed), it replaces the attempt's worst case in the tpm
    window (`counted`); otherwise what the attempt used is not known, and the
    worst case stays."""
    if error.paid_usage_final:
        _tokens_used(counted, usage)
    cost, source = _priced(call, target, usage, answered_model, started_at)
    _log_failure(
        call,
        target,
        error,
        started_at,
        started,
        model_answered=answered_model,
        usage=usage,
        usage_estimated=estimated,
        cost_usd=cost,
        price_source=source,
    )
    return cost


def _complete_on_target(call: _Call, target: RouteTarget) -> CompletionResult:
    started = time.perf_counter()
    request = replace(call.request, model=target.model)
    cached = _cache_lookup(call, target, started)
    if cached is not None:
        return cached
    adapter = _adapter(call, target)
    max_output = _max_output_tokens(request.max_tokens, adapter)
    with _gated(call, target, max_output) as gate:
        chat, cost, source, latency_ms = _call_with_retries(
            call,
            target,
            gate,
            max_output,
            lambda: adapter.complete(
                replace(request, timeout=call.deadline.attempt_timeout(adapter, request.timeout))
            ),
        )
    _cache_store(call, target, chat)
    return _result(call, target, chat, cost=cost, source=source, latency_ms=latency_ms)


def complete(
    *,
    tenant: Tenant,
    messages: list[dict],
    customer_id: str = "",
    service_name: str = "",
    model: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    stop: str | list[str] | None = None,
    json_mode: bool = False,
    tools: list[dict] | None = None,
    timeout: float | None = None,
    deadline: float | None = None,
) -> CompletionResult:
    """Route, gate, call and record one chat completion for `tenant`.

    `timeout` bounds each attempt (else the provider config's); `deadline`
    the whole call, retries, waits and fallbacks included, in seconds (else
    LLM_CALL_DEADLINE_SECONDS).

    Raises InvalidRequest (bad input), NoRouteError, RateLimited,
    BudgetExceeded, the last target's ProviderError when every target failed,
    or ProviderTimeout when the deadline ended the call.
    """
    call = _chat_call_prepare(
        operation="complete",
        tenant=tenant,
        customer_id=customer_id,
        service_name=service_name,
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=stop,
        json_mode=json_mode,
        tools=tools,
        timeout=timeout,
        deadline=deadline,
    )
    return _run_targets(call, _complete_on_target)


# --- stream ---------------------------------------------------------------------


class _StreamStopped(Exception):
    """A stream stopped from another thread (CompletionStream.stop)."""


class CompletionStream:
    """Iterate for text as it arrives; `result` holds the CompletionResult at the end.

    Closing the stream early (or dropping it) stops the upstream call and
    records what was received.
    """

    def __init__(self, call: _Call):
        self.request_id = call.request_id
        # The generator refers to its run, never to this object: dropping the
        # stream then frees the generator at once, which closes it (stopping
        # the upstream call and recording it) instead of leaving that to
        # whenever the cyclic garbage collector runs.
        self._run = _StreamRun(call)
        self._chunks = self._run.generate()

    @property
    def result(self) -> CompletionResult | None:
        return self._run.result

    def __iter__(self) -> Iterator[str]:
        return self._chunks

    def __next__(self) -> str:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()

    def stop(self) -> None:
        """Stop the stream from another thread than the one iterating it: the
        upstream connection is cut, and the iterating thread's next read ends
        the stream as closing it would (no retry, no fallback, what was
        received logged and settled as stopped by the caller)."""
        self._run.stop()


class _StreamRun:
    """The attempts of one stream, and its result once there is one."""

    def __init__(self, call: _Call):
        self.result: CompletionResult | None = None
        self._call = call
        # Costs of attempts on the current target that broke after producing
        # output the caller never saw (tool call pieces, reasoning), and were retried.
        self._paid: list[Decimal | None] = []
        # Where the rate limit counted the current attempt's worst case.
        self._counted: TokensCounted | None = None
        # Set by stop(), from another thread; the current attempt's connection cut.
        self._stopping = threading.Event()
        self._cut: StreamCut | None = None

    def stop(self) -> None:
        self._stopping.set()
        cut = self._cut
        if cut is not None:
            cut.request()

    def generate(self) -> Iterator[str]:
        call = self._call
        # The deadline runs from the first read, when the request is sent.
        call.deadline.start()
        failed: list[_Failed] = []
        try:
            for index, target in enumerate(call.targets):
                _deadline_check(call, failed, index)
                try:
                    yield from self._on_target(target)
                    return
                except _MoveOn as move_on:
                    failed.append(_Failed.of(target, move_on))
                except _DeadlineReached as reached:
                    raise _deadline_reached(call, failed, target, index, reached.error) from None
            raise _error_when_none_served(call, failed)
        except ApplicationError as error:
            _naming_request(error, self._call)
            raise

    def _on_target(self, target: RouteTarget) -> Iterator[str]:
        call = self._call
        started = time.perf_counter()
        request = replace(call.request, model=target.model)
        cached = _cache_lookup(call, target, started)
        if cached is not None:
            # Set first: a caller may stop reading once it has the text.
            self.result = cached
            if cached.content:
                yield cached.content
            return
        adapter = _adapter(call, target)
        max_output = _max_output_tokens(request.max_tokens, adapter)
        self._paid = []
        with _gated(call, target, max_output) as gate:
            attempt_on_target = 0
            previous: ProviderError | None = None
            try:
                while True:
                    attempt_on_target += 1
                    self._counted = gate.admit(call, target, max_output, previous)
                    outcome = yield from self._attempt(adapter, target, request)
                    if outcome is None:
                        return
                    if self._stopping.is_set():
                        # Its caller stopped the stream: no retry, no fallback.
                        raise outcome
                    _retry_or_raise(outcome, attempt_on_target, call.deadline, self._stopping)
                    if self._stopping.is_set():
                        # Stopped while waiting to retry: nothing more is sent.
                        raise outcome
                    previous = outcome
            finally:
                # A finished, broken or abandoned stream has its (possibly
                # estimated) cost on the result; a failed one has none, unless
                # it broke after output the provider charges for.
                paid = list(self._paid)
                if self.result is not None and not self.result.cached:
                    paid.append(self.result.cost_usd)
                if paid:
                    gate.hold.settle(_cost_sum(paid))

    def _attempt(self, adapter: Adapter, target: RouteTarget, request: ChatRequest):
        """Stream one attempt. Returns None when done, or the error to retry on."""
        call = self._call
        started_at, started = timezone.now(), time.perf_counter()
        received: list[str] = []
        # Tool call pieces and reasoning: output too, though the caller reads none of it here.
        unseen_received: list[str] = []
        first_token_ms: int | None = None
        final = None
        answered_model = ""
        reported: Usage | None = None
        cut = self._cut = StreamCut()
        if self._stopping.is_set():
            # Stopped before this attempt was sent: it is sent (so that what
            # reached the provider is logged, as for any caller that stops)
            # and cut as soon as it is answered.
            cut.request()
        upstream = adapter.stream(
            replace(request, timeout=call.deadline.attempt_timeout(adapter, request.timeout)),
            cut=cut,
        )
        try:
            for chunk in upstream:
                if cut.requested.is_set():
                    raise _StreamStopped
                answered_model = chunk.model or answered_model
                reported = chunk.usage_so_far or reported
                if (chunk.text or chunk.unseen_text) and first_token_ms is None:
                    first_token_ms = _ms_since(started)
                if chunk.unseen_text:
                    unseen_received.append(chunk.unseen_text)
                if chunk.text:
                    received.append(chunk.text)
                    yield chunk.text
                if chunk.finish_reason is not None or chunk.usage is not None:
                    final = chunk
        except BaseException as error:
            if (cut.made or isinstance(error, _StreamStopped)) and not isinstance(
                error, GeneratorExit
            ):
                # Stopped from another thread: the read failed on the cut
                # connection (or came after it), as closing the stream would.
                upstream.close()
                self._log_partial(
                    target,
                    _StreamStopped(),
                    received,
                    unseen_received,
                    started_at,
                    started,
                    first_token_ms,
                    answered_model=answered_model,
                    reported=reported,
                )
                return None
            if isinstance(error, ProviderError) and not received:
                # The caller has nothing yet: retry, or fall back. Tool call
                # pieces that came before the break were generated, and paid.
                self._log_unseen_output(
                    target, error, unseen_received, reported, answered_model, started_at, started
                )
                return error
            if isinstance(error, GeneratorExit):
                # The caller stopped reading: the upstream call stops too.
                upstream.close()
            elif not (received or unseen_received):
                _log_failure(call, target, error, started_at, started)
                raise
            # What was received is paid for, so it is logged and settled, also
            # after an interruption (Ctrl-C, a worker shutting down). A caller
            # that has part of the answer gets no retry, no fallback.
            self._log_partial(
                target,
                error,
                received,
                unseen_received,
                started_at,
                started,
                first_token_ms,
                answered_model=answered_model,
                reported=reported,
            )
            if isinstance(error, ProviderError):
                raise error from None
            raise
        text = "".join(received)
        tool_calls = list((final.tool_calls if final is not None else None) or [])
        usage = final.usage if final is not None and final.usage is not None else None
        estimated = usage is None
        if usage is None:
            usage = self._estimate(text, tool_calls, reported)
        chat = ChatResult(
            content=text,
            usage=usage,
            model=(final.model if final is not None and final.model else target.model),
            finish_reason=(final.finish_reason if final is not None else None) or "stop",
            tool_calls=tool_calls,
            usage_estimated=estimated,
        )
        cost, source, latency_ms = _log_success(
            call,
            target,
            chat,
            self._counted,
            started_at,
            started,
            time_to_first_token_ms=first_token_ms,
        )
        self.result = _result(call, target, chat, cost=cost, source=source, latency_ms=latency_ms)
        _cache_store(call, target, chat)
        return None

    def _estimate(
        self,
        text: str,
        tool_calls: list[ToolCall] | None = None,
        reported: Usage | None = None,
        unseen_text: str = "",
    ) -> Usage:
        """The usage of an answer the provider gave no final figures for: what
        it reported so far (the prompt's tokens), else the prompt estimated; the
        output estimated from what was received (text, and tool calls whole or
        the pieces of them that came), unless more was reported."""
        output_tokens = estimate_output_tokens(text, tool_calls or ()) + estimate_text_tokens(
            unseen_text
        )
        return usage_estimate(
            input_tokens=self._call.input_tokens, output_tokens=output_tokens, reported=reported
        )

    def _log_unseen_output(
        self, target, error, unseen_received, reported, answered_model, started_at, started
    ) -> None:
        """Record an attempt that broke before any text reached the caller;
        tool call pieces or reasoning it produced are priced (at the usage the
        provider reported for them, else estimated), and their cost settled
        with the budget whatever the later attempts do."""
        if error.paid_usage is not None:
            usage, estimated = error.paid_usage, error.paid_usage_estimated
            answered_model = error.paid_model or answered_model
        elif unseen_received:
            usage = self._estimate("", reported=reported, unseen_text="".join(unseen_received))
            estimated = True
        else:
            _log_failure(self._call, target, error, started_at, started)
            return
        self._paid.append(
            _log_paid_failure(
                self._call,
                target,
                error,
                started_at,
                started,
                usage=usage,
                answered_model=answered_model,
                estimated=estimated,
                counted=self._counted,
            )
        )

    def _log_partial(
        self,
        target,
        error: BaseException,
        received,
        unseen_received,
        started_at,
        started,
        first_token_ms,
        *,
        answered_model,
        reported,
    ):
        """Record a stream that ended early, with `error` or because the caller
        stopped reading (GeneratorExit, or stop()): usage estimated from what was
        received, unless the provider reported it for the answer it ended as failed."""
        closed = isinstance(error, GeneratorExit | _StreamStopped)
        call = self._call
        text = "".join(received)
        if isinstance(error, ProviderError) and error.paid_usage is not None:
            usage, estimated = error.paid_usage, error.paid_usage_estimated
            answered_model = error.paid_model or answered_model
        else:
            usage = self._estimate(text, reported=reported, unseen_text="".join(unseen_received))
            estimated = True
        latency_ms = _ms_since(started)
        _tokens_used(self._counted, usage)
        cost, source = _priced(call, target, usage, answered_model, started_at)
        if closed:
            code, message = "client_closed", "The caller stopped reading the stream."
        else:
            code, message = _error_code_and_message(error)
        call.log(
            target,
            status=Status.OK if closed else Status.ERROR,
            created_at=started_at,
            error_code=code,
            error_message=scrub_secrets(message, _secrets(target)),
            model_answered=answered_model,
            usage=usage,
            usage_estimated=estimated,
            cost_usd=cost,
            price_source=source,
            latency_ms=latency_ms,
            time_to_first_token_ms=first_token_ms,
        )
        self.result = _result(
            call,
            target,
            ChatResult(
                content=text,
                usage=usage,
                model=answered_model or target.model,
                finish_reason="aborted" if closed else "error",
                usage_estimated=estimated,
            ),
            cost=cost,
            source=source,
            latency_ms=latency_ms,
        )


def stream(
    *,
    tenant: Tenant,
    messages: list[dict],
    customer_id: str = "",
    service_name: str = "",
    model: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    stop: str | list[str] | None = None,
    json_mode: bool = False,
    tools: list[dict] | None = None,
    timeout: float | None = None,
    deadline: float | None = None,
) -> CompletionStream:
    """Like `complete()`, streamed. Input and routing errors raise at once;
    provider errors raise while iterating (before the first chunk they are
    retried and fall back like `complete()`).

    The deadline runs from the first read and bounds the attempts until the
    first chunk; a stream that has started is not cut by it."""
    call = _chat_call_prepare(
        operation="stream",
        tenant=tenant,
        customer_id=customer_id,
        service_name=service_name,
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=stop,
        json_mode=json_mode,
        tools=tools,
        timeout=timeout,
        deadline=deadline,
    )
    call.streamed = True
    return CompletionStream(call)


# --- embed ----------------------------------------------------------------------


def _embed_on_target(call: _Call, target: RouteTarget) -> EmbeddingResult:
    request = replace(call.embed_request, model=target.model)
    adapter = _adapter(call, target)
    if not adapter.supports_embeddings:
        # Refused before the budget and rate limit: nothing would be sent.
        error = adapter.embeddings_unsupported()
        _log_failure(call, target, error, timezone.now(), time.perf_counter())
        raise error
    # The batches answered by failed attempts on this target: a retry sends
    # only the inputs after them, and its vectors must have their dimensions.
    # Another target would start over, as its vectors do not mix with these.
    # A batch answered with vectors that were refused is paid (on its
    # attempt's row, and by the budget) but not kept: the result counts only
    # the batches whose vectors it returns.
    answered: list[list[float]] = []
    answered_tokens = 0
    answered_estimated = False

    def attempt() -> EmbedResult:
        nonlocal answered_tokens, answered_estimated
        try:
            return adapter.embed(
                replace(
                    request,
                    inputs=request.inputs[len(answered) :],
                    timeout=call.deadline.attempt_timeout(adapter, request.timeout),
                    deadline=call.deadline.ends,
                    expected_dimensions=len(answered[0]) if answered else None,
                )
            )
        except ProviderError as error:
            if error.paid_vectors and error.paid_vectors_usage is not None:
                answered.extend(error.paid_vectors)
                answered_tokens += error.paid_vectors_usage.input_tokens
                answered_estimated = answered_estimated or error.paid_usage_estimated
            raise

    kept: list[Decimal | None] = []
    with _gated(call, target, 0) as gate:
        embedded, cost, source, latency_ms = _call_with_retries(
            call, target, gate, 0, attempt, kept=kept
        )
    config = target.provider_config
    return EmbeddingResult(
        request_id=call.request_id,
        vectors=[*answered, *embedded.vectors],
        usage=Usage(input_tokens=answered_tokens + embedded.usage.input_tokens),
        cost_usd=_cost_sum([*kept, cost]),
        price_source=source,
        provider=config.name,
        provider_config_id=config.pk,
        provider_type=config.provider_type,
        model=embedded.model or target.model,
        latency_ms=latency_ms,
        attempts=call.attempts,
        usage_estimated=answered_estimated or embedded.usage_estimated,
    )


def embed(
    *,
    tenant: Tenant,
    inputs: str | list[str],
    model: str,
    customer_id: str = "",
    service_name: str = "",
    timeout: float | None = None,
    deadline: float | None = None,
) -> EmbeddingResult:
    """Embed `inputs` with `model` on the routed provider config.

    Vectors of different models do not mix, so embeddings never fall back to
    another target: only the primary target is tried (with retries).
    """
    inputs = embed_inputs_validate(inputs)
    model = model_validate(model)
    if model is None:
        raise InvalidRequest("model", "Name the embedding model to use.")
    parameters_validate(max_tokens=None, temperature=None, top_p=None, stop=None, timeout=timeout)
    embed_request = EmbedRequest(model=model, inputs=inputs, timeout=timeout)
    call = _call_prepare(
        tenant=tenant,
        customer_id=customer_id,
        service_name=service_name,
        model=model,
        request=None,
        operation="embed",
        input_tokens=sum(estimate_text_tokens(text) for text in inputs),
        fingerprint="",
        preview="",
        deadline=deadline,
        embed_request=embed_request,
    )
    call.targets = call.targets[:1]
    return _run_targets(call, _embed_on_target)
