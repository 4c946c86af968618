"""Events on the wire: protobuf payloads inside the shared kizuna.events.v1.Envelope."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from eventsourcing.persistence import Notification
from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.message import Message

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna_kit.errors import invalid_argument

MSG_ID = "Nats-Msg-Id"


@dataclass(frozen=True)
class OutgoingEvent:
    """What a service's translator makes of one stored event."""

    subject: str
    aggregate_id: str
    aggregate_version: int
    occurred_at: datetime
    recorded_at: datetime
    payload: Message
    # Once this one is stored, the stream drops the subject's earlier messages: it
    # records an erasure (the subject's last event), and they hold what was erased.
    purges_subject: bool = False


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_FIRST, _LAST = -62135596800, 253402300799  # 0001-01-01 and 9999-12-31T23:59:59, UTC


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """As `Timestamp.FromDatetime` (a naive value is UTC), several times cheaper: this runs
    for every time in every message."""
    since = value - (_NAIVE_EPOCH if value.utcoffset() is None else _EPOCH)
    seconds = since.days * 86400 + since.seconds
    if not _FIRST <= seconds <= _LAST:
        raise ValueError(f"{value!r} is outside the range of a protobuf Timestamp")
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=since.microseconds * 1000)


def optional_time(message: Message, field: str) -> datetime | None:
    """A request's optional Timestamp field as an aware UTC datetime; None when unset.
    Raises RequestError (INVALID_ARGUMENT, INVALID_TIME) for one no datetime can hold
    (before year 1, after 9999, or nanos out of range)."""
    if not message.HasField(field):
        return None
    value: timestamp_pb2.Timestamp = getattr(message, field)
    if not (_FIRST <= value.seconds <= _LAST and 0 <= value.nanos < 1_000_000_000):
        raise invalid_argument(
            "INVALID_TIME", f"{field} is outside 0001-01-01..9999-12-31", field=field
        )
    return value.ToDatetime(tzinfo=UTC)


def event_id(service: str, position: int) -> str:
    return f"{service}:{position}"


def position_of(msg_id: str, service: str) -> int:
    prefix, _, number = msg_id.rpartition(":")
    if prefix != service or not number.isdigit():
        raise ValueError(f"message id {msg_id!r} was not published by {service}")
    return int(number)


def envelope(service: str, stream: str, position: int, event: OutgoingEvent) -> Envelope:
    if isinstance(event.payload, any_pb2.Any):
        payload = event.payload
    else:
        payload = any_pb2.Any()
        payload.Pack(event.payload)
    return Envelope(
        event_id=event_id(service, position),
        stream=stream,
        aggregate_id=event.aggregate_id,
        aggregate_version=event.aggregate_version,
        type=payload.type_url.rpartition("/")[2],
        occurred_at=timestamp(event.occurred_at),
        recorded_at=timestamp(event.recorded_at),
        position=position,
        payload=payload,
    )


def draft_envelope(stream: str, event: OutgoingEvent) -> bytes:
    """An envelope without event id and position, for services whose outbox is a
    table: the relay completes it when it publishes (see `from_outbox`)."""
    return envelope("", stream, 0, event).SerializeToString()


def from_outbox(notification: Notification) -> OutgoingEvent:
    """The relay's translator for outbox rows holding `draft_envelope` bytes."""
    draft = Envelope.FromString(notification.state)
    return OutgoingEvent(
        subject=notification.topic,
        aggregate_id=draft.aggregate_id,
        aggregate_version=draft.aggregate_version,
        occurred_at=draft.occurred_at.ToDatetime(tzinfo=UTC),
        recorded_at=draft.recorded_at.ToDatetime(tzinfo=UTC),
        payload=draft.payload,
    )
