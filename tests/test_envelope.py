"""The one textual form of a time (``format_time``): the text the store, the catalog and the
agents have always written, for any datetime they may hand it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from eventstore.envelope import format_time, parse_time

_ZONES = st.sampled_from([None, UTC, timezone(timedelta(0)),
                          timezone(timedelta(hours=5, minutes=30)),
                          timezone(-timedelta(hours=11)), ZoneInfo("Europe/Zurich"),
                          ZoneInfo("America/New_York"), ZoneInfo("UTC")])
# Naive bounds (the zone is set after); a day inside datetime's range, so that converting to
# UTC cannot overflow.
_MOMENTS = st.datetimes(min_value=datetime(1, 1, 2),  # noqa: DTZ001
                        max_value=datetime(9999, 12, 30))  # noqa: DTZ001


def _by_strftime(moment: datetime) -> str:
    """The definition the text must keep: the time in UTC through the C library's strftime."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@given(_MOMENTS, _ZONES)
def test_format_time_writes_what_strftime_wrote(moment: datetime, zone) -> None:
    aware = moment if zone is None else moment.replace(tzinfo=zone)
    assert format_time(aware) == _by_strftime(aware)


def test_format_time_edges() -> None:
    assert format_time(datetime(2026, 11, 29, 3, 4, 5, tzinfo=UTC)) == \
        "2026-11-29T03:04:05.000000Z"
    naive = datetime(2026, 11, 29, 3, 4, 5, 7)  # noqa: DTZ001 - naive means UTC
    assert format_time(naive) == "2026-11-29T03:04:05.000007Z"
    local = datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert format_time(local) == "2025-12-31T23:30:00.000000Z"
    # Before year 1000 the C library writes fewer digits; the text stays what it was.
    assert format_time(datetime(999, 5, 6, tzinfo=UTC)) == _by_strftime(
        datetime(999, 5, 6, tzinfo=UTC))
    text = "2026-11-29T03:04:05.123456Z"
    assert format_time(parse_time(text)) == text
