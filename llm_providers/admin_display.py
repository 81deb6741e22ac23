"""How the admin pages write times."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_display(moment: datetime | None) -> str:
    """A time in UTC, the server's zone and the one the admin's date filters
    count in, zone named: 2026-11-22 17:51:03 UTC. The admin's own format
    reads "Nov. 22, 2026, 5:51 p.m." in no stated zone."""
    if moment is None:
        return "—"
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
