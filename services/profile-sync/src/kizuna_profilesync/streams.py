"""The two streams profile-sync consumes, both applied through the one projection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna_kit.threads import OwnThreads
from kizuna_profilesync.application import ProfileSyncApplication

DURABLE = "profilesync"
# Consent records, and statement publications (a new MAJOR outdates earlier grants).
STREAMS = {"IDENTITY": "identity.customer.>", "CONSENT": "consent.>"}

# Both streams' consumers share one projection thread: one projection transaction at a
# time, in the order they were handed over, keeps the inbox order equal to commit order.


def stream_handler(
    app: ProfileSyncApplication, stream: str, thread: OwnThreads
) -> Callable[[Envelope, int], Awaitable[None]]:
    async def apply(envelope: Envelope, _stream_sequence: int) -> None:
        await thread.run(app.project, stream, envelope)

    return apply


def stream_batch_handler(
    app: ProfileSyncApplication, stream: str, thread: OwnThreads
) -> Callable[[Sequence[tuple[Envelope, int]]], Awaitable[None]]:
    async def apply_batch(batch: Sequence[tuple[Envelope, int]]) -> None:
        envelopes = [envelope for envelope, _ in batch]
        await thread.run(app.project_batch, stream, envelopes)

    return apply_batch
