"""The canonical instant text: UTC, microseconds, fixed width, and its strict inverse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kizuna_consent.domain.instants import (
    InvalidInstant,
    NaiveDatetime,
    canonical_instant,
    parse_instant,
    to_utc,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2025, 4, 1, tzinfo=UTC), "2025-04-01T00:00:00.000000Z"),
        (
            datetime(2025, 4, 1, 9, 0, 0, 5, tzinfo=timezone(timedelta(hours=9))),
            "2025-04-01T00:00:00.000005Z",
        ),
        (datetime(5, 1, 2, 3, 4, 5, 600000, tzinfo=UTC), "0005-01-02T03:04:05.600000Z"),
        (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "9999-12-31T23:59:59.999999Z"),
    ],
)
def test_canonical_instant(value: datetime, text: str) -> None:
    assert canonical_instant(value) == text
    assert parse_instant(text) == value


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(NaiveDatetime, match="effective_at must carry a timezone"):
        canonical_instant(datetime(2025, 1, 1), "effective_at")
    with pytest.raises(NaiveDatetime):
        to_utc(datetime(2025, 1, 1))


@pytest.mark.parametrize(
    "text",
    [
        "2025-04-01T00:00:00Z",
        "2025-04-01T00:00:00.000000+00:00",
        "2025-04-01 00:00:00.000000Z",
        "2025-13-01T00:00:00.000000Z",
        "2025-02-30T00:00:00.000000Z",
        "2025-04-01T00:00:00.000000Z\n",
        "\uff12025-04-01T00:00:00.000000Z",
        "",
    ],
)
def test_parse_instant_is_strict(text: str) -> None:
    with pytest.raises(InvalidInstant):
        parse_instant(text)


# Kept a day inside datetime's range so any offset converts to UTC without overflow.
AWARE = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones()
)


@given(AWARE, AWARE)
def test_canonical_text_sorts_like_time(a: datetime, b: datetime) -> None:
    # Storage compares these strings in SQL; that is only right if string order is time order.
    # (Compared in UTC: Python compares two datetimes sharing a tzinfo by wall time.)
    ua, ub = a.astimezone(UTC), b.astimezone(UTC)
    ta, tb = canonical_instant(a), canonical_instant(b)
    assert (ta < tb) == (ua < ub)
    assert (ta == tb) == (ua == ub)
    assert parse_instant(ta) == ua
