"""A durable JetStream consumer with exactly-once effect.

Delivery is at least once; the service's `apply` records the stream sequence in the
same transaction as its effect and skips sequences it already holds, so a redelivery
has no second effect. Messages are applied strictly in stream order, one at a time:
a failing message is retried in place (never skipped ahead of) and only dead-lettered
after the last attempt. One running Consumer per durable is assumed.

Batch mode (`apply_batch`): the messages one fetch returns (it returns as soon as there is
something, with whatever else is waiting, up to `batch`) are applied together in one call, which
must record all their positions in one transaction with their effects, then acked. If that
call fails, nothing of the batch took effect and its messages go through `apply` one at a
time, with the usual retries and dead letters, so a poison message costs only itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Sequence

import psycopg
import psycopg_pool
import structlog
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna_kit.metrics import CONSUMER_APPLIED, CONSUMER_DEAD_LETTERED
from kizuna_kit.nats_link import NatsLink, ensure_stream
from kizuna_kit.wire import MSG_ID

log = structlog.get_logger("kizuna.consumer")

Apply = Callable[[Envelope, int], Awaitable[None]]
# (envelope, stream sequence) in stream order; all or nothing.
ApplyBatch = Callable[[Sequence[tuple[Envelope, int]]], Awaitable[None]]

DEADLETTER_STREAM = "DEADLETTER"
DEADLETTER_SUBJECTS = ("deadletter.>",)
ERROR_HEADER = "Kizuna-Error"
STREAM_SEQ_HEADER = "Kizuna-Stream-Seq"
ORIGINAL_MSG_ID_HEADER = "Kizuna-Original-Msg-Id"
ACK_WAIT_SECONDS = 30.0
FETCH_TIMEOUT_SECONDS = 2.0
RETRY_DELAY_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 5.0


# Infrastructure failures: the database or the network is away for a while. Such a
# message is retried until it applies, never dead-lettered: skipping it (an erasure, a
# merge) would lose its effect for good, while waiting only delays what follows.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sqlite3.OperationalError,
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    OSError,
    TimeoutError,
)


def deadletter_subject(stream: str, durable: str, subject: str = "") -> str:
    """Where a durable's dead letter of a message on `subject` goes. The original subject
    comes last, so that an erasure can purge the dead letters of its subject too."""
    return f"deadletter.{stream}.{durable}" + (f".{subject}" if subject else "")


class Consumer:
    def __init__(
        self,
        *,
        link: NatsLink,
        stream: str,
        durable: str,
        apply: Apply,
        max_attempts: int = 5,
        backoff_seconds: float = 0.2,
        batch: int = 100,
        filter_subject: str | None = None,
        transient: tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
        apply_batch: ApplyBatch | None = None,
    ) -> None:
        self.stream = stream
        self.durable = durable
        self._link = link
        self._apply = apply
        self._apply_batch = apply_batch
        self._max_attempts = max(1, max_attempts)
        self._backoff = backoff_seconds
        self._batch = batch
        self._filter = filter_subject
        self._processed = 0
        self._retry_delay = RETRY_DELAY_SECONDS
        self._transient = transient

    @property
    def processed(self) -> int:
        """Stream sequence of the last message applied or dead-lettered by this instance."""
        return self._processed

    async def run(self) -> None:
        """Consumes forever; NATS outages and a missing stream only delay it."""
        while True:
            try:
                await self._consume(await self._link.jetstream())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "consumer.retrying",
                    stream=self.stream,
                    durable=self.durable,
                    error=type(exc).__name__,
                    detail=str(exc)[:200],
                )
                await asyncio.sleep(self._retry_delay)
                self._retry_delay = min(self._retry_delay * 2, MAX_BACKOFF_SECONDS)

    async def _consume(self, js: JetStreamContext) -> None:
        await ensure_stream(js, DEADLETTER_STREAM, DEADLETTER_SUBJECTS, self._link.replicas)
        start: int | None = None
        try:
            info = await js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            await js.add_consumer(self.stream, self._config())
        else:
            if (info.config.filter_subject or None) != self._filter:
                # A newer version consumes more (or less) of the stream: the durable is
                # updated in place and read again from the start, so the events the old
                # filter passed over come too (apply is idempotent: the rest have no
                # second effect).
                log.warning(
                    "consumer.filter_changed",
                    stream=self.stream,
                    durable=self.durable,
                    was=info.config.filter_subject,
                    now=self._filter,
                )
                await js.add_consumer(self.stream, self._config())
                start = 1
        # Messages delivered to an earlier run (a crash, or our own loop restarting
        # mid-batch) stay pending until ack_wait, while the server would hand us
        # later ones first. Rewinding to the ack floor keeps stream order.
        reset = await js.reset_consumer(self.stream, self.durable, seq=start)
        sub = await js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
        self._retry_delay = RETRY_DELAY_SECONDS
        log.info("consumer.resuming", stream=self.stream, durable=self.durable, seq=reset.reset_seq)
        try:
            while True:
                try:
                    # Returns as soon as something is there, with whatever else is waiting.
                    msgs = await sub.fetch(self._batch, timeout=FETCH_TIMEOUT_SECONDS)
                except TimeoutError:
                    # Nothing new (or NATS is reconnecting). nats.errors.TimeoutError is one;
                    # a fetch whose deadline passes between its two requests raises the
                    # builtin one, which must not restart the consumer either.
                    continue
                if self._apply_batch is None:
                    for msg in msgs:
                        await self._handle(js, msg)
                else:
                    await self._handle_batch(js, msgs)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _config(self) -> ConsumerConfig:
        return ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ACK_WAIT_SECONDS,
            max_deliver=-1,  # retries happen in place, in process
            filter_subject=self._filter,
        )

    async def _handle(self, js: JetStreamContext, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        if seq <= self._processed:
            # A redelivery (after a reset or an expired ack_wait) of what we handled.
            await msg.ack()
            return
        try:
            event = Envelope.FromString(msg.data)
        except DecodeError as exc:
            error: Exception | None = exc
        else:
            error = await self._apply_with_retries(msg, event, seq)
        if error is None:
            CONSUMER_APPLIED.labels(self.stream, self.durable).inc()
        else:
            await self._dead_letter(js, msg, seq, error)
        await msg.ack()
        self._processed = seq

    async def _handle_batch(self, js: JetStreamContext, msgs: list[Msg]) -> None:
        """Runs of decodable messages go to `apply_batch` together; an undecodable one
        ends a run and is dead-lettered on its own, in its place."""
        run: list[tuple[Msg, Envelope, int]] = []
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            if seq <= self._processed:
                await msg.ack()  # a redelivery of what we handled
                continue
            try:
                event = Envelope.FromString(msg.data)
            except DecodeError:
                await self._apply_run(js, run)
                run = []
                await self._handle(js, msg)
                continue
            run.append((msg, event, seq))
        await self._apply_run(js, run)

    async def _apply_run(self, js: JetStreamContext, run: list[tuple[Msg, Envelope, int]]) -> None:
        if len(run) <= 1 or self._apply_batch is None:
            for msg, _, _ in run:
                await self._handle(js, msg)
            return
        try:
            await self._apply_batch([(event, seq) for _, event, seq in run])
        except Exception as exc:
            log.warning(
                "consumer.batch_failed",
                stream=self.stream,
                durable=self.durable,
                first_seq=run[0][2],
                size=len(run),
                error=type(exc).__name__,
            )
            # Nothing of the batch took effect: one at a time now, so only a poison
            # message is retried and dead-lettered, and the rest apply in order.
            for msg, _, _ in run:
                await self._handle(js, msg)
            return
        for msg, _, _ in run:
            await msg.ack()
        CONSUMER_APPLIED.labels(self.stream, self.durable).inc(len(run))
        self._processed = run[-1][2]

    async def _apply_with_retries(self, msg: Msg, event: Envelope, seq: int) -> Exception | None:
        """None once applied; the last error after max_attempts failures (transient
        errors are retried until they pass)."""
        attempt = 1
        while True:
            try:
                await self._apply(event, seq)
            except Exception as exc:
                log.warning(
                    "consumer.apply_failed",
                    stream=self.stream,
                    durable=self.durable,
                    seq=seq,
                    attempt=attempt,
                    error=type(exc).__name__,
                )
                if attempt >= self._max_attempts and not isinstance(exc, self._transient):
                    return exc
            else:
                return None
            await msg.in_progress()  # keep the message ours while we back off
            await asyncio.sleep(min(self._backoff * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS))
            attempt += 1

    async def _dead_letter(
        self, js: JetStreamContext, msg: Msg, seq: int, error: Exception
    ) -> None:
        # Nats-* headers steered the original stream (dedup id, expected last id);
        # in DEADLETTER they would be rejected or wrongly deduplicated against
        # another durable's dead letter of the same event.
        headers = {k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")}
        if MSG_ID in (msg.headers or {}):
            headers[ORIGINAL_MSG_ID_HEADER] = (msg.headers or {})[MSG_ID]
        headers[ERROR_HEADER] = type(error).__name__
        headers[STREAM_SEQ_HEADER] = str(seq)
        headers[MSG_ID] = f"{self.stream}:{self.durable}:{seq}"
        await js.publish(
            deadletter_subject(self.stream, self.durable, msg.subject), msg.data, headers=headers
        )
        CONSUMER_DEAD_LETTERED.labels(self.stream, self.durable).inc()
        log.error(
            "consumer.dead_lettered",
            stream=self.stream,
            durable=self.durable,
            seq=seq,
            error=type(error).__name__,
        )
