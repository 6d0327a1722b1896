"""Wire formats shared by the profiles: timestamps, and paging arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC ending in Z; fractions of a second only when there are some."""
    text = moment.astimezone(UTC).replace(tzinfo=None).isoformat()
    return text + "Z"


def iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else iso(moment)


def now_iso() -> str:
    return iso(datetime.now(UTC))


def now_iso_ms() -> str:
    """Millisecond precision, the form some products use for envelope timestamps."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def pages(total: int, size: int) -> int:
    return -(-total // size) if size > 0 else 0
