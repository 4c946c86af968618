"""The two streams profile-sync consumes, both applied through the one projection."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna_kit.threads import OwnThreads
from kizuna_profilesync.application import ProfileSyncApplication

DURABLE = "profilesync"
STREAMS = {"IDENTITY": "identity.customer.>", "CONSENT": "consent.subject.>"}


def stream_handler(
    app: ProfileSyncApplication, stream: str, lock: asyncio.Lock, thread: OwnThreads
) -> Callable[[Envelope, int], Awaitable[None]]:
    async def apply(envelope: Envelope, _stream_sequence: int) -> None:
        # One projection transaction at a time keeps the inbox order equal to commit order.
        async with lock:
            await thread.run(app.project, stream, envelope)

    return apply


def stream_batch_handler(
    app: ProfileSyncApplication, stream: str, lock: asyncio.Lock, thread: OwnThreads
) -> Callable[[Sequence[tuple[Envelope, int]]], Awaitable[None]]:
    async def apply_batch(batch: Sequence[tuple[Envelope, int]]) -> None:
        envelopes = [envelope for envelope, _ in batch]
        async with lock:
            await thread.run(app.project_batch, stream, envelopes)

    return apply_batch
