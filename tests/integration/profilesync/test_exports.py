"""File exports on a real store: each file is a whole snapshot of who the connector may
have now, and replaces the connector's earlier files (not another connector's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kizuna_kit.eventstore import eventsourcing_env
from kizuna_profilesync.application import ProfileSyncApplication
from kizuna_profilesync.connectors import ConnectorsApplication
from kizuna_profilesync.domain.connector import Settings
from kizuna_profilesync.secret_box import SecretBox
from kizuna_profilesync.storage.factory import open_store
from tests.unit.profilesync.builders import ALICE, BOB, registered

pytestmark = pytest.mark.integration


def test_an_export_replaces_the_connectors_earlier_files(tmp_path: Path) -> None:
    store = open_store(None, tmp_path / "profilesync.sqlite", pool_size=2)
    env = eventsourcing_env(None, tmp_path / "connectors.sqlite", pool_size=2)
    app = ProfileSyncApplication(store, ConnectorsApplication(env, SecretBox(b"s" * 32)))
    directory = tmp_path / "exports"
    for connector_id in ("etl", "etl-00000000000000000001"):
        settings = Settings(directory=str(directory), export_format="JSONL", fields=("given_name",))
        app.connectors.create(connector_id, "FILE_EXPORT", settings, "")
    app.project("IDENTITY", registered(ALICE, position=1, given_name="Hanako"))
    other = app.run_export("etl-00000000000000000001")
    first = app.run_export("etl")
    app.project("IDENTITY", registered(BOB, position=2, login="b@example.jp", given_name="Taro"))

    second = app.run_export("etl")

    assert second.path != first.path
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [other.path.name, second.path.name]
    )
    rows = [json.loads(line) for line in second.path.read_text().splitlines()]
    assert [(r["customer_id"], r["given_name"]) for r in rows] == [
        (ALICE, "Hanako"),
        (BOB, "Taro"),
    ]
