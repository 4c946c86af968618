"""The profile-sync store on SQLite and on PostgreSQL (each test runs on both): exactly-once
and atomic `apply`, profiles round trip, per-customer order and dead letters in `due`,
atomic replays, and concurrent consumers numbering the inbox without gaps."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna_kit.testing.postgres import PostgresCluster
from kizuna_profilesync.domain.profile import (
    ConsentEntry,
    ConsentStatus,
    LinkedIdentity,
    PostalAddress,
    Profile,
    ProfileFields,
    ProfileStatus,
)
from kizuna_profilesync.domain.statements import Catalogue
from kizuna_profilesync.storage import common
from kizuna_profilesync.storage.factory import open_store
from kizuna_profilesync.storage.interface import (
    ConnectorCounts,
    DeliveryStatus,
    HeldProfiles,
    HoldingLookup,
    OutgoingDelivery,
    ProfileLoader,
    ReplayDeriver,
    StreamDiverged,
    SyncStore,
    Target,
)

pytestmark = pytest.mark.integration

T0 = datetime(2025, 4, 1, 9, 0, 0, 123456, tzinfo=UTC)
LATER = T0 + timedelta(days=1)
IDENTITY, CONSENT = "IDENTITY", "CONSENT"
ERASE = "test.Erase"
PUBLISH = "test.Publish"
HOOK, OTHER = "hook", "other"
DB_ERRORS = (sqlite3.DatabaseError, psycopg.DatabaseError)


def target(connector_id: str) -> Target:
    return Target(connector_id, event_types=(), required_statements=(), fields=())


TARGETS = (target(HOOK),)


def envelope(stream: str, position: int, customer_id: str, type_: str = "test.Touch") -> Envelope:
    return Envelope(
        event_id=f"{stream.lower()}:{position}",
        stream=stream,
        aggregate_id=customer_id,
        aggregate_version=position,
        type=type_,
        position=position,
    )


def delivery(
    connector_id: str, seq: int, customer_id: str, data: bytes | None = b"{}"
) -> OutgoingDelivery:
    return OutgoingDelivery(
        connector_id=connector_id,
        delivery_id=f"{connector_id}:{seq}:{customer_id}",
        seq=seq,
        customer_id=customer_id,
        type="customer.deleted" if data is None else "customer.upserted",
        body=json.dumps({"seq": seq, "customer_id": customer_id}).encode(),
        holding=data,
    )


@dataclass
class FakeProjector:
    """Stands in for the application's projector. Each envelope counts one more change on
    its aggregate's profile (in identity_version, read through `load`) and sends every
    target the new count; an ERASE deletes the profile and sends a deletion to the
    targets that hold the customer (asked through `holds`); a PUBLISH raises its
    aggregate's MAJOR in the catalogue and sends a deletion for every customer each target
    holds (asked through `held`)."""

    calls: int = 0

    def __call__(
        self,
        envelope: Envelope,
        seq: int,
        load: ProfileLoader,
        targets: Sequence[Target],
        holds: HoldingLookup,
        catalogue: Catalogue,
        held: HeldProfiles,
    ) -> tuple[dict[str, Profile | None], list[OutgoingDelivery], Catalogue]:
        self.calls += 1
        customer_id = envelope.aggregate_id
        if envelope.type == PUBLISH:
            statement = envelope.aggregate_id
            published = {**catalogue, statement: catalogue.get(statement, 0) + 1}
            gone = [
                delivery(t.connector_id, seq, c, None)
                for t in targets
                for c, _profile in held(t.connector_id)
            ]
            return {}, gone, published
        before = load(customer_id)
        if envelope.type == ERASE:
            gone = [
                delivery(t.connector_id, seq, customer_id, None)
                for t in targets
                if holds(t.connector_id, customer_id)
            ]
            return {customer_id: None}, gone, catalogue
        after = replace(
            before or Profile(customer_id=customer_id),
            identity_version=(before.identity_version if before else 0) + 1,
            identity_position=envelope.position,
        )
        data = json.dumps({"changes": after.identity_version}).encode()
        return (
            {customer_id: after},
            [delivery(t.connector_id, seq, customer_id, data) for t in targets],
            catalogue,
        )


def fixed(changed: dict[str, Profile | None], deliveries: Sequence[OutgoingDelivery] = ()) -> Any:
    """A projector that answers the same whatever the envelope."""

    def project(
        *args: Any,
    ) -> tuple[dict[str, Profile | None], list[OutgoingDelivery], Catalogue]:
        return changed, list(deliveries), args[5]

    return project


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Sync:
    """The store under test, its clock, and how to open it again."""

    url: str | None
    path: Path
    clock: Clock = field(default_factory=Clock)
    project: FakeProjector = field(default_factory=FakeProjector)
    store: SyncStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = self.open()

    def open(self) -> SyncStore:
        return open_store(self.url, self.path, pool_size=4, clock=self.clock)

    def apply(
        self, stream: str, position: int, customer_id: str, type_: str = "test.Touch"
    ) -> int | None:
        return self.store.apply(
            stream, envelope(stream, position, customer_id, type_), TARGETS, self.project
        )

    def due(self, connector_id: str = HOOK, now: datetime = LATER, limit: int = 100) -> list[str]:
        return [d.delivery_id for d in self.store.due(connector_id, now, limit)]

    def snapshot(self, customers: Sequence[str]) -> tuple[object, ...]:
        """Everything an apply or a replay could change."""
        store = self.store
        return (
            store.last_seq(),
            list(store.inbox()),
            store.positions(),
            {c: store.get_profile(c) for c in customers},
            {c: store.due(c, LATER, 100) for c in (HOOK, OTHER)},
            {c: store.counts(c) for c in (HOOK, OTHER)},
            {c: list(store.holdings(c)) for c in (HOOK, OTHER)},
            store.catalogue(),
        )


@pytest.fixture
def sync(database_url: str | None, tmp_path: Path) -> Iterator[Sync]:
    s = Sync(database_url, tmp_path / "profilesync.sqlite")
    try:
        yield s
    finally:
        s.store.close()


def did(connector_id: str, seq: int, customer_id: str) -> str:
    return f"{connector_id}:{seq}:{customer_id}"


# 1. Exactly once ---------------------------------------------------------------------


def test_a_new_store_is_empty(sync: Sync) -> None:
    store = sync.store
    assert store.last_seq() == 0
    assert store.positions() == {}
    assert list(store.inbox()) == []
    assert store.get_profile("x") is None
    assert store.due(HOOK, LATER, 10) == []
    assert store.counts(HOOK) == ConnectorCounts(0, 0, 0, 0, None, "")
    assert list(store.holdings(HOOK)) == []


def test_apply_is_exactly_once_and_numbers_envelopes_across_streams(sync: Sync) -> None:
    assert sync.apply(IDENTITY, 1, "x") == 1
    assert sync.apply(CONSENT, 1, "y") == 2
    assert sync.apply(IDENTITY, 1, "x") is None  # a redelivery
    assert sync.apply(CONSENT, 1, "y") is None  # same position: the stream tells them apart
    assert sync.project.calls == 2  # a duplicate never reaches the projector
    assert sync.apply(IDENTITY, 2, "x") == 3
    assert sync.apply(CONSENT, 7, "y") == 4

    x = sync.store.get_profile("x")
    assert x is not None
    assert x.identity_version == 2  # two changes, not three
    assert sync.due() == [did(HOOK, 1, "x"), did(HOOK, 2, "y")]  # one each so far, per customer
    assert sync.store.counts(HOOK).pending == 4
    assert sync.store.last_seq() == 4
    assert sync.store.positions() == {IDENTITY: 2, CONSENT: 7}
    assert [(seq, stream, e.position) for seq, stream, e in sync.store.inbox()] == [
        (1, IDENTITY, 1),
        (2, CONSENT, 1),
        (3, IDENTITY, 2),
        (4, CONSENT, 7),
    ]
    [(_, _, stored)] = list(sync.store.inbox(4))
    assert stored == envelope(CONSENT, 7, "y")


def test_another_event_at_a_position_applied_before_is_refused(sync: Sync) -> None:
    assert sync.apply(CONSENT, 1, "y") == 1
    assert sync.apply(CONSENT, 2, "y") == 2
    before = sync.snapshot(["x", "y"])
    # As after a restore: the stream numbers again from an earlier position.
    with pytest.raises(StreamDiverged, match="CONSENT position 2"):
        sync.apply(CONSENT, 2, "x")
    with pytest.raises(StreamDiverged):
        sync.store.apply_batch(
            CONSENT, [envelope(CONSENT, 3, "y"), envelope(CONSENT, 2, "x")], TARGETS, sync.project
        )
    assert sync.snapshot(["x", "y"]) == before
    assert sync.project.calls == 2


# 2. Atomicity -------------------------------------------------------------------------


def test_a_failing_projector_changes_nothing(sync: Sync) -> None:
    sync.apply(IDENTITY, 1, "x")
    sync.apply(IDENTITY, 2, "y")
    before = sync.snapshot(["x", "y"])

    def explode(
        envelope: Envelope,
        seq: int,
        load: ProfileLoader,
        targets: Sequence[Target],
        holds: HoldingLookup,
        catalogue: Catalogue,
        held: HeldProfiles,
    ) -> tuple[dict[str, Profile | None], list[OutgoingDelivery], Catalogue]:
        assert seq == 3
        assert load("x") is not None
        assert holds(HOOK, "x")
        raise RuntimeError("projection bug")

    with pytest.raises(RuntimeError, match="projection bug"):
        sync.store.apply(IDENTITY, envelope(IDENTITY, 3, "x"), TARGETS, explode)
    assert sync.snapshot(["x", "y"]) == before
    # Not recorded as seen: the redelivery applies, with the next seq (no gap).
    assert sync.apply(IDENTITY, 3, "x") == 3


def test_a_write_failing_after_the_projector_changes_nothing(sync: Sync) -> None:
    sync.apply(IDENTITY, 1, "x")
    before = sync.snapshot(["x", "y"])
    # The profile upsert and the holding would succeed; the second delivery collides.
    twice = delivery(HOOK, 2, "y")
    projector = fixed({"y": Profile(customer_id="y"), "x": None}, [twice, twice])
    with pytest.raises(DB_ERRORS):
        sync.store.apply(IDENTITY, envelope(IDENTITY, 2, "y"), TARGETS, projector)
    assert sync.snapshot(["x", "y"]) == before
    assert sync.apply(IDENTITY, 2, "y") == 2


# 3. Profiles ----------------------------------------------------------------------------


def test_profiles_round_trip_through_apply_and_none_deletes(sync: Sync) -> None:
    at = T0 + timedelta(microseconds=1)
    rich = Profile(
        customer_id="x",
        status=ProfileStatus.ACTIVE,
        fields=ProfileFields(
            given_name="花子",
            family_name="田中",
            phone="+81 3 1234 5678",
            postal_address=PostalAddress(postal_code="100-0001", country="JP"),
            attributes={"tier": "gold", "a.b": "c"},
        ),
        login_ids=("hanako@example.com",),
        linked_identities=(LinkedIdentity("line", "U1"), LinkedIdentity("ec", "42")),
        sites=("ec", "store"),
        consents={
            "terms": ConsentEntry(ConsentStatus.GRANTED, "1.0", at, at, 7, "r-7"),
            "marketing": ConsentEntry(ConsentStatus.WITHDRAWN, "2.1", T0, at, 9, "r-9"),
        },
        identity_version=3,
        identity_position=11,
        consent_position=9,
        created_at=T0,
        updated_at=at,
    )
    other = Profile(customer_id="y", status=ProfileStatus.MERGED, merged_into="x")
    sync.store.apply(IDENTITY, envelope(IDENTITY, 1, "x"), TARGETS, fixed({"x": rich, "y": other}))
    assert sync.store.get_profile("x") == rich
    assert sync.store.get_profile("y") == other

    seen: list[Profile | None] = []

    def delete_x(
        envelope: Envelope,
        seq: int,
        load: ProfileLoader,
        targets: Sequence[Target],
        holds: HoldingLookup,
        catalogue: Catalogue,
        held: HeldProfiles,
    ) -> tuple[dict[str, Profile | None], list[OutgoingDelivery], Catalogue]:
        seen.extend([load("x"), load("x"), load("nobody")])
        return {"x": None}, [], catalogue

    sync.store.apply(IDENTITY, envelope(IDENTITY, 2, "x"), TARGETS, delete_x)
    assert seen == [rich, rich, None]
    assert sync.store.get_profile("x") is None
    assert sync.store.get_profile("y") == other

    # The schema is created only if missing: reopening keeps everything.
    sync.store.close()
    sync.store = sync.open()
    assert sync.store.get_profile("y") == other
    assert sync.store.last_seq() == 2


def test_the_catalogue_and_held_profiles_come_from_the_store(sync: Sync) -> None:
    sync.apply(IDENTITY, 1, "x")
    sync.apply(IDENTITY, 2, "y")
    sync.apply(IDENTITY, 3, "y", ERASE)
    stored_x = sync.store.get_profile("x")
    seen: list[tuple[str, Profile | None]] = []

    def publish(
        envelope: Envelope,
        seq: int,
        load: ProfileLoader,
        targets: Sequence[Target],
        holds: HoldingLookup,
        catalogue: Catalogue,
        held: HeldProfiles,
    ) -> tuple[dict[str, Profile | None], list[OutgoingDelivery], Catalogue]:
        seen.extend(held(HOOK))
        return {}, [], {**catalogue, "terms": catalogue.get("terms", 0) + 2}

    for position in (1, 2):
        sync.store.apply(CONSENT, envelope(CONSENT, position, "terms", PUBLISH), TARGETS, publish)
    # Only x is held (y was deleted), with its stored profile; nothing changed it.
    assert seen == [("x", stored_x), ("x", stored_x)]
    assert sync.store.catalogue() == {"terms": 4}
    sync.store.close()
    sync.store = sync.open()
    assert sync.store.catalogue() == {"terms": 4}


# 4. Deliveries ------------------------------------------------------------------------------


def test_due_keeps_per_customer_order_and_dead_letters_requeue(sync: Sync) -> None:
    sync.apply(IDENTITY, 1, "x")  # seq 1
    sync.apply(IDENTITY, 2, "y")  # seq 2
    sync.apply(IDENTITY, 3, "x")  # seq 3
    x1, y2, x3 = did(HOOK, 1, "x"), did(HOOK, 2, "y"), did(HOOK, 3, "x")
    store = sync.store

    # New deliveries are due from the store's clock on; and only for their connector.
    assert sync.due(now=T0 - timedelta(microseconds=1)) == []
    assert sync.due(now=T0) == [x1, y2]
    assert sync.due(limit=1) == [x1]
    assert sync.due(OTHER) == []
    [first] = store.due(HOOK, T0, 1)
    assert (first.status, first.attempts, first.next_attempt_at, first.last_error) == (
        DeliveryStatus.PENDING,
        0,
        T0,
        "",
    )
    assert (first.seq, first.customer_id, first.type) == (1, "x", "customer.upserted")
    assert json.loads(first.body) == {"seq": 1, "customer_id": "x"}

    # X's first delivery fails: X's later one waits behind it; Y is not held back.
    retry_at = T0 + timedelta(hours=1)
    sync.clock.now = T0 + timedelta(seconds=5)
    store.mark_failed(HOOK, x1, "HTTP 503", retry_at)
    assert sync.due(now=T0 + timedelta(minutes=1)) == [y2]
    # One row a page: the walk goes on past rows held back, and X stays held on later pages.
    assert sync.due(now=T0 + timedelta(minutes=1), limit=1) == [y2]
    assert store.counts(HOOK) == ConnectorCounts(
        delivered=0, pending=3, failed=1, dead=0, oldest_pending_seq=1, last_error="HTTP 503"
    )
    store.mark_delivered(HOOK, y2, T0 + timedelta(minutes=1))
    assert sync.due(now=T0 + timedelta(minutes=2)) == []
    assert sync.due(now=T0 + timedelta(minutes=2), limit=1) == []
    [again] = store.due(HOOK, retry_at, 10)
    assert (again.delivery_id, again.attempts, again.last_error) == (x1, 1, "HTTP 503")
    assert (again.next_attempt_at, again.updated_at) == (retry_at, sync.clock.now)
    store.mark_delivered(HOOK, x1, retry_at)
    assert sync.due(now=retry_at) == [x3]

    # The last try fails: a dead letter, listed, counted, and requeued on demand.
    dead_at = retry_at + timedelta(seconds=1)
    store.mark_dead(HOOK, x3, "HTTP 400", dead_at)
    assert sync.due() == []
    [letter] = store.dead_letters(HOOK, 10)
    assert (letter.delivery_id, letter.status, letter.attempts, letter.last_error) == (
        x3,
        DeliveryStatus.DEAD,
        1,
        "HTTP 400",
    )
    assert letter.updated_at == dead_at
    assert store.dead_letters(HOOK, 10, after=(3, x3)) == []
    assert store.dead_letters(OTHER, 10) == []
    assert store.counts(HOOK) == ConnectorCounts(
        delivered=2, pending=0, failed=0, dead=1, oldest_pending_seq=None, last_error="HTTP 400"
    )
    store.mark_delivered(HOOK, x3, dead_at)  # only a pending delivery moves
    assert store.counts(HOOK).dead == 1

    assert store.retry_dead(HOOK, LATER) == 1
    assert store.retry_dead(HOOK, LATER) == 0
    [requeued] = store.due(HOOK, LATER, 10)
    assert (requeued.delivery_id, requeued.status, requeued.attempts) == (
        x3,
        DeliveryStatus.PENDING,
        0,
    )
    assert requeued.next_attempt_at == LATER
    assert store.counts(HOOK) == ConnectorCounts(2, 1, 0, 0, 3, "HTTP 400")


def test_a_retry_requeues_no_dead_letter_older_than_what_went_through(sync: Sync) -> None:
    for position, customer in enumerate("xxyyzz", start=1):
        sync.apply(IDENTITY, position, customer)
    x1, x2, y3, y4, z5, z6 = (did(HOOK, seq, c) for seq, c in enumerate("xxyyzz", start=1))
    store = sync.store
    for dead in (x1, y3, z5, z6):
        store.mark_dead(HOOK, dead, "HTTP 400", T0)
    store.mark_delivered(HOOK, x2, T0)  # X's newer state went out; y4 is still pending

    assert store.retry_dead(HOOK, LATER) == 3  # y3, z5, z6: x1 would undo x2
    assert store.dead_letters(HOOK, 10) == []
    assert sync.due() == [y3, z5]  # each customer's oldest first: y3 before y4
    assert store.counts(HOOK) == ConnectorCounts(
        delivered=1, pending=4, failed=0, dead=0, oldest_pending_seq=3, last_error="HTTP 400"
    )
    assert store.retry_dead(HOOK, LATER) == 0
    assert y4 not in sync.due()


def test_due_walks_the_rows_of_one_seq_together(sync: Sync) -> None:
    """One event can give one connector several customers' deliveries (a merge, a
    rewind's corrections). A page that ends inside such a seq must not let a customer's
    later delivery pass its earlier one."""
    store = sync.store
    customers = ["a", "b", "c"]
    for position in (1, 2):
        seq = position
        deliveries = [delivery(HOOK, seq, c) for c in customers]
        store.apply(IDENTITY, envelope(IDENTITY, position, "a"), TARGETS, fixed({}, deliveries))
    store.mark_failed(HOOK, did(HOOK, 1, "a"), "HTTP 503", LATER + timedelta(hours=1))

    assert sync.due(limit=2) == [did(HOOK, 1, "b"), did(HOOK, 1, "c")]
    assert sync.due(limit=1) == [did(HOOK, 1, "b")]
    store.mark_delivered_many(HOOK, [did(HOOK, 1, "b"), did(HOOK, 1, "c")], LATER)
    assert sync.due(limit=1) == [did(HOOK, 2, "b")]
    assert sync.due(limit=2) == [did(HOOK, 2, "b"), did(HOOK, 2, "c")]


def test_dead_letters_of_one_seq_page_one_by_one(sync: Sync) -> None:
    store = sync.store
    deliveries = [delivery(HOOK, 1, c) for c in ("a", "b", "c")]
    store.apply(IDENTITY, envelope(IDENTITY, 1, "a"), TARGETS, fixed({}, deliveries))
    for d in deliveries:
        store.mark_dead(HOOK, d.delivery_id, "no", T0)
    shown: list[str] = []
    after = (0, "")
    while page := store.dead_letters(HOOK, 1, after):
        shown += [d.delivery_id for d in page]
        after = (page[-1].seq, page[-1].delivery_id)
    assert shown == [did(HOOK, 1, c) for c in ("a", "b", "c")]


def test_dead_letters_page_in_seq_order(sync: Sync) -> None:
    for position in range(1, 6):
        sync.apply(IDENTITY, position, f"c{position}")
    for seq in (4, 2, 5):
        sync.store.mark_dead(HOOK, did(HOOK, seq, f"c{seq}"), "no", T0)
    page = sync.store.dead_letters(HOOK, 2)
    assert [d.seq for d in page] == [2, 4]
    assert [
        d.seq for d in sync.store.dead_letters(HOOK, 2, after=(page[-1].seq, page[-1].delivery_id))
    ] == [5]


def test_a_round_marks_its_pending_deliveries_delivered_in_chunks(
    sync: Sync, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common, "IN_LIST_CHUNK", 2)
    for position in range(1, 6):
        sync.apply(IDENTITY, position, f"c{position}")
    ids = [did(HOOK, seq, f"c{seq}") for seq in range(1, 6)]
    sync.store.mark_dead(HOOK, ids[1], "no", T0)
    sync.store.mark_delivered_many(HOOK, ids, T0 + timedelta(seconds=1))
    # Five ids over three statements; the dead one keeps its state.
    assert sync.store.counts(HOOK) == ConnectorCounts(4, 0, 0, 1, None, "no")
    assert sync.due() == []
    assert [d.delivery_id for d in sync.store.dead_letters(HOOK, 10)] == [ids[1]]


def test_holdings_follow_each_delivery(sync: Sync) -> None:
    sync.apply(IDENTITY, 1, "x")
    sync.apply(IDENTITY, 2, "y")
    sync.apply(IDENTITY, 3, "x")
    assert list(sync.store.holdings(HOOK)) == [
        ("x", b'{"changes": 2}'),
        ("y", b'{"changes": 1}'),
    ]
    sync.apply(IDENTITY, 4, "x", ERASE)  # a deletion: no longer held
    assert list(sync.store.holdings(HOOK)) == [("y", b'{"changes": 1}')]
    assert sync.store.get_profile("x") is None
    sync.apply(IDENTITY, 5, "x", ERASE)  # nobody holds x: the projector sends nothing
    # y's upsert and x's deletion: x's upserts not sent yet went with its deletion.
    assert sync.due() == [did(HOOK, 2, "y"), did(HOOK, 4, "x")]
    assert sync.store.counts(HOOK).pending == 2


# 5. Replays ---------------------------------------------------------------------------------


def derived(
    deliveries: list[OutgoingDelivery], holdings: dict[str, bytes | None], seen: list[int]
) -> ReplayDeriver:
    """Stands in for the application's replay: these results, whatever the inbox says
    (its seqs noted in `seen`)."""

    def derive(
        inbox: Iterator[tuple[int, Envelope]],
    ) -> tuple[list[OutgoingDelivery], dict[str, bytes | None]]:
        seen.extend(seq for seq, _ in inbox)
        return deliveries, holdings

    return derive


def test_replay_swaps_deliveries_and_holdings_atomically(sync: Sync) -> None:
    two = (target(HOOK), target(OTHER))
    for position, customer in enumerate(["zed", "amy", "Bob", "amy"], start=1):
        sync.store.apply(IDENTITY, envelope(IDENTITY, position, customer), two, sync.project)
    sync.store.mark_delivered(HOOK, did(HOOK, 1, "zed"), T0)
    other_before = (sync.store.due(OTHER, LATER, 100), list(sync.store.holdings(OTHER)))
    # Byte-wise order on both backends: upper case first.
    assert [c for c, _ in sync.store.holdings(HOOK)] == ["Bob", "amy", "zed"]

    replay = [delivery(HOOK, 3, "Bob", b"B3"), delivery(HOOK, 4, "dan", b"D4")]
    seen: list[int] = []
    holdings = {"Bob": b"B3", "dan": b"D4", "zed": None, "amy": b"A2"}
    queued = sync.store.replay(HOOK, 3, derived(replay, holdings, seen))
    assert queued == 2
    assert seen == [1, 2, 3, 4]  # the whole inbox, in order
    # Seq 1 (delivered) and 2 stay as they were; 3 and 4 are the replay's.
    assert sync.due() == [did(HOOK, 2, "amy"), did(HOOK, 3, "Bob"), did(HOOK, 4, "dan")]
    assert sync.store.counts(HOOK) == ConnectorCounts(1, 3, 0, 0, 2, "")
    # Exactly the given holdings, ordered; zed (None) is gone.
    assert list(sync.store.holdings(HOOK)) == [("Bob", b"B3"), ("amy", b"A2"), ("dan", b"D4")]
    assert (sync.store.due(OTHER, LATER, 100), list(sync.store.holdings(OTHER))) == other_before

    # A replay that fails half-way (its last delivery collides with a kept one) changes
    # nothing, not even the deletions and holdings before the failure.
    before = sync.snapshot([])
    clash = replace(delivery(HOOK, 5, "eve"), delivery_id=did(HOOK, 2, "amy"))
    with pytest.raises(DB_ERRORS):
        sync.store.replay(HOOK, 3, derived([delivery(HOOK, 3, "Bob"), clash], {}, []))
    assert sync.snapshot([]) == before
    with pytest.raises(ValueError, match="other connectors"):
        sync.store.replay(HOOK, 3, derived([delivery(OTHER, 3, "Bob")], {}, []))

    sync.store.drop_connector(HOOK)
    assert sync.due() == []
    assert list(sync.store.holdings(HOOK)) == []
    assert sync.store.counts(HOOK) == ConnectorCounts(0, 0, 0, 0, None, "")
    assert (sync.store.due(OTHER, LATER, 100), list(sync.store.holdings(OTHER))) == other_before


# 6. Concurrency ----------------------------------------------------------------------------


def run_threads(*work: Any) -> None:
    errors: list[BaseException] = []

    def guarded(fn: Any) -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(fn,)) for fn in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_two_consumers_number_the_inbox_without_gaps(sync: Sync) -> None:
    n = 500
    customers = [f"c{i}" for i in range(10)]  # shared by both streams: contended profiles

    def consume(stream: str) -> None:
        for position in range(1, n + 1):
            assert sync.apply(stream, position, customers[position % 10]) is not None

    run_threads(lambda: consume(IDENTITY), lambda: consume(CONSENT))

    rows = list(sync.store.inbox())
    assert [seq for seq, _, _ in rows] == list(range(1, 2 * n + 1))
    # Each consumer's envelopes keep their order within the shared numbering.
    for stream in (IDENTITY, CONSENT):
        assert [e.position for _, s, e in rows if s == stream] == list(range(1, n + 1))
    assert sync.store.last_seq() == 2 * n
    assert sync.store.positions() == {IDENTITY: n, CONSENT: n}
    # Every apply read the profile its predecessor wrote: no lost update.
    counts = [sync.store.get_profile(c) for c in customers]
    assert sum(p.identity_version for p in counts if p is not None) == 2 * n
    assert sync.store.counts(HOOK).pending == 2 * n


def test_racing_redeliveries_apply_once(sync: Sync) -> None:
    n = 200
    results: dict[str, list[int | None]] = {"a": [], "b": []}

    def consume(name: str) -> None:
        for position in range(1, n + 1):
            results[name].append(sync.apply(IDENTITY, position, "x"))

    run_threads(lambda: consume("a"), lambda: consume("b"))
    applied = sorted(s for r in results.values() for s in r if s is not None)
    assert applied == list(range(1, n + 1))
    profile = sync.store.get_profile("x")
    assert profile is not None
    assert profile.identity_version == n
    assert sync.project.calls == n


# 7. Batches ------------------------------------------------------------------------------

BATCH = [
    (1, "x", "test.Touch"),
    (2, "y", "test.Touch"),
    (3, "x", "test.Touch"),  # sees the x that position 1 left, in the same transaction
    (4, "y", ERASE),  # y was sent earlier in this batch: a deletion goes out
    (5, "y", ERASE),  # nobody holds y any more: nothing
    (6, "z", "test.Touch"),
]
# y's deletion took the place of its upsert, not sent yet.
# (seqs from 3: two events come before the batch)
BATCH_DUE = [did(HOOK, 3, "x"), did(HOOK, 6, "y"), did(HOOK, 8, "z")]
# A publication asks what the connector holds, as this batch's own events left it: x from
# the store, y sent and z deleted within the batch, w sent before.
PUBLISHING = [
    (1, "x", "test.Touch"),
    (2, "z", ERASE),
    (3, "y", "test.Touch"),
    (4, "s", PUBLISH),
    (5, "y", "test.Touch"),
]
# (y's upsert at 7 waits behind its deletion)
PUBLISHING_DUE = [did(HOOK, 4, "z"), did(HOOK, 6, "w"), did(HOOK, 6, "x"), did(HOOK, 6, "y")]


@pytest.mark.parametrize(
    ("batch", "due"), [(BATCH, BATCH_DUE), (PUBLISHING, PUBLISHING_DUE)], ids=["erase", "publish"]
)
def test_a_batch_equals_its_events_applied_one_by_one(
    sync: Sync,
    database_url: str | None,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    batch: list[tuple[int, str, str]],
    due: list[str],
) -> None:
    other_url, name = None, f"test_{uuid.uuid4().hex}"
    if database_url is not None:  # a second, empty PostgreSQL database
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        other_url = cluster.create_database(name)
    one_by_one = Sync(other_url, tmp_path / "one-by-one.sqlite")
    try:
        for s in (sync, one_by_one):  # held before the batch: w, and z
            s.apply(CONSENT, 1, "w")
            s.apply(CONSENT, 2, "z")
            s.store.mark_delivered_many(HOOK, s.due(), T0)
        for position, customer, type_ in batch:
            one_by_one.apply(IDENTITY, position, customer, type_)
        envelopes = [envelope(IDENTITY, p, c, t) for p, c, t in batch]
        seqs = sync.store.apply_batch(IDENTITY, envelopes, TARGETS, sync.project)
        assert seqs == list(range(3, 3 + len(batch)))
        customers = ["w", "x", "y", "z"]
        assert sync.snapshot(customers) == one_by_one.snapshot(customers)
        assert sync.due() == due
    finally:
        one_by_one.store.close()
        if other_url is not None:
            cluster.drop_database(name)


def test_a_redelivered_batch_applies_only_what_is_new(sync: Sync) -> None:
    sync.apply(IDENTITY, 1, "x")
    sync.apply(IDENTITY, 2, "y")
    # The same events again, then 3 twice in one batch.
    envelopes = [
        envelope(IDENTITY, p, c) for p, c in [(1, "x"), (2, "y"), (3, "x"), (3, "x"), (4, "x")]
    ]
    assert sync.store.apply_batch(IDENTITY, envelopes, TARGETS, sync.project) == [
        None,
        None,
        3,
        None,
        4,
    ]
    assert sync.project.calls == 4  # two singles, then only positions 3 and 4
    assert [(seq, e.position) for seq, _, e in sync.store.inbox()] == [
        (1, 1),
        (2, 2),
        (3, 3),
        (4, 4),
    ]
    # The same batch once more (a crash between commit and ack): no second effect.
    before = sync.snapshot(["x", "y"])
    assert sync.store.apply_batch(IDENTITY, envelopes, TARGETS, sync.project) == [None] * 5
    assert sync.snapshot(["x", "y"]) == before


def test_a_batch_failing_half_way_changes_nothing(sync: Sync) -> None:
    sync.apply(IDENTITY, 1, "x")
    before = sync.snapshot(["x", "y"])
    calls = 0

    def explode_on_second(
        envelope: Envelope,
        seq: int,
        load: ProfileLoader,
        targets: Sequence[Target],
        holds: HoldingLookup,
        catalogue: Catalogue,
        held: HeldProfiles,
    ) -> tuple[dict[str, Profile | None], list[OutgoingDelivery], Catalogue]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("poison")
        return sync.project(envelope, seq, load, targets, holds, catalogue, held)

    envelopes = [envelope(IDENTITY, p, c) for p, c in ((2, "y"), (3, "x"), (4, "y"))]
    with pytest.raises(RuntimeError):
        sync.store.apply_batch(IDENTITY, envelopes, TARGETS, explode_on_second)
    assert sync.snapshot(["x", "y"]) == before
    assert sync.store.apply_batch(IDENTITY, envelopes, TARGETS, sync.project) == [2, 3, 4]
