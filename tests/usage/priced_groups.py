"""Call logs of four models whose costs are known in part: what each one's usage must read.

- "free": every request priced at $0 (a free model's price row, a self-hosted
  model, a cache hit): its cost is $0, known.
- "zero-and-unpriced": a cache hit ($0) beside unpriced answers and a failed
  attempt: $0 for the one priced, and 2 unpriced requests not in it.
- "paid-and-unpriced": priced answers (a failed attempt the provider charged
  for included) beside an unpriced one: their exact sum, 1 unpriced not in it.
- "unpriced": unpriced answers (a charged failed attempt of the same model
  included), and a refused call: no request priced, so its cost is unknown.

The last one's calls are a day earlier than the others', so a day of unpriced
usage alone and a day of priced and unpriced usage both exist.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from tests.factories import CallLogFactory
from usage.models import CallLog

OK, ERROR, BLOCKED, CACHED = (
    CallLog.Status.OK,
    CallLog.Status.ERROR,
    CallLog.Status.BLOCKED,
    CallLog.Status.CACHED,
)
UNKNOWN, NONE = CallLog.PriceSource.UNKNOWN, CallLog.PriceSource.NONE

# model: [(status, cost, price source)], each one call log.
CALLS = {
    "free": [
        (OK, "0", CallLog.PriceSource.OVERRIDE),
        (OK, "0", CallLog.PriceSource.SELF_HOSTED),
        (CACHED, "0", NONE),
    ],
    "zero-and-unpriced": [
        (CACHED, "0", NONE),
        (OK, None, UNKNOWN),
        (OK, None, UNKNOWN),
        (ERROR, None, ""),
    ],
    "paid-and-unpriced": [
        (OK, "0.000123456789", CallLog.PriceSource.OVERRIDE),
        (ERROR, "0.000000000001", CallLog.PriceSource.OVERRIDE),
        (OK, None, UNKNOWN),
    ],
    "unpriced": [
        (OK, None, UNKNOWN),
        (ERROR, None, UNKNOWN),
        (BLOCKED, None, ""),
    ],
}

# model: (requests, errors, blocked, cached, priced, unpriced, stored cost, cost shown)
EXPECTED = {
    "free": (3, 0, 0, 1, 3, 0, Decimal(0), Decimal(0)),
    "zero-and-unpriced": (4, 1, 0, 1, 1, 2, Decimal(0), Decimal(0)),
    "paid-and-unpriced": (
        3,
        1,
        0,
        0,
        2,
        1,
        Decimal("0.000123456790"),
        Decimal("0.000123456790"),
    ),  # fmt: skip
    "unpriced": (3, 1, 1, 0, 0, 2, Decimal(0), None),
}

# The model logged a day before the others.
EARLIER = "unpriced"


def priced_groups_log(tenant, config, now: dt.datetime) -> None:
    """Log CALLS on `config`: EARLIER's a day before `now`, the others' at `now`,
    each model in a service of its name."""
    for model, calls in CALLS.items():
        created_at = now - dt.timedelta(days=1) if model == EARLIER else now
        for status, cost, source in calls:
            CallLogFactory(
                tenant=tenant,
                provider_config=config,
                model_requested=model,
                model_answered="" if status in (ERROR, BLOCKED) else model,
                service_name=model,
                status=status,
                cost_usd=None if cost is None else Decimal(cost),
                price_source=source,
                created_at=created_at,
            )
