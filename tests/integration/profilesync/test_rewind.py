"""Rewinding a stream after the service behind it was restored from a backup (on SQLite
and on PostgreSQL, with real consent events and the real projector): the inbox forgets
the lost events, profiles and connectors follow the restored ledger, and the restored
ledger's new events at the same positions apply, under webhook ids of their own."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna_profilesync.application import ProfileSyncApplication
from kizuna_profilesync.connectors import ConnectorsApplication
from kizuna_profilesync.domain.connector import Settings
from kizuna_profilesync.domain.profile import ConsentStatus
from kizuna_profilesync.secret_box import SecretBox
from kizuna_profilesync.storage.factory import open_store
from kizuna_profilesync.storage.interface import (
    RewindNotSettled,
    Rewound,
    StreamDiverged,
    SyncStore,
)
from tests.unit.profilesync.builders import ALICE, BOB, consent, published, registered

pytestmark = pytest.mark.integration

HOOK = "hook"
STATEMENT = "marketing-email"
LATER = datetime(2100, 1, 1, tzinfo=UTC)  # every delivery is due by then


@pytest.fixture
def app(database_url: str | None, tmp_path: Path) -> Iterator[ProfileSyncApplication]:
    store = open_store(database_url, tmp_path / "profilesync.sqlite", pool_size=2)
    connectors = ConnectorsApplication(
        {"PERSISTENCE_MODULE": "eventsourcing.popo"}, SecretBox(os.urandom(32))
    )
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    settings = Settings(webhook_url="http://127.0.0.1:9/hook", required_statements=(STATEMENT,))
    connectors.create(HOOK, "WEBHOOK", settings, secret)
    try:
        yield ProfileSyncApplication(store, connectors)
    finally:
        store.close()


def granted(store: SyncStore, customer_id: str) -> bool:
    profile = store.get_profile(customer_id)
    assert profile is not None
    entry = profile.consents.get(STATEMENT)
    return entry is not None and entry.status == ConsentStatus.GRANTED


def deliver_all(store: SyncStore) -> list[tuple[str, str, str]]:
    """Marks every due delivery delivered; (webhook id, customer, type) of each."""
    sent = []
    while due := store.due(HOOK, LATER, 100):
        for d in due:
            sent.append((d.delivery_id, d.customer_id, d.type))
        store.mark_delivered_many(HOOK, [d.delivery_id for d in due], LATER)
    return sent


def record(sequence: int, subject: str, *, granted: bool = True) -> Envelope:
    at = datetime(2026, 5, 1, tzinfo=UTC) + timedelta(minutes=sequence)
    return consent(subject, STATEMENT, granted=granted, sequence=sequence, effective=at)


def alice_granted_and_sent(app: ProfileSyncApplication) -> None:
    app.project("IDENTITY", registered(ALICE, position=1, login="a@example.jp"))
    app.project("CONSENT", record(1, ALICE))
    deliver_all(app.store)


def alice_withdrew_not_sent_yet(app: ProfileSyncApplication) -> None:
    """Alice's grant (position 1) went out; her withdrawal (position 2) is pending."""
    alice_granted_and_sent(app)
    app.project("CONSENT", record(2, ALICE, granted=False))


def test_a_rewind_follows_the_restored_ledger(app: ProfileSyncApplication) -> None:
    store = app.store
    app.project("IDENTITY", registered(ALICE, position=1, login="a@example.jp"))
    app.project("IDENTITY", registered(BOB, position=2, login="b@example.jp"))
    app.project("CONSENT", record(1, ALICE))
    app.project("CONSENT", record(2, BOB))
    assert {c for _, c, _ in deliver_all(store)} == {ALICE, BOB}
    # The ledger's backup was taken here. Then Alice withdrew; her deletion is not out yet.
    app.project("CONSENT", record(3, ALICE, granted=False))
    last_before = store.last_seq()

    # Restored to the backup, the ledger has position 1 only: Bob's grant and Alice's
    # withdrawal are gone from it.
    assert app.rewind("CONSENT", 1) == Rewound(forgotten=2, changed=2, queued=2)

    assert store.positions() == {"IDENTITY": 2, "CONSENT": 1}
    assert granted(store, ALICE)
    assert not granted(store, BOB)
    # Alice's deletion from the lost withdrawal still goes out, then her correction: the
    # connector ends with what the restored ledger says, whatever it was sent meanwhile.
    first = store.due(HOOK, LATER, 100)
    assert [(d.delivery_id, d.type, d.seq) for d in first] == [
        ("consent:3", "customer.deleted", last_before),
        ("consent-rewind:1/" + BOB, "customer.deleted", last_before + 2),
    ]
    assert json.loads(first[1].body)["data"] == {"reason": "consent"}
    store.mark_delivered_many(HOOK, [d.delivery_id for d in first], LATER)
    assert [(d.delivery_id, d.type, d.seq) for d in store.due(HOOK, LATER, 100)] == [
        ("consent-rewind:1/" + ALICE, "customer.upserted", last_before + 1),
    ]
    deliver_all(store)
    assert dict(store.holdings(HOOK)).keys() == {ALICE}

    # The restored ledger records again from position 2, another event than before.
    assert app.project("CONSENT", record(1, ALICE)) is None, "the same event: a duplicate"
    seq = app.project("CONSENT", record(2, ALICE, granted=False))
    assert seq == last_before + 3, "seqs go on after the rewind's own"
    assert store.last_seq() == seq
    assert deliver_all(store) == [("consent:2~1", ALICE, "customer.deleted")]


def test_a_lost_new_major_gives_the_grants_back(app: ProfileSyncApplication) -> None:
    store = app.store
    alice_granted_and_sent(app)
    app.project("CONSENT", published(STATEMENT, "2.0", position=2))
    assert deliver_all(store) == [(f"consent:2/{ALICE}", ALICE, "customer.deleted")]
    assert store.catalogue() == {STATEMENT: 2}

    # The ledger restored to before the publication: Alice's grant is current again.
    assert app.rewind("CONSENT", 1) == Rewound(forgotten=1, changed=1, queued=1)
    assert store.catalogue() == {}
    profile = app.profile(ALICE)
    assert profile is not None
    assert profile.consents[STATEMENT].status == ConsentStatus.GRANTED
    assert deliver_all(store) == [("consent-rewind:1/" + ALICE, ALICE, "customer.upserted")]


def test_a_lost_withdrawal_still_pending_goes_out_and_needs_no_correction(
    app: ProfileSyncApplication,
) -> None:
    store = app.store
    alice_withdrew_not_sent_yet(app)

    # The ledger is restored to before both.
    assert app.rewind("CONSENT", 0) == Rewound(forgotten=2, changed=1, queued=0)

    assert not granted(store, ALICE)
    assert deliver_all(store) == [("consent:2", ALICE, "customer.deleted")]
    assert list(store.holdings(HOOK)) == []


def test_a_replay_from_before_a_rewind_waits_for_its_deliveries(
    app: ProfileSyncApplication,
) -> None:
    store = app.store
    alice_withdrew_not_sent_yet(app)
    app.rewind("CONSENT", 0)
    (settles,) = store.due(HOOK, LATER, 10)
    barrier = store.unsettled_rewind(HOOK)
    assert barrier is not None
    assert barrier >= settles.seq

    # The receiver still holds Alice until the pending deletion goes out; a replay from
    # the inbox alone would never send her one.
    with pytest.raises(RewindNotSettled, match="not all sent"):
        app.replay(HOOK, 1)
    assert store.due(HOOK, LATER, 10) == [settles], "the refused replay changed nothing"
    assert app.replay(HOOK, barrier + 1) == 0

    assert deliver_all(store) == [("consent:2", ALICE, "customer.deleted")]
    assert store.unsettled_rewind(HOOK) is None
    app.replay(HOOK, 1)
    assert deliver_all(store) == []
    assert list(store.holdings(HOOK)) == []


def test_a_replica_that_was_running_marks_the_ids_too(
    app: ProfileSyncApplication, database_url: str | None, tmp_path: Path
) -> None:
    other = open_store(database_url, tmp_path / "profilesync.sqlite", pool_size=2)
    try:
        alice_withdrew_not_sent_yet(app)
        deliver_all(app.store)
        app.rewind("CONSENT", 1)
        deliver_all(app.store)
        # A replica opened before the rewind applies the restored ledger's next record.
        late = ProfileSyncApplication(other, app.connectors)
        late.project("CONSENT", record(2, ALICE, granted=False))
        assert [i for i, _, _ in deliver_all(other)] == ["consent:2~1"]
    finally:
        other.close()


def test_an_event_numbered_again_gets_its_own_webhook_id_after_a_restart(
    app: ProfileSyncApplication, database_url: str | None, tmp_path: Path
) -> None:
    app.project("IDENTITY", registered(ALICE, position=1, login="a@example.jp"))
    app.project("CONSENT", record(1, ALICE, granted=False))
    app.project("CONSENT", record(2, ALICE))
    app.rewind("CONSENT", 1)
    deliver_all(app.store)
    app.store.close()

    reopened = open_store(database_url, tmp_path / "profilesync.sqlite", pool_size=2)
    try:
        restarted = ProfileSyncApplication(reopened, app.connectors)
        restarted.project("CONSENT", record(2, ALICE))
        assert [(i, t) for i, _, t in deliver_all(reopened)] == [
            ("consent:2~1", "customer.upserted")
        ]
        restarted.project("CONSENT", record(3, ALICE, granted=False))
        assert [(i, t) for i, _, t in deliver_all(reopened)] == [
            ("consent:3~1", "customer.deleted")
        ]
        with pytest.raises(StreamDiverged):
            restarted.project("CONSENT", record(2, BOB))
    finally:
        reopened.close()


def test_a_rewind_with_nothing_past_its_position_changes_nothing(
    app: ProfileSyncApplication,
) -> None:
    store = app.store
    alice_granted_and_sent(app)
    before = (store.last_seq(), store.get_profile(ALICE), list(store.holdings(HOOK)))

    assert app.rewind("CONSENT", 1) == Rewound(0, 0, 0)
    assert app.rewind("CONSENT", 5) == Rewound(0, 0, 0)

    assert (store.last_seq(), store.get_profile(ALICE), list(store.holdings(HOOK))) == before
    assert store.due(HOOK, LATER, 10) == []
    # No rewind was recorded: the next record keeps its plain webhook id.
    app.project("CONSENT", record(2, ALICE, granted=False))
    assert [i for i, _, _ in deliver_all(store)] == ["consent:2"]


def test_a_rewind_to_before_the_first_event_forgets_the_whole_stream(
    app: ProfileSyncApplication,
) -> None:
    store = app.store
    alice_granted_and_sent(app)

    assert app.rewind("CONSENT", 0) == Rewound(forgotten=1, changed=1, queued=1)
    assert store.positions() == {"IDENTITY": 1}
    assert not granted(store, ALICE)
    assert [t for _, _, t in deliver_all(store)] == ["customer.deleted"]
    with pytest.raises(ValueError, match="0 or more"):
        app.rewind("CONSENT", -1)
