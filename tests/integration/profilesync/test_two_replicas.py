"""Two profile-sync replicas on one store and one connectors' log: what an operator
changes through one (the gRPC Service balances calls over both) is what the other,
holding the consumers and the delivery worker, acts on."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna_kit.eventstore import eventsourcing_env
from kizuna_profilesync import application
from kizuna_profilesync.application import ProfileSyncApplication
from kizuna_profilesync.connectors import ConnectorsApplication
from kizuna_profilesync.domain.connector import Settings
from kizuna_profilesync.secret_box import SecretBox
from kizuna_profilesync.storage.factory import open_store
from kizuna_profilesync.storage.interface import OutgoingDelivery, Target
from tests.unit.profilesync.builders import ALICE, BOB, CAROL, registered

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
KEY = b"s" * 32


def replica(tmp_path: Path) -> ProfileSyncApplication:
    store = open_store(None, tmp_path / "profilesync.sqlite", pool_size=2)
    env = eventsourcing_env(None, tmp_path / "connectors.sqlite", pool_size=2)
    return ProfileSyncApplication(store, ConnectorsApplication(env, SecretBox(KEY)))


def add_webhook(app: ProfileSyncApplication, connector_id: str) -> None:
    url = f"http://127.0.0.1:9/{connector_id}"
    settings = Settings(webhook_url=url, fields=("given_name",))
    app.connectors.create(connector_id, "WEBHOOK", settings, SECRET)


def queued(app: ProfileSyncApplication, connector_id: str) -> list[str]:
    later = datetime.now(UTC) + timedelta(days=1)
    return [d.customer_id for d in app.store.due(connector_id, later, 100)]


def test_connector_changes_through_one_replica_reach_the_other(tmp_path: Path) -> None:
    worker, api = replica(tmp_path), replica(tmp_path)
    add_webhook(api, "crm")
    add_webhook(api, "old")
    worker.project("IDENTITY", registered(ALICE, position=1, given_name="Hanako"))
    assert queued(worker, "crm") == [ALICE]  # the worker has read the connectors now

    api.connectors.pause("crm", "receiver maintenance")
    api.delete_connector("old")
    add_webhook(api, "erp")
    worker.project("IDENTITY", registered(BOB, position=2, given_name="Taro"))

    live = worker.connectors.live()
    assert live["crm"].paused
    assert sorted(live) == ["crm", "erp"]
    assert queued(worker, "erp") == [BOB]
    assert queued(worker, "old") == []

    add_webhook(api, "old")  # a deleted connector's id, taken again
    worker.project("IDENTITY", registered(CAROL, position=3, given_name="Jiro"))
    assert queued(worker, "old") == [CAROL]


def test_an_event_applied_during_a_replay_on_another_replica_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, api = replica(tmp_path), replica(tmp_path)
    add_webhook(api, "crm")
    worker.project("IDENTITY", registered(ALICE, position=1, given_name="Hanako"))
    replay = application._replayed
    applies: list[threading.Thread] = []
    applied = threading.Event()

    def apply_bob() -> None:
        worker.project("IDENTITY", registered(BOB, position=2, given_name="Taro"))
        applied.set()

    def replayed_while_bob_arrives(
        target: Target, from_seq: int, inbox: Iterator[tuple[int, Envelope]]
    ) -> tuple[list[OutgoingDelivery], dict[str, bytes | None]]:
        result = replay(target, from_seq, inbox)  # the inbox as read holds Alice only
        applies.append(threading.Thread(target=apply_bob))
        applies[0].start()
        applied.wait(0.5)  # the replay's transaction holds Bob's apply off meanwhile
        return result

    monkeypatch.setattr(application, "_replayed", replayed_while_bob_arrives)
    assert api.replay("crm", 1) == 1
    applies[0].join()

    assert applied.is_set()
    assert queued(worker, "crm") == [ALICE, BOB]
