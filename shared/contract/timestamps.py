"""The one timestamp format batchfn stores: ISO 8601 in UTC with milliseconds and a `Z`
(e.g. `2025-01-31T12:00:00.250Z`), in registry records, job records and progress alike."""

from __future__ import annotations

from datetime import UTC, datetime


def format_time(moment: datetime) -> str:
    """`moment` (aware, any zone) in the stored format."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now() -> str:
    """The current time in the stored format."""
    return format_time(datetime.now(UTC))


def parse_time(text: str | None) -> datetime | None:
    """An aware datetime from a stored timestamp (older `+00:00` forms too); None stays None."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
