"""IDENTITY events the ledger reacts to: merges (the survivor answers for both ids)
and erasures (the subject's evidence key is destroyed). Ledger rows never change."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna.identity.v1 import events_pb2 as identity_events
from kizuna_consent.storage.interface import LedgerStore
from kizuna_kit.threads import OwnThreads

DURABLE = "consent"
FILTER = "identity.customer.>"


def identity_handler(store: LedgerStore) -> Callable[[Envelope, int], Awaitable[None]]:
    thread = OwnThreads("identity-events")

    async def apply(event: Envelope, _stream_sequence: int) -> None:
        merged = identity_events.CustomerMerged()
        erased = identity_events.CustomerErased()
        if event.payload.Unpack(merged):
            await thread.run(
                store.apply_merge, merged.customer_id, merged.survivor_id, event.position
            )
        elif event.payload.Unpack(erased):
            await thread.run(store.apply_erasure, erased.customer_id, event.position)

    return apply
