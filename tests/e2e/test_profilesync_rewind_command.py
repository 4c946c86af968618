"""`python -m kizuna_profilesync rewind` as an operator runs it after a consent restore,
against the data the stopped service left (SQLite in its data directory)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kizuna_kit.eventstore import eventsourcing_env
from kizuna_profilesync.application import ProfileSyncApplication
from kizuna_profilesync.connectors import ConnectorsApplication
from kizuna_profilesync.domain.connector import Settings
from kizuna_profilesync.secret_box import SecretBox, write_new_key
from kizuna_profilesync.storage.factory import open_store
from tests.unit.profilesync.builders import ALICE, consent, registered

pytestmark = pytest.mark.e2e

LATER = datetime(2100, 1, 1, tzinfo=UTC)


def command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kizuna_profilesync", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_rewind_command_forgets_the_lost_records_and_tells_the_connectors(
    tmp_path: Path,
) -> None:
    key = tmp_path / "secrets.key"
    write_new_key(key)
    env = {
        **os.environ,
        "KIZUNA_DATA_DIR": str(tmp_path),
        "KIZUNA_PROFILESYNC_SECRETS_KEY_FILE": str(key),
    }
    # What the service left: Alice registered, granted (position 1) and withdrew
    # (position 2), all sent to a connector that needs the grant.
    store = open_store(None, tmp_path / "profilesync.sqlite", pool_size=1)
    connectors = ConnectorsApplication(
        eventsourcing_env(None, tmp_path / "profilesync-connectors.sqlite"),
        SecretBox.from_file(key),
    )
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    needs = Settings(webhook_url="http://127.0.0.1:9/hook", required_statements=("news",))
    connectors.create("hook", "WEBHOOK", needs, secret)
    app = ProfileSyncApplication(store, connectors)
    app.project("IDENTITY", registered(ALICE, position=1))
    app.project("CONSENT", consent(ALICE, "news", sequence=1))
    app.project("CONSENT", consent(ALICE, "news", sequence=2, granted=False))
    while due := store.due("hook", LATER, 10):
        store.mark_delivered_many("hook", [d.delivery_id for d in due], LATER)
    connectors.close()
    store.close()

    assert command(env, "rewind", "--stream", "LEDGER", "--after", "1").returncode == 2
    assert command(env, "rewind", "--stream", "IDENTITY", "--after", "1").returncode == 2
    assert command(env, "rewind", "--stream", "CONSENT", "--after", "-1").returncode == 2
    no_key = command({**env, "KIZUNA_PROFILESYNC_SECRETS_KEY_FILE": ""}, "rewind",
                     "--stream", "CONSENT", "--after", "1")  # fmt: skip
    assert no_key.returncode == 2
    assert "KIZUNA_PROFILESYNC_SECRETS_KEY_FILE" in no_key.stderr
    assert "Traceback" not in no_key.stderr

    done = command(env, "rewind", "--stream", "CONSENT", "--after", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "CONSENT: forgot 1 events past position 1; 1 profiles changed, 1 deliveries queued"
    )
    again = command(env, "rewind", "--stream", "CONSENT", "--after", "1")
    assert again.returncode == 0, again.stderr
    assert "forgot 0 events" in again.stdout

    store = open_store(None, tmp_path / "profilesync.sqlite", pool_size=1)
    try:
        assert store.positions() == {"IDENTITY": 1, "CONSENT": 1}
        (upsert,) = store.due("hook", LATER, 10)
        assert (upsert.delivery_id, upsert.type) == (
            "consent-rewind:1/" + ALICE,
            "customer.upserted",
        )
    finally:
        store.close()
