"""One active worker per name across replicas: a lease in a NATS key-value bucket.

The holder writes the key and renews it every third of the TTL with an optimistic
update (expected revision). A replica that dies stops renewing; the bucket's max age
drops the key and a standby takes over. A holder whose renewal fails stops its work
at once. Used for the durable consumers, which must apply one message at a time in
stream order; the relay needs no lease (the stream refuses a second relay's
duplicates), but holding one avoids wasted work.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from kizuna_kit.cancellation import cancel_and_wait
from kizuna_kit.nats_link import NatsLink

log = structlog.get_logger("kizuna.lease")

BUCKET = "kizuna_leases"


class Lease:
    def __init__(self, link: NatsLink, name: str, ttl: float = 6.0) -> None:
        self._link = link
        self.name = name
        self._ttl = ttl
        self.holder = uuid.uuid4().hex
        self.held = False

    async def run(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Runs `work` while this replica holds the lease; waits as a standby otherwise."""
        while True:
            try:
                kv = await self._bucket()
                revision = await kv.create(self.name, self.holder.encode())
            except KeyWrongLastSequenceError:
                await asyncio.sleep(self._ttl / 3)  # someone else holds it
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away: try again shortly
                log.warning("lease.unavailable", lease=self.name, error=type(exc).__name__)
                await asyncio.sleep(self._ttl / 3)
                continue
            log.info("lease.acquired", lease=self.name)
            await self._hold(kv, revision, work)

    async def _hold(
        self, kv: KeyValue, revision: int, work: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        self.held = True
        task = asyncio.create_task(work())
        try:
            while not task.done():
                done, _ = await asyncio.wait([task], timeout=self._ttl / 3)
                if done:
                    break
                revision = await kv.update(self.name, self.holder.encode(), last=revision)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("lease.lost", lease=self.name, error=type(exc).__name__)
        finally:
            self.held = False
            await cancel_and_wait([task])
            if not task.cancelled() and task.exception() is not None:
                log.error("lease.work_failed", lease=self.name, exc_info=task.exception())
            with contextlib.suppress(Exception):
                await kv.delete(self.name, last=revision)  # hand over at once on a clean stop

    async def _bucket(self) -> KeyValue:
        js = await self._link.jetstream()
        try:
            return await js.key_value(BUCKET)
        except BucketNotFoundError:
            return await js.create_key_value(
                bucket=BUCKET, ttl=self._ttl, history=1, replicas=self._link.replicas
            )


def leased(
    link: NatsLink, name: str, work: Callable[[], Coroutine[Any, Any, None]]
) -> Callable[[], Coroutine[Any, Any, None]]:
    """`work` as a background job that runs only on the replica holding lease `name`."""
    lease = Lease(link, name)

    async def run() -> None:
        await lease.run(work)

    return run
