"""After an erasure reaches profile-sync, its store keeps none of the erased customer's
personal data: not in the inbox, not in deliveries sent or still queued (on SQLite and
on PostgreSQL, with real identity events and the real projector). Everyone else's data
stays, and the rewritten inbox still replays."""

from __future__ import annotations

import base64
import contextlib
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from google.protobuf.message import Message

from kizuna.identity.v1 import events_pb2 as ev
from kizuna.identity.v1 import identity_pb2 as ipb
from kizuna_kit.wire import OutgoingEvent, envelope
from kizuna_profilesync.application import ProfileSyncApplication
from kizuna_profilesync.connectors import ConnectorsApplication
from kizuna_profilesync.domain.connector import Settings
from kizuna_profilesync.domain.profile import ProfileStatus
from kizuna_profilesync.domain.projection import project, run
from kizuna_profilesync.projector import projector
from kizuna_profilesync.secret_box import SecretBox
from kizuna_profilesync.storage import common
from kizuna_profilesync.storage.factory import open_store
from kizuna_profilesync.storage.interface import DeliveryStatus, SyncStore, Target

pytestmark = pytest.mark.integration

HOOK = "hook"
TARGETS = [Target(HOOK, event_types=(), required_statements=(), fields=())]
T0 = datetime(2026, 3, 1, tzinfo=UTC)
LATER = datetime(2100, 1, 1, tzinfo=UTC)  # every delivery is due by then
ERASED, BYSTANDER = "c-erased", "c-bystander"
PERSONAL = [b"tanaka", b"Taro", b"Jiro", b"Tanaka", b"LINE-42", b"5555-0199"]


class Identity:
    """Identity's side: envelopes of stream IDENTITY, numbered as the relay does."""

    def __init__(self, store: SyncStore) -> None:
        self.store = store
        self.position = 0
        self.versions: dict[str, int] = {}

    def event(self, customer_id: str, payload: Message) -> None:
        self.position += 1
        version = self.versions[customer_id] = self.versions.get(customer_id, 0) + 1
        at = T0 + timedelta(seconds=self.position)
        event = OutgoingEvent(
            f"identity.customer.{customer_id}", customer_id, version, at, at, payload
        )
        self.store.apply(
            "IDENTITY", envelope("identity", "IDENTITY", self.position, event), TARGETS, projector
        )


def raw(url: str | None, path: Path, sql: str) -> list[tuple[Any, ...]]:
    if url is None:
        with contextlib.closing(sqlite3.connect(path)) as db:
            return db.execute(sql).fetchall()
    with psycopg.connect(url) as pg:
        return [tuple(row) for row in pg.execute(sql).fetchall()]


def execute(url: str | None, path: Path, sql: str) -> None:
    if url is None:
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute(sql)
        return
    with psycopg.connect(url) as pg:
        pg.execute(sql)


@pytest.fixture
def store(database_url: str | None, tmp_path: Path) -> Iterator[SyncStore]:
    opened = open_store(database_url, tmp_path / "profilesync.sqlite", pool_size=2)
    try:
        yield opened
    finally:
        opened.close()


def test_an_erasure_leaves_no_personal_data_in_the_store(
    store: SyncStore, database_url: str | None, tmp_path: Path
) -> None:
    identity = Identity(store)
    identity.event(
        ERASED,
        ev.CustomerRegistered(
            customer_id=ERASED,
            site_id="shop",
            login_id="tanaka@example.jp",
            profile=ipb.Profile(given_name="Taro", family_name="Tanaka", phone="03-5555-0199"),
        ),
    )
    identity.event(
        ERASED,
        ev.CustomerIdentityLinked(
            customer_id=ERASED, identity=ipb.LinkedIdentity(provider="line", external_id="LINE-42")
        ),
    )
    identity.event(
        BYSTANDER,
        ev.CustomerRegistered(
            customer_id=BYSTANDER,
            site_id="shop",
            login_id="sato@example.jp",
            profile=ipb.Profile(given_name="Hanako"),
        ),
    )
    identity.event(
        ERASED,
        ev.CustomerProfileUpdated(
            customer_id=ERASED, profile=ipb.Profile(given_name="Jiro", family_name="Tanaka")
        ),
    )

    # The first upsert went out, the second failed for good, the third waits.
    def next_for(customer_id: str) -> str:
        due = store.due(HOOK, LATER, 10)
        return next(d.delivery_id for d in due if d.customer_id == customer_id)

    store.mark_delivered(HOOK, next_for(ERASED), T0)
    store.mark_dead(HOOK, next_for(ERASED), "HTTP 500", T0)

    identity.event(ERASED, ev.CustomerErased(customer_id=ERASED))

    url, path = database_url, tmp_path / "profilesync.sqlite"
    inbox = raw(url, path, "SELECT seq, envelope FROM inbox ORDER BY seq")
    assert [seq for seq, _ in inbox] == [1, 2, 3, 4, 5], "every event keeps its place"
    erased_rows = [bytes(data) for seq, data in inbox if seq != 3]
    assert not [word for data in erased_rows for word in PERSONAL if word in data]
    assert b"sato@example.jp" in bytes(inbox[2][1])

    rows = raw(url, path, "SELECT customer_id, type, status, body FROM deliveries ORDER BY seq")
    erased_bodies = b"".join(bytes(body) for customer, _, _, body in rows if customer == ERASED)
    assert not [word for word in PERSONAL if word in erased_bodies]
    assert [(type_, status) for customer, type_, status, _ in rows if customer == ERASED] == [
        ("customer.upserted", DeliveryStatus.DELIVERED.value),
        ("customer.upserted", DeliveryStatus.SUPERSEDED.value),
        ("customer.upserted", DeliveryStatus.SUPERSEDED.value),
        ("customer.deleted", DeliveryStatus.PENDING.value),
    ]
    due = store.due(HOOK, LATER, 10)
    assert [(d.customer_id, d.type) for d in due] == [
        (BYSTANDER, "customer.upserted"),
        (ERASED, "customer.deleted"),
    ]
    assert b"Hanako" in due[0].body, "a body waiting to be sent is kept"
    assert store.dead_letters(HOOK, 10) == []

    # The rewritten inbox still folds to the same state.
    replayed = run({}, [op for _, _, e in store.inbox() for op in project(e)])
    tombstone = replayed[ERASED].after
    assert tombstone is not None
    assert tombstone.status == ProfileStatus.ERASED
    assert tombstone == store.get_profile(ERASED)
    assert replayed[BYSTANDER].after == store.get_profile(BYSTANDER)


def test_inbox_rows_missing_from_the_customer_index_are_found_again(
    store: SyncStore, database_url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common, "INDEX_PAGE", 1)  # every row a page of its own
    identity = Identity(store)
    identity.event(
        ERASED,
        ev.CustomerRegistered(customer_id=ERASED, site_id="shop", login_id="tanaka@example.jp"),
    )
    identity.event(BYSTANDER, ev.CustomerRegistered(customer_id=BYSTANDER, site_id="shop"))
    url, path = database_url, tmp_path / "profilesync.sqlite"
    execute(url, path, "DELETE FROM inbox_customers")  # as a store made before it existed
    store.close()

    reopened = open_store(url, path, pool_size=2)
    try:
        assert sorted(raw(url, path, "SELECT customer_id, seq FROM inbox_customers")) == [
            (BYSTANDER, 2),
            (ERASED, 1),
        ]
        identity.store = reopened
        identity.event(
            ERASED,
            ev.CustomerProfileUpdated(customer_id=ERASED, profile=ipb.Profile(given_name="Taro")),
        )
        # As applied by a replica of an older version during a rolling upgrade.
        execute(url, path, "DELETE FROM inbox_customers WHERE seq = 3")
        identity.event(ERASED, ev.CustomerErased(customer_id=ERASED))
        inbox = raw(url, path, "SELECT envelope FROM inbox WHERE seq IN (1, 3)")
        assert len(inbox) == 2
        assert not [w for (data,) in inbox for w in PERSONAL if w in bytes(data)]
    finally:
        reopened.close()


def test_a_replay_sends_an_erased_customer_only_the_deletion(store: SyncStore) -> None:
    connectors = ConnectorsApplication(
        {"PERSISTENCE_MODULE": "eventsourcing.popo"}, SecretBox(os.urandom(32))
    )
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    connectors.create(HOOK, "WEBHOOK", Settings(webhook_url="http://127.0.0.1:9/hook"), secret)
    identity = Identity(store)
    for customer in (ERASED, BYSTANDER):
        identity.event(
            customer,
            ev.CustomerRegistered(
                customer_id=customer, site_id="shop", profile=ipb.Profile(given_name="Taro")
            ),
        )
    identity.event(ERASED, ev.CustomerErased(customer_id=ERASED))

    ProfileSyncApplication(store, connectors).replay(HOOK, 0)

    due = store.due(HOOK, LATER, 10)
    assert [(d.customer_id, d.type) for d in due] == [
        (BYSTANDER, "customer.upserted"),
        (ERASED, "customer.deleted"),
    ]
