"""The projector the store runs inside its transaction: domain projection, then gating
per connector. Pure: everything it reads comes in through its arguments."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna_profilesync.domain.gating import EventType, decide
from kizuna_profilesync.domain.profile import Profile
from kizuna_profilesync.domain.projection import Change, project, published_statement, run
from kizuna_profilesync.domain.statements import (
    Catalogue,
    resolved,
    statements_changed,
    with_version,
)
from kizuna_profilesync.domain.webhooks import build_body, webhook_id
from kizuna_profilesync.storage.interface import (
    HeldProfiles,
    HoldingLookup,
    OutgoingDelivery,
    ProfileLoader,
    Target,
)
from kizuna_profilesync.storage.serialization import profile_to_bytes


class LoadedProfiles(Mapping[str, Profile]):
    """The profiles an event touches, loaded on first use (the domain executor reads
    through `get`)."""

    def __init__(self, load: ProfileLoader) -> None:
        self._load = load
        self._seen: dict[str, Profile | None] = {}

    def __getitem__(self, customer_id: str) -> Profile:
        if customer_id not in self._seen:
            self._seen[customer_id] = self._load(customer_id)
        profile = self._seen[customer_id]
        if profile is None:
            raise KeyError(customer_id)
        return profile

    def __iter__(self) -> Iterator[str]:
        return (k for k, v in self._seen.items() if v is not None)

    def __len__(self) -> int:
        return sum(1 for v in self._seen.values() if v is not None)


def projector(
    envelope: Envelope,
    seq: int,
    load: ProfileLoader,
    targets: Sequence[Target],
    holds: HoldingLookup,
    catalogue: Catalogue,
    held: HeldProfiles,
) -> tuple[dict[str, Profile | None], list[OutgoingDelivery], Catalogue]:
    changes = run(LoadedProfiles(load), project(envelope))
    occurred_at = envelope.occurred_at.ToDatetime(tzinfo=UTC)
    statement = published_statement(envelope)
    if statement is not None:
        after = with_version(catalogue, *statement)
        deliveries = outdated(catalogue, after, targets, held, seq, occurred_at, envelope.event_id)
        return {}, deliveries, after
    deliveries = gate(
        {
            customer_id: Change(resolved(c.before, catalogue), resolved(c.after, catalogue))
            for customer_id, c in changes.items()
        },
        targets,
        holds,
        seq,
        occurred_at,
        envelope.event_id,
        envelope.aggregate_id,
    )
    return (
        {customer_id: change.after for customer_id, change in changes.items()},
        deliveries,
        catalogue,
    )


def outdated(
    before: Catalogue,
    after: Catalogue,
    targets: Sequence[Target],
    held: HeldProfiles,
    seq: int,
    occurred_at: datetime,
    event_id: str,
) -> list[OutgoingDelivery]:
    """What a change of the catalogue tells connectors: a customer whose grant a new MAJOR
    outdated no longer passes a connector that requires the statement, which gets a
    deletion. Only those connectors are asked, and only about the customers they hold: no
    one becomes visible by a new version."""
    changed = statements_changed(before, after)
    deliveries: list[OutgoingDelivery] = []
    for target in targets:
        if not changed.intersection(target.required_statements):
            continue
        for customer_id, profile in held(target.connector_id):
            change = Change(resolved(profile, before), resolved(profile, after))
            deliveries += gate(
                {customer_id: change}, [target], _held, seq, occurred_at, event_id, ""
            )
    return deliveries


def _held(connector_id: str, customer_id: str) -> bool:
    return True  # every customer `held` gives


def gate(
    changes: Mapping[str, Change],
    targets: Sequence[Target],
    holds: HoldingLookup,
    seq: int,
    occurred_at: datetime,
    event_id: str,
    aggregate_id: str,
) -> list[OutgoingDelivery]:
    """The deliveries these customer changes give each connector (webhook ids from
    `event_id`: see webhooks.webhook_id)."""
    deliveries = []
    for customer_id, change in sorted(changes.items()):
        for target in targets:
            delivery = decide(
                target,
                change.before,
                change.after,
                was_sent=holds(target.connector_id, customer_id),
            )
            if delivery is None:
                continue
            upsert = delivery.type == EventType.UPSERTED
            deliveries.append(
                OutgoingDelivery(
                    connector_id=target.connector_id,
                    delivery_id=webhook_id(event_id, customer_id, aggregate_id),
                    seq=seq,
                    customer_id=customer_id,
                    type=delivery.type.value,
                    body=build_body(
                        delivery.type.value, customer_id, occurred_at, seq, delivery.data
                    ),
                    holding=profile_to_bytes(change.after) if upsert and change.after else None,
                )
            )
    return deliveries
