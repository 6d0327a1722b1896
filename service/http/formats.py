"""Wire formats shared by the profiles: ids in paths, timestamps, phrases of time, and paging arithmetic.

Timestamps in response bodies are `datetime`s that msgspec writes as ISO 8601 in UTC ending in Z
(with fractions of a second only when there are some); the helpers here are for the rest."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from litestar.params import PathParameter

# A notification id in a path. Never empty: a path with an empty segment is refused before routing
# (service/http/empty_ids.py). The OpenAPI document says so, so that clients and fuzzers built from
# it do not send one (an empty id in the middle of a path, `/v1/notifications//read`, is collapsed
# by many HTTP clients into another route, `/v1/notifications/read`, which the server cannot tell).
PathId = Annotated[str, PathParameter(min_length=1)]


def now_iso_ms() -> str:
    """Millisecond precision, the form some products use for envelope timestamps."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def pages(total: int, size: int) -> int:
    return -(-total // size) if size > 0 else 0


_UNITS = (
    ("year", 365 * 86400),
    ("month", 30 * 86400),
    ("week", 7 * 86400),
    ("day", 86400),
    ("hour", 3600),
    ("minute", 60),
)


def relative_time(moment: datetime, now: datetime | None = None) -> str:
    """A human phrase for how long ago (or how far ahead) `moment` is: "2 hours ago", "in 3 days"."""
    delta = ((now or datetime.now(UTC)) - moment).total_seconds()
    if abs(delta) < 45:
        return "just now"
    seconds = max(abs(delta), 60)
    unit, size = next((u, s) for u, s in _UNITS if seconds >= s)
    count = int(seconds // size)
    phrase = f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{phrase} ago" if delta > 0 else f"in {phrase}"


def months_before(moment: datetime, months: int) -> datetime:
    """The same day and time `months` calendar months earlier, clamped to the month's last day."""
    year, month = divmod(moment.year * 12 + moment.month - 1 - months, 12)
    month += 1
    days = (datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC) - datetime(year, month, 1, tzinfo=UTC)).days
    return moment.replace(year=year, month=month, day=min(moment.day, days))
