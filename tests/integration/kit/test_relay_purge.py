"""The relay's erasure purge against a real nats-server: an event marked
`purges_subject` leaves its subject holding only itself, the rest of the stream
untouched and in order, also when the relay stops between storing it and purging."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import nats
import pytest
from eventsourcing.persistence import Notification
from google.protobuf.wrappers_pb2 import StringValue
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna_kit.cancellation import cancel_and_wait
from kizuna_kit.consumer import DEADLETTER_STREAM, DEADLETTER_SUBJECTS, deadletter_subject
from kizuna_kit.nats_link import NatsLink, ensure_stream
from kizuna_kit.natsd import NatsServer
from kizuna_kit.relay import Relay
from kizuna_kit.testing.waiting import eventually
from kizuna_kit.wire import OutgoingEvent

pytestmark = pytest.mark.integration

STREAM = "PURGETEST"
ERASE = "erase"


class Log:
    """A notification log: (customer, text) per position; text ERASE marks an erasure."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str]] = []

    def add(self, customer: str, text: str) -> None:
        self.rows.append((customer, text))

    def select_notifications(
        self, start: int | None, limit: int, stop: int | None = None, topics: Sequence[str] = ()
    ) -> Sequence[Notification]:
        first = max(start or 1, 1)
        return [
            Notification(
                id=position,
                originator_id=customer,
                originator_version=position,
                topic="t",
                state=text.encode(),
            )
            for position, (customer, text) in enumerate(self.rows, 1)
            if first <= position < first + limit
        ]

    def max_notification_id(self) -> int | None:
        return len(self.rows) or None


def translate(notification: Notification) -> OutgoingEvent:
    now = datetime.now(UTC)
    text = notification.state.decode()
    return OutgoingEvent(
        subject=f"purgetest.customer.{notification.originator_id}",
        aggregate_id=str(notification.originator_id),
        aggregate_version=notification.originator_version,
        occurred_at=now,
        recorded_at=now,
        payload=StringValue(value=text),
        purges_subject=text == ERASE,
    )


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(nats_server.url)
    yield client.jetstream()
    await client.close()


def new_relay(log: Log, link: NatsLink) -> Relay:
    return Relay(
        service="purgetest",
        stream=STREAM,
        subjects=["purgetest.>"],
        log_reader=log,
        translate=translate,
        link=link,
        poll_interval=0.05,
    )


async def held(js: JetStreamContext) -> list[tuple[int, str]]:
    """(position, text) of every message the stream still holds, in stream order."""
    info = await js.stream_info(STREAM)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(STREAM, seq=seq)
        except NotFoundError:
            continue  # purged
        event = Envelope.FromString(msg.data or b"")
        text = StringValue()
        assert event.payload.Unpack(text)
        found.append((event.position, text.value))
    return found


async def published(js: JetStreamContext, position: int) -> None:
    async def there() -> bool:
        try:
            return (await held(js))[-1][0] == position
        except (NotFoundError, IndexError):
            return False

    await eventually(there)


async def test_an_erasure_purges_its_subject_and_nothing_else(
    nats_server: NatsServer, js: JetStreamContext
) -> None:
    log, link = Log(), NatsLink(nats_server.url, name="purgetest")
    # Consumers' dead letters of both customers (as kizuna_kit.consumer files them).
    await ensure_stream(js, DEADLETTER_STREAM, DEADLETTER_SUBJECTS, 1)
    for customer in ("a", "b"):
        subject = deadletter_subject(STREAM, "profilesync", f"purgetest.customer.{customer}")
        await js.publish(subject, customer.encode())
    for customer, text in [("a", "a1"), ("b", "b1"), ("a", "a2"), ("b", "b2"), ("a", "a3")]:
        log.add(customer, text)
    # a3 comes right before the erasure: the purge leaves the erasure, now the stream's
    # last message, and the relay goes on from it.
    log.add("a", ERASE)
    task = asyncio.create_task(new_relay(log, link).run())
    try:
        await published(js, 6)
        assert await held(js) == [(2, "b1"), (4, "b2"), (6, ERASE)]
        log.add("b", "b3")
        log.add("a", "a-again")  # an id is not reused, but nothing stops the subject
        await published(js, 8)
    finally:
        await cancel_and_wait([task])
        await link.close()
    assert await held(js) == [(2, "b1"), (4, "b2"), (6, ERASE), (7, "b3"), (8, "a-again")]
    info = await js.stream_info(DEADLETTER_STREAM)
    assert info.state.messages == 1
    assert (await js.get_msg(DEADLETTER_STREAM, seq=info.state.last_seq)).data == b"b"


async def test_a_relay_stopped_before_its_purge_purges_when_it_resumes(
    nats_server: NatsServer, js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, link = Log(), NatsLink(nats_server.url, name="purgetest")
    log.add("b", "b1")
    log.add("a", "a1")
    first = asyncio.create_task(new_relay(log, link).run())
    await published(js, 2)

    # The erasure is stored, then the relay stops where it would purge.
    reached = asyncio.Event()

    async def stop_instead(self: JetStreamContext, *args: object, **kwargs: object) -> bool:
        reached.set()
        await asyncio.Event().wait()  # cancelled below
        return False

    purge = JetStreamContext.purge_stream
    monkeypatch.setattr(JetStreamContext, "purge_stream", stop_instead)
    log.add("a", ERASE)
    log.add("b", "b2")  # must not go out before the purge
    await asyncio.wait_for(reached.wait(), 10)
    await cancel_and_wait([first])
    assert await held(js) == [(1, "b1"), (2, "a1"), (3, ERASE)]
    monkeypatch.setattr(JetStreamContext, "purge_stream", purge)

    second = asyncio.create_task(new_relay(log, link).run())
    try:
        await published(js, 4)
    finally:
        await cancel_and_wait([second])
        await link.close()
    assert await held(js) == [(1, "b1"), (3, ERASE), (4, "b2")]
