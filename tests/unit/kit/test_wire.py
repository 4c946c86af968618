"""kizuna_kit.wire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from kizuna_kit.wire import timestamp


def reference(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.none() | st.integers(min_value=-23 * 60, max_value=23 * 60),
)
def test_timestamp_is_the_same_as_from_datetime(naive: datetime, offset: int | None) -> None:
    # Offsets in whole minutes, as real ones are (FromDatetime drops a sub-minute part).
    value = naive if offset is None else naive.replace(tzinfo=timezone(timedelta(minutes=offset)))
    assert timestamp(value) == reference(value)


def test_timestamp_of_known_instants() -> None:
    assert timestamp(datetime(1970, 1, 1, tzinfo=UTC)) == Timestamp()
    assert timestamp(datetime(1969, 12, 31, 23, 59, 59, 500000)) == Timestamp(
        seconds=-1, nanos=500_000_000
    )
    tokyo = timezone(timedelta(hours=9))
    assert timestamp(datetime(2025, 1, 10, 9, 0, 0, 7, tzinfo=tokyo)) == Timestamp(
        seconds=1736467200, nanos=7000
    )
