"""Throttling of the API per credential, on the shared Django cache (Redis when configured).

One rate budget per service key (scope `service_key`), per user (`user`)
and, for unauthenticated requests, per client address (`anon`). Rates are
`REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`, read on every request so that a
settings change applies at once.

When the cache cannot be reached a request is let through unthrottled, with a
warning, as the completion service's own rate limits are: refusing every
request for a cache outage would be worse.
"""

from __future__ import annotations

import logging

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from llm_providers.models import ServiceKey

logger = logging.getLogger(__name__)

SCOPE_SERVICE_KEY = "service_key"
SCOPE_USER = "user"
SCOPE_ANON = "anon"


class CredentialRateThrottle(SimpleRateThrottle):
    """A sliding window of requests per credential; 429 with Retry-After beyond it."""

    def __init__(self):
        # The scope, hence the rate, is known per request only.
        self.scope = None
        self.rate = None

    def _scope_and_ident(self, request) -> tuple[str, str]:
        if isinstance(request.auth, ServiceKey):
            # The prefix identifies a key without any part of its secret or hash.
            return SCOPE_SERVICE_KEY, request.auth.prefix
        user = request.user
        if user is not None and user.is_authenticated and user.pk is not None:
            return SCOPE_USER, str(user.pk)
        return SCOPE_ANON, self.get_ident(request)

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view) -> bool:
        self.scope, self._ident = self._scope_and_ident(request)
        self.rate = self.get_rate()
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # noqa: BLE001 - any cache failure: not enforced
            logger.warning("API throttle not enforced: cache unavailable (%s)", type(exc).__name__)
            return True

    def wait(self) -> float:
        """Seconds until a request passes again; never None, so every 429 has Retry-After.

        DRF gives up (None) when the history already holds more requests than
        the rate allows, which happens once the rate is lowered (it is read on
        every request) or when processes race. A request passes again once the
        history is below the rate, i.e. when its `num_requests`-th newest entry
        leaves the window.
        """
        waited = super().wait()
        if waited is not None:
            return waited
        return max(0.0, self.duration - (self.now - self.history[self.num_requests - 1]))

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self._ident}
