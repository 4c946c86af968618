"""Delivery workers: send each connector's outbox, oldest first per customer.

Deliveries of different customers go out concurrently; a customer's next delivery waits
until the previous one is delivered or dead-lettered, so per-customer order holds even
through retries. FILE_EXPORT connectors hold their rows in the store already (the
projection wrote them), so their deliveries complete at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random as random_module
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from eventsourcing.persistence import IntegrityError

from kizuna_kit.relay import wait_briefly
from kizuna_kit.threads import OwnThreads
from kizuna_profilesync.connectors import ConnectorsApplication
from kizuna_profilesync.domain.connector import Connector, ConnectorKind, ConnectorNotFound
from kizuna_profilesync.domain.retry import Attempt, RetryPolicy, Verdict, next_step
from kizuna_profilesync.domain.webhooks import headers
from kizuna_profilesync.http1 import Http1Client, HttpError
from kizuna_profilesync.storage.interface import StoredDelivery, SyncStore

log = structlog.get_logger("kizuna.delivery")

BATCH = 64


def utcnow() -> datetime:
    return datetime.now(UTC)


class Deliverer:
    def __init__(
        self,
        store: SyncStore,
        connectors: ConnectorsApplication,
        policy: RetryPolicy,
        *,
        timeout: float = 5.0,
        clock: Callable[[], datetime] = utcnow,
        random: Callable[[], float] = random_module.random,
        idle_wait: float = 0.2,
    ) -> None:
        self._store = store
        self._connectors = connectors
        self._policy = policy
        self._timeout = timeout
        self._clock = clock
        self._random = random
        self._idle_wait = idle_wait
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads = OwnThreads("delivery", 4)

    def wake(self) -> None:
        """New deliveries may be due; safe to call from any thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        async with Http1Client(timeout=self._timeout) as http:
            while True:
                self._wakeup.clear()
                try:
                    busy = await self.deliver_once(http)
                except Exception:  # a database hiccup must not stop deliveries for good
                    log.exception("delivery.round_failed")
                    busy = False
                if not busy:
                    await wait_briefly(self._wakeup, self._idle_wait)

    async def deliver_once(self, http: Http1Client) -> bool:
        """One round over every live connector; True when something was attempted."""
        connectors = await self._threads.run(self._connectors.live)
        rounds = [
            self._deliver_connector(http, connector)
            for connector in connectors.values()
            if not connector.paused
        ]
        return any(await asyncio.gather(*rounds))

    async def _deliver_connector(self, http: Http1Client, connector: Connector) -> bool:
        """One connector's round. Its failure stays its own: were it to end the whole
        round, the other connectors' sends would run on unawaited while the next round
        took up the same deliveries again."""
        try:
            return await self._deliver_round(http, connector)
        except Exception:
            log.exception("delivery.connector_round_failed", connector=connector.connector_id)
            return False

    async def _deliver_round(self, http: Http1Client, connector: Connector) -> bool:
        now = self._clock()
        due = await self._threads.run(self._store.due, connector.connector_id, now, BATCH)
        if not due:
            return False
        if connector.kind == ConnectorKind.FILE_EXPORT:
            delivered = [d.delivery_id for d in due]
        else:
            secret = self._connectors.secret(connector)
            sent = await asyncio.gather(*(self._send(http, connector, secret, d) for d in due))
            delivered = [d.delivery_id for d, ok in zip(due, sent, strict=True) if ok]
            now = self._clock()
        # One transaction for the round's successes.
        await self._threads.run(
            self._store.mark_delivered_many, connector.connector_id, delivered, now
        )
        return True

    async def _send(
        self, http: Http1Client, connector: Connector, secret: str, delivery: StoredDelivery
    ) -> bool:
        """Sends one delivery; True when it went through (the caller marks it delivered),
        otherwise its failure is recorded here."""
        sent_at = self._clock()
        signed = headers(secret, delivery.delivery_id, int(sent_at.timestamp()), delivery.body)
        try:
            response = await http.post(connector.settings.webhook_url, delivery.body, signed)
            attempt = Attempt(response.status, response.headers.get("retry-after"))
        except TimeoutError:
            attempt = Attempt(None, error="timeout")
        except (HttpError, OSError) as exc:
            attempt = Attempt(None, error=type(exc).__name__)
        except Exception as exc:
            # Whatever else the send raised, it is this delivery's failed attempt: it is
            # tried again, then dead-lettered, instead of holding the queue up for good.
            log.warning(
                "delivery.send_raised",
                connector=connector.connector_id,
                delivery=delivery.delivery_id,
                error=type(exc).__name__,
            )
            attempt = Attempt(None, error=type(exc).__name__)
        now = self._clock()
        step = next_step(self._policy, delivery.attempts + 1, attempt, now, self._random)
        store, connector_id = self._store, connector.connector_id
        if step.verdict == Verdict.DELIVERED:
            return True
        if step.verdict == Verdict.RETRY:
            await self._threads.run(
                store.mark_failed, connector_id, delivery.delivery_id, step.reason, step.due(now)
            )
        elif step.verdict == Verdict.DEAD_LETTER:
            await self._threads.run(
                store.mark_dead, connector_id, delivery.delivery_id, step.reason, now
            )
            log.warning(
                "delivery.dead_lettered", connector=connector_id, delivery=delivery.delivery_id
            )
        else:
            # 410 Gone: the receiver retired the endpoint; keep the delivery, stop the connector.
            with contextlib.suppress(ConnectorNotFound, IntegrityError):
                await self._threads.run(
                    self._connectors.pause, connector_id, f"receiver answered {step.reason}"
                )
            log.warning("delivery.connector_paused", connector=connector_id, reason=step.reason)
        return False
