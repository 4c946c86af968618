"""kizuna_kit.consumer against a real nats-server and a real SQLite database: every
message takes effect exactly once, in stream order, through consumer crashes,
failing handlers and nats-server crashes."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from nats.aio.client import Client
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna_kit.consumer import DEADLETTER_STREAM, Consumer, deadletter_subject
from kizuna_kit.nats_link import NatsLink, ensure_stream
from kizuna_kit.natsd import NatsServer
from kizuna_kit.relay import EXPECTED_LAST_MSG_ID, EXPECTED_LAST_SEQUENCE
from kizuna_kit.testing.waiting import eventually
from kizuna_kit.wire import MSG_ID, OutgoingEvent, envelope

pytestmark = pytest.mark.integration

STREAM = "KITTEST"
SUBJECT = "kittest.customer.changed"


def value_of(event: Envelope) -> int:
    payload = StringValue()
    assert event.payload.Unpack(payload)
    return int(payload.value)


class Ledger:
    """A service's database: the effect and the tracking position in one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls: list[int] = []  # stream sequences offered to apply
        self.skipped: list[int] = []  # ... of which already applied
        self.batches: list[list[int]] = []  # stream sequences offered to apply_batch
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("CREATE TABLE effects (value INTEGER NOT NULL)")  # no UNIQUE on purpose
            db.execute("CREATE TABLE tracking (id INTEGER PRIMARY KEY, position INTEGER)")
            db.execute("INSERT INTO tracking VALUES (1, 0)")

    async def apply(self, event: Envelope, seq: int) -> None:
        self.calls.append(seq)
        if not await asyncio.to_thread(self._apply, value_of(event), seq):
            self.skipped.append(seq)

    def _apply(self, value: int, seq: int) -> bool:
        with contextlib.closing(sqlite3.connect(self.path, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")
            (position,) = db.execute("SELECT position FROM tracking WHERE id = 1").fetchone()
            if seq <= position:
                db.execute("ROLLBACK")
                return False
            db.execute("INSERT INTO effects VALUES (?)", (value,))
            db.execute("UPDATE tracking SET position = ? WHERE id = 1", (seq,))
            db.execute("COMMIT")
            return True

    async def apply_batch(self, batch: Sequence[tuple[Envelope, int]]) -> None:
        """All of a batch in one transaction, or nothing."""
        self.batches.append([seq for _, seq in batch])
        await asyncio.to_thread(self._apply_batch, [(value_of(e), seq) for e, seq in batch])

    def _apply_batch(self, batch: list[tuple[int, int]]) -> None:
        with contextlib.closing(sqlite3.connect(self.path, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")
            (position,) = db.execute("SELECT position FROM tracking WHERE id = 1").fetchone()
            for value, seq in batch:
                if seq <= position:
                    continue
                db.execute("INSERT INTO effects VALUES (?)", (value,))
                position = seq
            db.execute("UPDATE tracking SET position = ? WHERE id = 1", (position,))
            db.execute("COMMIT")

    def rows(self) -> list[int]:
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            return [v for (v,) in db.execute("SELECT value FROM effects ORDER BY rowid")]

    def position(self) -> int:
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            return int(db.execute("SELECT position FROM tracking").fetchone()[0])


class Publisher:
    """Publishes like the relay: a message id and the expected previous id."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.js = client.jetstream()
        self.last_id: str | None = None

    async def events(self, values: range) -> None:
        for i in values:
            now = datetime.now(UTC)
            event = OutgoingEvent(
                SUBJECT, f"customer-{i % 7}", i, now, now, StringValue(value=str(i))
            )
            await self.raw(envelope("test", STREAM, i, event).SerializeToString(), f"test:{i}")

    async def raw(self, data: bytes, msg_id: str, subject: str = SUBJECT) -> None:
        headers = {MSG_ID: msg_id}
        if self.last_id is None:
            headers[EXPECTED_LAST_SEQUENCE] = "0"
        else:
            headers[EXPECTED_LAST_MSG_ID] = self.last_id
        await self.js.publish(subject, data, headers=headers)
        self.last_id = msg_id


@pytest.fixture
async def publisher(nats_server: NatsServer) -> AsyncIterator[Publisher]:
    client = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    await ensure_stream(client.jetstream(), STREAM, ["kittest.>"])
    yield Publisher(client)
    await client.close()


@pytest.fixture
async def link(nats_server: NatsServer) -> AsyncIterator[NatsLink]:
    link = NatsLink(nats_server.url, "test-consumer")
    yield link
    await link.close()


@contextlib.asynccontextmanager
async def running(consumer: Consumer) -> AsyncIterator[None]:
    task = asyncio.create_task(consumer.run())
    try:
        yield
    finally:
        task.cancel()  # the consumer never returns; a crash would surface here
        with contextlib.suppress(asyncio.CancelledError):
            await task


def metric(name: str, durable: str) -> float:
    return REGISTRY.get_sample_value(name, {"stream": STREAM, "durable": durable}) or 0.0


async def test_crash_mid_batch_applies_everything_once_in_order(
    tmp_path: Path, publisher: Publisher, link: NatsLink
) -> None:
    first_run, crash_at, total = 300, 150, 350
    ledger = Ledger(tmp_path / "effects.db")
    await publisher.events(range(1, first_run + 1))

    never = asyncio.Event()

    async def crash_after_commit(event: Envelope, seq: int) -> None:
        await ledger.apply(event, seq)
        if seq == crash_at:
            await never.wait()  # committed, never acknowledged: the process "dies" here

    first = Consumer(link=link, stream=STREAM, durable="once", apply=crash_after_commit)
    async with running(first):
        await eventually(within=15.0, predicate=lambda: ledger.position() >= crash_at)
    # Stopped mid-way, in the middle of a fetched batch (default batch 100).
    assert ledger.rows() == list(range(1, crash_at + 1))

    await publisher.events(range(first_run + 1, total + 1))
    second = Consumer(link=link, stream=STREAM, durable="once", apply=ledger.apply)
    async with running(second):
        await eventually(within=15.0, predicate=lambda: second.processed >= total)

    assert ledger.rows() == list(range(1, total + 1))
    assert ledger.position() == total
    # The unacknowledged message came back and its second delivery had no effect.
    assert crash_at in ledger.skipped
    assert all(seq <= crash_at for seq in ledger.skipped)


class PoisonError(Exception):
    pass


async def test_permanent_failure_is_dead_lettered_and_order_kept(
    tmp_path: Path, publisher: Publisher, link: NatsLink
) -> None:
    ledger = Ledger(tmp_path / "effects.db")
    garbage = b"\x0a\xff not an envelope"
    await publisher.events(range(1, 4))  # stream seq 1-3
    await publisher.raw(garbage, "test:garbage")  # seq 4
    await publisher.events(range(4, 9))  # seq 5-9; value 5 is seq 6
    attempts: list[int] = []

    async def apply(event: Envelope, seq: int) -> None:
        if value_of(event) == 5:
            attempts.append(seq)
            raise PoisonError("cannot apply value 5")
        await ledger.apply(event, seq)

    consumer = Consumer(
        link=link, stream=STREAM, durable="dl", apply=apply, max_attempts=3, backoff_seconds=0.01
    )
    async with running(consumer):
        await eventually(within=15.0, predicate=lambda: consumer.processed >= 9)

    assert ledger.rows() == [1, 2, 3, 4, 6, 7, 8]
    assert attempts == [6, 6, 6]
    js = publisher.js
    assert (await js.stream_info(DEADLETTER_STREAM)).state.messages == 2

    undecodable = await js.get_msg(DEADLETTER_STREAM, seq=1)
    assert undecodable.subject == deadletter_subject(STREAM, "dl", SUBJECT)
    assert undecodable.subject == f"deadletter.KITTEST.dl.{SUBJECT}"
    assert undecodable.data == garbage
    assert undecodable.headers is not None
    assert undecodable.headers["Kizuna-Error"] == "DecodeError"
    assert undecodable.headers["Kizuna-Stream-Seq"] == "4"

    poisoned = await js.get_msg(DEADLETTER_STREAM, seq=2)
    original = await js.get_msg(STREAM, seq=6)
    assert poisoned.subject == f"deadletter.KITTEST.dl.{SUBJECT}"
    assert poisoned.data == original.data
    assert poisoned.headers is not None
    assert poisoned.headers["Kizuna-Error"] == "PoisonError"
    assert poisoned.headers["Kizuna-Stream-Seq"] == "6"
    assert poisoned.headers["Kizuna-Original-Msg-Id"] == "test:5"
    # The original's stream expectations must not be replayed against DEADLETTER.
    assert EXPECTED_LAST_MSG_ID not in poisoned.headers

    assert metric("kizuna_consumer_applied_total", "dl") == 7
    assert metric("kizuna_consumer_dead_lettered_total", "dl") == 2


async def test_transient_failure_is_retried_in_place(
    tmp_path: Path, publisher: Publisher, link: NatsLink
) -> None:
    ledger = Ledger(tmp_path / "effects.db")
    await publisher.events(range(1, 6))
    failures = {3: 2}  # value 3 fails twice, then succeeds
    seen: list[int] = []

    async def flaky(event: Envelope, seq: int) -> None:
        seen.append(value_of(event))
        if failures.get(value_of(event), 0) > 0:
            failures[value_of(event)] -= 1
            raise ConnectionError("database briefly unavailable")
        await ledger.apply(event, seq)

    consumer = Consumer(
        link=link, stream=STREAM, durable="flaky", apply=flaky, backoff_seconds=0.01
    )
    async with running(consumer):
        await eventually(within=15.0, predicate=lambda: consumer.processed >= 5)

    # Retried in place: nothing after 3 was tried before 3 succeeded.
    assert seen == [1, 2, 3, 3, 3, 4, 5]
    assert ledger.rows() == [1, 2, 3, 4, 5]
    assert (await publisher.js.stream_info(DEADLETTER_STREAM)).state.messages == 0
    assert metric("kizuna_consumer_dead_lettered_total", "flaky") == 0
    assert metric("kizuna_consumer_applied_total", "flaky") == 5


async def test_nats_crash_mid_way_resumes_exactly_once(
    tmp_path: Path, publisher: Publisher, link: NatsLink, nats_server: NatsServer
) -> None:
    before, total = 200, 300
    ledger = Ledger(tmp_path / "effects.db")
    await publisher.events(range(1, before + 1))

    async def slow(event: Envelope, seq: int) -> None:
        await asyncio.sleep(0.005)  # so that the crash lands mid-way
        await ledger.apply(event, seq)

    consumer = Consumer(link=link, stream=STREAM, durable="survivor", apply=slow)
    async with running(consumer):
        await eventually(within=15.0, predicate=lambda: ledger.position() >= 60)
        nats_server.kill()
        await eventually(within=15.0, predicate=lambda: not link.connected)
        assert ledger.position() < before
        await asyncio.to_thread(nats_server.start)
        await eventually(within=15.0, predicate=lambda: publisher.client.is_connected)
        await publisher.events(range(before + 1, total + 1))
        await eventually(within=15.0, predicate=lambda: consumer.processed >= total)

    assert ledger.rows() == list(range(1, total + 1))
    assert ledger.position() == total


class CountingLink(NatsLink):
    def __init__(self, url: str) -> None:
        super().__init__(url, "test-consumer")
        self.attempts = 0

    async def jetstream(self) -> JetStreamContext:
        self.attempts += 1
        return await super().jetstream()


async def test_starts_before_nats_and_before_the_stream(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    ledger = Ledger(tmp_path / "effects.db")
    nats_server.kill()
    link = CountingLink(nats_server.url)
    consumer = Consumer(link=link, stream=STREAM, durable="early", apply=ledger.apply)
    async with running(consumer):
        # nats-py retries the first connect internally (max_reconnect_attempts=-1),
        # so the consumer sits in jetstream() until the server appears.
        await eventually(within=15.0, predicate=lambda: link.attempts >= 1)
        assert not link.connected
        await asyncio.to_thread(nats_server.start)
        client = await nats.connect(nats_server.url)
        try:
            js = client.jetstream()

            # Once connected it sets up DEADLETTER, then waits for its stream to appear.
            async def connected() -> bool:
                return DEADLETTER_STREAM in [s.config.name for s in await js.streams_info()]

            await eventually(connected, within=15.0, every=0.02)
            await ensure_stream(js, STREAM, ["kittest.>"])
            await Publisher(client).events(range(1, 21))
            await eventually(within=15.0, predicate=lambda: consumer.processed >= 20)
        finally:
            await client.close()
    await link.close()

    assert ledger.rows() == list(range(1, 21))


async def test_transient_errors_are_retried_past_max_attempts(
    publisher: Publisher, link: NatsLink
) -> None:
    await publisher.events(range(1, 4))
    calls: list[int] = []

    async def apply(event: Envelope, _seq: int) -> None:
        calls.append(value_of(event))
        if len(calls) <= 6:  # the database is "away" for six attempts at message 1
            raise sqlite3.OperationalError("database is locked")

    consumer = Consumer(
        link=link, stream=STREAM, durable="t", apply=apply, max_attempts=2, backoff_seconds=0.001
    )
    async with running(consumer):
        await eventually(within=15.0, predicate=lambda: consumer.processed >= 3)
    assert calls == [1] * 7 + [2, 3]  # never dead-lettered, order kept


async def test_batches_apply_together_and_a_poison_message_costs_only_itself(
    tmp_path: Path, publisher: Publisher, link: NatsLink
) -> None:
    ledger = Ledger(tmp_path / "effects.db")
    # Everything is waiting before the consumer starts, so fetches come back full.
    await publisher.events(range(1, 4))  # stream seq 1-3
    await publisher.raw(b"\x0a\xff not an envelope", "test:garbage")  # seq 4
    await publisher.events(range(4, 21))  # seq 5-21; value 5 is seq 6
    attempts: list[int] = []

    async def apply(event: Envelope, seq: int) -> None:
        if value_of(event) == 5:
            attempts.append(seq)
            raise PoisonError("cannot apply value 5")
        await ledger.apply(event, seq)

    async def apply_batch(batch: Sequence[tuple[Envelope, int]]) -> None:
        if any(value_of(event) == 5 for event, _ in batch):
            ledger.batches.append([seq for _, seq in batch])
            raise PoisonError("cannot apply value 5")
        await ledger.apply_batch(batch)

    consumer = Consumer(
        link=link,
        stream=STREAM,
        durable="batches",
        apply=apply,
        apply_batch=apply_batch,
        max_attempts=3,
        backoff_seconds=0.01,
        batch=8,
    )
    async with running(consumer):
        await eventually(within=15.0, predicate=lambda: consumer.processed >= 21)

    # Every value once, in order, but 5 (dead-lettered, as is the undecodable message).
    assert ledger.rows() == [1, 2, 3, 4, *range(6, 21)]
    assert attempts == [6, 6, 6]
    js = publisher.js
    assert (await js.stream_info(DEADLETTER_STREAM)).state.messages == 2
    # How fetches split the backlog depends on timing; what holds whatever the split: each
    # batch offered is a run of consecutive messages, the undecodable one (seq 4) is never
    # in one, and with everything waiting, messages did go together.
    assert all(b == list(range(b[0], b[-1] + 1)) for b in ledger.batches)
    assert all(4 not in b for b in ledger.batches)
    assert any(len(b) > 1 for b in ledger.batches)
    assert metric("kizuna_consumer_applied_total", "batches") == 19
    assert metric("kizuna_consumer_dead_lettered_total", "batches") == 2


async def test_a_changed_filter_updates_the_durable_and_reads_from_the_start(
    tmp_path: Path, publisher: Publisher, link: NatsLink
) -> None:
    """A newer version consuming more of the stream under the same durable gets all of it,
    also what the old one passed over before its ack floor."""
    ledger = Ledger(tmp_path / "effects.db")
    narrow = Consumer(
        link=link,
        stream=STREAM,
        durable="refiltered",
        apply=ledger.apply,
        filter_subject="kittest.other.>",
    )
    js = await link.jetstream()
    await publisher.events(range(1, 4))
    now = datetime.now(UTC)
    other = OutgoingEvent("kittest.other.x", "other", 4, now, now, StringValue(value="4"))
    data = envelope("test", STREAM, 4, other).SerializeToString()
    await publisher.raw(data, "test:4", "kittest.other.x")
    async with running(narrow):
        await eventually(within=15.0, predicate=lambda: narrow.processed >= 4)
    assert ledger.calls == [4]
    assert (await js.consumer_info(STREAM, "refiltered")).ack_floor.stream_seq == 4

    await publisher.events(range(5, 7))
    wide = Consumer(
        link=link,
        stream=STREAM,
        durable="refiltered",
        apply=ledger.apply,
        filter_subject="kittest.>",
    )
    async with running(wide):
        await eventually(within=15.0, predicate=lambda: wide.processed >= 6)

    assert ledger.calls == [4, 1, 2, 3, 4, 5, 6]  # from the start, in stream order
    info = await js.consumer_info(STREAM, "refiltered")
    assert info.config.filter_subject == "kittest.>"
    assert info.ack_floor.stream_seq == 6
