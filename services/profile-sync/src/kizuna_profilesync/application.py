"""The profile-sync application: projection, connectors, replays and exports."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna_profilesync.connectors import ConnectorsApplication, target_of
from kizuna_profilesync.domain.connector import ConnectorError, ConnectorKind
from kizuna_profilesync.domain.export_format import (
    ExportFormat,
    file_name,
    file_pattern,
    lines,
)
from kizuna_profilesync.domain.gating import EventType, visible
from kizuna_profilesync.domain.profile import Profile, ProfileStatus
from kizuna_profilesync.domain.projection import Change, fold, project, published_statement
from kizuna_profilesync.domain.statements import (
    EMPTY,
    Catalogue,
    resolve,
    resolved,
    with_version,
)
from kizuna_profilesync.projector import gate, projector
from kizuna_profilesync.storage.interface import (
    ConnectorCounts,
    HoldingLookup,
    OutgoingDelivery,
    Rewound,
    StoredDelivery,
    SyncStore,
    Target,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _fold_event(
    profiles: dict[str, Profile], catalogue: dict[str, int], envelope: Envelope
) -> None:
    statement = published_statement(envelope)
    if statement is not None:
        catalogue.update(with_version(catalogue, *statement))
    fold(profiles, project(envelope))


def _replayed(
    target: Target, from_seq: int, inbox: Iterator[tuple[int, Envelope]]
) -> tuple[list[OutgoingDelivery], dict[str, bytes | None]]:
    """A connector's deliveries from `from_seq` on, and what it holds after them, the
    whole inbox folded again under its current settings."""
    profiles: dict[str, Profile] = {}
    held: dict[str, bytes | None] = {}
    queued: list[OutgoingDelivery] = []
    catalogue: Catalogue = EMPTY

    def held_profiles(connector_id: str) -> Iterator[tuple[str, Profile | None]]:
        assert connector_id == target.connector_id  # the one connector replayed
        return ((c, profiles.get(c)) for c, data in list(held.items()) if data is not None)

    for seq, envelope in inbox:
        changed, deliveries, catalogue = projector(
            envelope,
            seq,
            lambda customer: profiles.get(customer),
            [target],
            lambda _c, customer: held.get(customer) is not None,
            catalogue,
            held_profiles,
        )
        for customer_id, profile in changed.items():
            if profile is None:
                profiles.pop(customer_id, None)
            else:
                profiles[customer_id] = profile
        for delivery in deliveries:
            held[delivery.customer_id] = delivery.holding
            if seq >= from_seq:
                queued.append(delivery)
    # An erased customer's events no longer hold their data: replayed, they would
    # send empty upserts ahead of the deletion, which alone says what counts.
    erased = {c for c, p in profiles.items() if p.status == ProfileStatus.ERASED}
    queued = [d for d in queued if d.customer_id not in erased or d.type != EventType.UPSERTED]
    return queued, held


@dataclass(frozen=True)
class Status:
    position: int
    lag: int
    counts: ConnectorCounts
    paused: bool


@dataclass(frozen=True)
class Export:
    path: Path
    rows: int


class ProfileSyncApplication:
    def __init__(
        self,
        store: SyncStore,
        connectors: ConnectorsApplication,
        clock: Callable[[], datetime] = utcnow,
        on_delivery: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.connectors = connectors
        self._clock = clock
        self._on_delivery = on_delivery or (lambda: None)
        # A replay reads the inbox and then replaces deliveries: no event may be applied
        # in between, or its deliveries would be replaced away.
        self._projecting = threading.Lock()

    def project(self, stream: str, envelope: Envelope) -> int | None:
        """Applies one consumed event; None when it was applied before."""
        with self._projecting:
            seq = self.store.apply(stream, envelope, self.connectors.targets(), projector)
        if seq is not None:
            self._on_delivery()
        return seq

    def project_batch(self, stream: str, envelopes: Sequence[Envelope]) -> list[int | None]:
        """Applies consumed events of one stream together, in one transaction."""
        with self._projecting:
            seqs = self.store.apply_batch(stream, envelopes, self.connectors.targets(), projector)
        if any(seq is not None for seq in seqs):
            self._on_delivery()
        return seqs

    def profile(self, customer_id: str) -> Profile | None:
        """The customer's profile, its grants read against the statements published."""
        return resolved(self.store.get_profile(customer_id), self.store.catalogue())

    def status(self, connector_id: str) -> Status:
        connector = self.connectors.get(connector_id)
        counts = self.store.counts(connector_id)
        last = self.store.last_seq()
        oldest = counts.oldest_pending_seq
        return Status(
            position=last,
            lag=0 if oldest is None else last - oldest + 1,
            counts=counts,
            paused=connector.paused,
        )

    def replay(self, connector_id: str, from_seq: int) -> int:
        """Re-derives the connector's deliveries from `from_seq` (its current settings,
        the whole inbox folded again) and queues them, in order."""
        target = target_of(self.connectors.get(connector_id))
        with self._projecting:
            count = self.store.replay(
                connector_id, max(from_seq, 1), lambda inbox: _replayed(target, from_seq, inbox)
            )
        self._on_delivery()
        return count

    def rebuild(self) -> int:
        """Refolds every profile from the inbox (position 0 on both streams) and replaces
        the stored ones; returns the number of events folded."""
        with self._projecting:
            profiles: dict[str, Profile] = {}
            catalogue: dict[str, int] = {}
            events = 0
            # The domain fold alone: with no connectors to gate for, the projector would
            # only wrap it.
            for _seq, _stream, envelope in self.store.inbox(1):
                _fold_event(profiles, catalogue, envelope)
                events += 1
            self.store.replace_profiles(sorted(profiles.items()), catalogue)
        return events

    def rewind(self, stream: str, after: int) -> Rewound:
        """Forgets `stream`'s events past position `after`: the service behind the stream
        was restored from a backup and numbers those positions again, with other events.
        Profiles are folded again without them, and connectors get what that changed (a
        customer's lost grant becomes a deletion, for instance). See SyncStore.rewind."""
        if after < 0:
            raise ValueError("a rewind position is 0 or more")
        targets = self.connectors.targets()
        at = self._clock()

        def corrector(
            changes: Mapping[str, tuple[Profile | None, Profile | None]],
            seq: int,
            rewind: int,
            holds: HoldingLookup,
            catalogues: tuple[Catalogue, Catalogue],
        ) -> list[OutgoingDelivery]:
            event_id = f"{stream.lower()}-rewind:{rewind}"  # per customer: "<id>/<customer>"
            before, after = catalogues
            return gate(
                {
                    c: Change(resolved(was, before), resolved(now, after))
                    for c, (was, now) in changes.items()
                },
                targets,
                holds,
                seq,
                at,
                event_id,
                "",
            )

        with self._projecting:
            rewound = self.store.rewind(stream, after, targets, _fold_event, corrector)
        if rewound.queued:
            self._on_delivery()
        return rewound

    def run_export(self, connector_id: str) -> Export:
        """Writes the connector's customers to a new file: temp file, then rename."""
        connector = self.connectors.get(connector_id)
        if connector.kind != ConnectorKind.FILE_EXPORT:
            raise NotAnExportConnector(connector_id)
        settings = connector.settings
        audience = target_of(connector)
        fmt = ExportFormat(settings.export_format)
        directory = Path(settings.directory)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / file_name(connector_id, self.store.last_seq(), fmt)
        rows = 0
        catalogue = self.store.catalogue()

        def profiles() -> Iterator[Profile]:
            # Who may have it now, as they are now: the connector's settings may have
            # changed since the profiles did, and statements been published.
            nonlocal rows
            for stored in self.store.profiles():
                profile = resolve(stored, catalogue)
                if visible(audience, profile):
                    rows += 1
                    yield profile

        handle, temp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                for line in lines(fmt, tuple(settings.fields), profiles()):
                    out.write(line)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)  # readers never see a half-written file
            _fsync_directory(directory)  # the rename survives a crash too
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        # Each file is a whole snapshot: the earlier ones only keep what has changed
        # since, an erased customer's data among it.
        for earlier in directory.glob(file_pattern(connector_id, fmt)):
            if earlier != target:
                earlier.unlink(missing_ok=True)
        return Export(target, rows)

    def dead_letters(
        self, connector_id: str, limit: int, after: tuple[int, str]
    ) -> list[StoredDelivery]:
        self.connectors.get(connector_id)
        return self.store.dead_letters(connector_id, limit, after)

    def retry_dead_letters(self, connector_id: str) -> int:
        self.connectors.get(connector_id)
        count = self.store.retry_dead(connector_id, self._clock())
        self._on_delivery()
        return count

    def delete_connector(self, connector_id: str) -> None:
        self.connectors.delete(connector_id)
        self.store.drop_connector(connector_id)


def _fsync_directory(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


class NotAnExportConnector(ConnectorError):
    """RunExport on a connector that is not FILE_EXPORT."""

    def __init__(self, connector_id: str) -> None:
        super().__init__("RunExport needs a FILE_EXPORT connector", connector_id=connector_id)
