"""The outbox relay: the service's notification log -> a JetStream stream.

The log is the outbox: it is read from the position after the last one the stream
holds, so a crash anywhere between commit and publish loses nothing. Each message
carries `Nats-Msg-Id = <service>:<position>` and expects the previous message id
(`Nats-Expected-Last-Msg-Id`), so the stream refuses a duplicate or out-of-order
publish even past the duplicate window or with a second relay running.

An erasure (`OutgoingEvent.purges_subject`) purges its subject's earlier messages once
it is stored, and nothing after it goes out before the purge is done.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog
from eventsourcing.persistence import Notification
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NotFoundError

from kizuna_kit.consumer import DEADLETTER_STREAM, deadletter_subject
from kizuna_kit.metrics import RELAY_LAG, RELAY_PUBLISHED
from kizuna_kit.nats_link import NatsLink, ensure_stream
from kizuna_kit.threads import OwnThreads
from kizuna_kit.wire import MSG_ID, OutgoingEvent, envelope, event_id, position_of

log = structlog.get_logger("kizuna.relay")

EXPECTED_LAST_MSG_ID = "Nats-Expected-Last-Msg-Id"
EXPECTED_LAST_SEQUENCE = "Nats-Expected-Last-Sequence"


class NotificationLog(Protocol):
    """The part of an eventsourcing ApplicationRecorder the relay reads."""

    def select_notifications(
        self, start: int | None, limit: int, stop: int | None = None, topics: Sequence[str] = ()
    ) -> Sequence[Notification]: ...

    def max_notification_id(self) -> int | None: ...


Translate = Callable[[Notification], OutgoingEvent | None]


async def last_published(js: JetStreamContext, stream: str, service: str) -> tuple[int, str | None]:
    """(position, message id) of the stream's last message; (0, None) when empty."""
    info = await js.stream_info(stream)
    if info.state.last_seq == 0:
        return 0, None
    msg = await js.get_msg(stream, seq=info.state.last_seq)
    msg_id = (msg.headers or {}).get(MSG_ID, "")
    return position_of(msg_id, service), msg_id


async def wait_briefly(event: asyncio.Event, seconds: float) -> None:
    """Waits for `event` at most `seconds`; a cancellation always gets through."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


class Relay:
    def __init__(
        self,
        *,
        service: str,
        stream: str,
        subjects: Sequence[str],
        log_reader: NotificationLog,
        translate: Translate,
        link: NatsLink,
        batch_size: int = 500,
        poll_interval: float = 0.25,
        ack_timeout: float = 5.0,
    ) -> None:
        self.service = service
        self.stream = stream
        self._subjects = subjects
        self._log = log_reader
        self._translate = translate
        self._link = link
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._ack_timeout = ack_timeout
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = OwnThreads(f"relay-{stream.lower()}")

    def wake(self) -> None:
        """A hint that something was committed; safe to call from any thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    async def run(self) -> None:
        """Publishes forever; NATS outages only delay it."""
        self._loop = asyncio.get_running_loop()
        backoff = 0.2
        while True:
            try:
                js = await self._link.jetstream()
                await ensure_stream(js, self.stream, self._subjects, self._link.replicas)
                await self._publish_forever(js)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # NATS down, or the stream refused an expectation (another relay
                # published first): start again from what the stream holds.
                log.warning(
                    "relay.retrying",
                    stream=self.stream,
                    error=type(exc).__name__,
                    detail=str(exc)[:200],
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.2

    async def _publish_forever(self, js: JetStreamContext) -> None:
        cursor, last_id = await last_published(js, self.stream, self.service)
        log.info("relay.resuming", stream=self.stream, position=cursor)
        if cursor:
            await self._purge_if_erasure(js, cursor)
        while True:
            self._wakeup.clear()
            batch = await self._thread.run(
                self._log.select_notifications, cursor + 1, self._batch_size
            )
            if batch:
                last_id = await self._publish_batch(js, batch, last_id)
                cursor = batch[-1].id
            if len(batch) < self._batch_size:
                RELAY_LAG.labels(self.stream).set(0)
                await wait_briefly(self._wakeup, self._poll_interval)
            else:
                newest = await self._thread.run(self._log.max_notification_id) or cursor
                RELAY_LAG.labels(self.stream).set(newest - cursor)

    async def _publish_batch(
        self, js: JetStreamContext, batch: Sequence[Notification], last_id: str | None
    ) -> str | None:
        pending: list[asyncio.Future[PubAck]] = []
        try:
            for notification in batch:
                event = self._translate(notification)
                if event is None:
                    continue
                msg_id = event_id(self.service, notification.id)
                headers = {MSG_ID: msg_id}
                if last_id is None:
                    headers[EXPECTED_LAST_SEQUENCE] = "0"
                else:
                    headers[EXPECTED_LAST_MSG_ID] = last_id
                data = envelope(
                    self.service, self.stream, notification.id, event
                ).SerializeToString()
                pending.append(await js.publish_async(event.subject, data, headers=headers))
                last_id = msg_id
                if event.purges_subject:
                    # Nothing more goes out before the purge: a relay stopped before it
                    # finds the erasure last in the stream, and purges then.
                    await self._acknowledged(pending)
                    await self._purge(js, event.subject)
            await self._acknowledged(pending)
        finally:
            for future in pending:
                if not future.done():
                    future.cancel()
        RELAY_PUBLISHED.labels(self.stream).inc(len(pending))
        return last_id

    async def _purge(self, js: JetStreamContext, subject: str) -> None:
        """The subject keeps only its newest message, the stored erasure. The stream's
        last message, which tells a relay where it stands, is never purged. Consumers'
        dead letters of the subject go too."""
        await js.purge_stream(self.stream, subject=subject, keep=1)
        with contextlib.suppress(NotFoundError):  # no consumer ever dead-lettered
            await js.purge_stream(
                DEADLETTER_STREAM, subject=deadletter_subject(self.stream, "*", subject)
            )

    async def _purge_if_erasure(self, js: JetStreamContext, position: int) -> None:
        """Purges again for the stream's last message if it is an erasure: a relay
        stopped between storing it and purging left the purge undone."""
        last = await self._thread.run(self._log.select_notifications, position, 1)
        event = self._translate(last[0]) if last and last[0].id == position else None
        if event is not None and event.purges_subject:
            await self._purge(js, event.subject)

    async def _acknowledged(self, pending: Sequence[asyncio.Future[PubAck]]) -> None:
        for future in pending:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that races with the future's completion, and a relay
            # that cannot be stopped keeps publishing after a "crash".
            async with asyncio.timeout(self._ack_timeout):
                await asyncio.shield(future)
