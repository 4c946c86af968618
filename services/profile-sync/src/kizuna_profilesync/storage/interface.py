"""What the profile-sync application needs from its storage.

One database holds:
- `inbox`: every consumed IDENTITY and CONSENT envelope, once (unique stream+position),
  numbered by a local `seq`: the projection's own total order. Connector positions,
  replays and rebuilds are in `seq`.
- `profiles`: the unified profile per customer id (domain `Profile`, serialized).
- `deliveries`: each connector's outbox, written in the projection's transaction.
- `holdings`: per connector, the customers it currently holds and the data last sent
  (gating's `was_sent`; for FILE_EXPORT connectors, the rows of the next export).
- `rewinds`: each time a stream was rewound after a restore behind it (`rewind`).
- the connector aggregates' event store (eventsourcing, same database).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna_profilesync.domain.connector import ConnectorError
from kizuna_profilesync.domain.profile import Profile
from kizuna_profilesync.domain.statements import Catalogue


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
    # A dead letter left behind by a later delivery that went through (see retry_dead).
    SUPERSEDED = "superseded"


@dataclass(frozen=True)
class Target:
    """A live connector as the projection sees it (from the connector aggregate)."""

    connector_id: str
    event_types: tuple[str, ...]
    required_statements: tuple[str, ...]
    fields: tuple[str, ...]


@dataclass(frozen=True)
class OutgoingDelivery:
    connector_id: str
    delivery_id: str  # the webhook-id: stable across retries and replays
    seq: int
    customer_id: str
    type: str  # "customer.upserted" | "customer.deleted"
    body: bytes  # the webhook JSON body (domain webhooks.build_body)
    # What the connector holds afterwards: the sent data (JSON) or None after a deletion.
    holding: bytes | None


@dataclass(frozen=True)
class StoredDelivery:
    connector_id: str
    delivery_id: str
    seq: int
    customer_id: str
    type: str
    body: bytes
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str
    updated_at: datetime


@dataclass(frozen=True)
class ConnectorCounts:
    delivered: int
    pending: int
    failed: int  # pending with attempts > 0
    dead: int
    oldest_pending_seq: int | None
    last_error: str


class Projector(Protocol):
    """Pure: an envelope, the profiles it touches (loaded through `load`), the live
    targets and the statement catalogue in; the changed profiles, the deliveries and the
    catalogue after the event out. The application supplies it (domain projection +
    gating); the store runs it inside its transaction. A statement's new MAJOR changes no
    profile but what the grants are worth: the projector then reads the customers each
    requiring connector holds through `held`."""

    def __call__(
        self,
        envelope: Envelope,
        seq: int,
        load: ProfileLoader,
        targets: Sequence[Target],
        holds: HoldingLookup,
        catalogue: Catalogue,
        held: HeldProfiles,
    ) -> tuple[dict[str, Profile | None], list[OutgoingDelivery], Catalogue]: ...


class HeldProfiles(Protocol):
    """(customer_id, profile) of every customer the connector holds, as they stand at this
    point of the transaction, streamed."""

    def __call__(self, connector_id: str) -> Iterator[tuple[str, Profile | None]]: ...


class ProfileLoader(Protocol):
    def __call__(self, customer_id: str) -> Profile | None: ...


class RewindNotSettled(ConnectorError):
    """A replay from before a rewind whose deliveries are not all sent: the receiver's
    state does not follow from the inbox until they are."""

    def __init__(self, connector_id: str, seq: int) -> None:
        super().__init__(
            f"deliveries up to position {seq} (a rewind after a restore) are not all sent"
            f" yet: replay from after {seq}, or once they are sent",
            connector_id=connector_id,
        )


class StreamDiverged(ValueError):
    """An event arrived at a stream position the inbox holds another event at."""

    def __init__(self, stream: str, position: int) -> None:
        super().__init__(
            f"{stream} position {position} holds another event than the one applied there"
            " (was the stream rebuilt from a restored database? Then rewind it:"
            " python -m kizuna_profilesync rewind)"
        )
        self.stream = stream
        self.position = position


class HoldingLookup(Protocol):
    def __call__(self, connector_id: str, customer_id: str) -> bool: ...


# Folds one inbox event into the profiles and the statement catalogue (statement id ->
# latest MAJOR), as a rebuild runs it.
EventFolder = Callable[[dict[str, Profile], dict[str, int], Envelope], None]
# A replay's deliveries for one connector and what it holds afterwards, from the inbox
# ((seq, envelope) in seq order).
ReplayDeriver = Callable[
    [Iterator[tuple[int, Envelope]]],
    tuple[Sequence["OutgoingDelivery"], Mapping[str, bytes | None]],
]


class Corrector(Protocol):
    """Pure: the deliveries that tell connectors about customers a rewind changed
    (customer -> (profile before, profile after)), `seq` their position, `rewind` the
    stream's rewind number (for their webhook ids), `catalogues` the statement catalogue
    before and after the rewind."""

    def __call__(
        self,
        changes: Mapping[str, tuple[Profile | None, Profile | None]],
        seq: int,
        rewind: int,
        holds: HoldingLookup,
        catalogues: tuple[Catalogue, Catalogue],
    ) -> list[OutgoingDelivery]: ...


@dataclass(frozen=True)
class Rewound:
    forgotten: int  # inbox events past the position
    changed: int  # profiles the refold changed
    queued: int  # deliveries queued to tell connectors


class SyncStore(Protocol):
    # Projection ------------------------------------------------------------------
    def apply(
        self, stream: str, envelope: Envelope, targets: Sequence[Target], projector: Projector
    ) -> int | None:
        """In ONE transaction: insert the envelope into the inbox (None and no effect when
        (stream, envelope.position) is already there: exactly-once effect), run the
        projector, write the changed profiles (a None profile is deleted), insert the
        deliveries as PENDING (due now), update holdings. Returns the inbox seq.

        A position already there with another event raises StreamDiverged: the stream
        was rewritten (a restored service numbering again), and skipping the event as a
        duplicate would lose it without a trace."""

    def apply_batch(
        self,
        stream: str,
        envelopes: Sequence[Envelope],
        targets: Sequence[Target],
        projector: Projector,
    ) -> list[int | None]:
        """`apply` for several envelopes of one stream, in order, in ONE transaction (all or
        nothing): each event sees the state the previous ones left. One seq (or None) per
        envelope."""

    def rewind(
        self,
        stream: str,
        after: int,
        targets: Sequence[Target],
        fold_event: EventFolder,
        corrector: Corrector,
    ) -> Rewound:
        """After a service was restored from a backup, its stream numbers positions past
        `after` again, with other events. In ONE transaction: forget the inbox's events of
        `stream` past `after`, supersede their deliveries not yet sent, refold every
        profile and the statement catalogue from the inbox that stays, write the profiles
        that changed (and the catalogue), and queue the corrector's deliveries for them
        (holdings follow); a changed catalogue counts every profile with a consent to a
        statement it changed as changed. Returns zeros and changes
        nothing when the inbox holds nothing past `after`.

        Events of `stream` applied later, at positions past `after`, get a webhook id of
        their own (`<event id>~<rewinds>`): their event ids repeat the forgotten ones', and
        a receiver that deduplicates by webhook id would drop them."""

    def get_profile(self, customer_id: str) -> Profile | None: ...

    def replace_profiles(
        self, profiles: Iterable[tuple[str, Profile]], catalogue: Catalogue
    ) -> int:
        """Rebuild: in one transaction, every profile replaced by these (batched writes),
        and the statement catalogue by this one."""

    def catalogue(self) -> Catalogue:
        """Statement id -> the latest MAJOR published, as far as the inbox goes."""

    def positions(self) -> dict[str, int]:
        """stream -> highest position in the inbox (read-your-writes waits on this)."""

    def last_seq(self) -> int: ...

    def inbox(self, from_seq: int = 1) -> Iterator[tuple[int, str, Envelope]]:
        """(seq, stream, envelope) in seq order, streamed (replays and rebuilds)."""

    # Deliveries ----------------------------------------------------------------------
    def due(self, connector_id: str, now: datetime, limit: int) -> list[StoredDelivery]:
        """Pending deliveries that are due AND are the oldest pending one of their
        customer for this connector (per-customer order: a failing delivery for X holds
        back X's later ones, never Y's), in seq order."""

    def mark_delivered(self, connector_id: str, delivery_id: str, now: datetime) -> None: ...

    def mark_delivered_many(
        self, connector_id: str, delivery_ids: Sequence[str], now: datetime
    ) -> None:
        """`mark_delivered` for each, in one transaction."""

    def mark_failed(
        self, connector_id: str, delivery_id: str, error: str, next_attempt_at: datetime
    ) -> None:
        """attempts += 1, last_error, stays PENDING until next_attempt_at."""

    def mark_dead(self, connector_id: str, delivery_id: str, error: str, now: datetime) -> None: ...

    def counts(self, connector_id: str) -> ConnectorCounts: ...

    def dead_letters(
        self, connector_id: str, limit: int, after: tuple[int, str] = (0, "")
    ) -> list[StoredDelivery]:
        """Dead letters in (seq, delivery_id) order, after the (seq, delivery_id) given."""

    def retry_dead(self, connector_id: str, now: datetime) -> int:
        """DEAD -> PENDING, attempts reset, due now; returns how many. A dead letter
        older than a delivered one of the same customer becomes SUPERSEDED instead:
        requeued, it would reach the receiver after the newer state."""

    def replay(self, connector_id: str, from_seq: int, derive: ReplayDeriver) -> int:
        """One transaction under the apply lock (no event is applied meanwhile, whatever
        replica applies it): refuses with RewindNotSettled a replay from at or before an
        unsettled rewind (see `unsettled_rewind`); hands `derive` the whole inbox in seq
        order; deletes this connector's deliveries with seq >= from_seq, inserts the
        derived deliveries as PENDING and sets its holdings to exactly the derived ones
        (customer -> data; None or absent = not held). Returns how many were queued."""

    def unsettled_rewind(self, connector_id: str) -> int | None:
        """The last seq of the latest rewind with deliveries of this connector still to
        send at or before it (pending or dead); None when every rewind is settled. Until
        then the receiver holds what those deliveries left, not what the inbox says, and
        a replay from before that seq would re-derive from the wrong starting point."""

    def profiles(self) -> Iterator[Profile]:
        """Every stored profile, ordered by customer_id, streamed (exports)."""

    def holdings(self, connector_id: str) -> Iterator[tuple[str, bytes]]:
        """(customer_id, data) the connector holds, ordered by customer_id."""

    def drop_connector(self, connector_id: str) -> None:
        """Deletes its deliveries and holdings (the connector was deleted)."""

    def close(self) -> None: ...
