"""Delivery rounds on a real store and connectors, with the HTTP side scripted: a send
that raises something unforeseen is a failed attempt like any other, and one connector's
failing round leaves the other connectors' deliveries sent once each."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest

from kizuna_kit.eventstore import eventsourcing_env
from kizuna_profilesync.application import ProfileSyncApplication
from kizuna_profilesync.connectors import ConnectorsApplication
from kizuna_profilesync.delivery import Deliverer
from kizuna_profilesync.domain.connector import Settings
from kizuna_profilesync.domain.retry import RetryPolicy
from kizuna_profilesync.http1 import Http1Client, Response
from kizuna_profilesync.secret_box import SecretBox
from kizuna_profilesync.storage.factory import open_store
from tests.unit.profilesync.builders import ALICE, registered

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


class ScriptedHttp:
    """Answers 200 after a short wait, or raises `fails_with` for URLs under `failing`."""

    def __init__(self, failing: str = "", fails_with: Exception | None = None) -> None:
        self.failing = failing
        self.fails_with = fails_with
        self.sent: list[tuple[str, str]] = []  # (url, webhook-id)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        if self.fails_with is not None and url.startswith(self.failing):
            raise self.fails_with
        await asyncio.sleep(0.05)  # long enough for a second round to overtake
        self.sent.append((url, headers["webhook-id"]))
        return Response(200, {})


class Clock:
    """An hour later at every reading: every retry is due at the next round."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(hours=1)
        return self.now


def connectors(tmp_path: Path, key: bytes) -> ConnectorsApplication:
    env = eventsourcing_env(None, tmp_path / "connectors.sqlite", pool_size=2)
    return ConnectorsApplication(env, SecretBox(key))


def add_webhook(app: ConnectorsApplication, connector_id: str) -> None:
    url = f"http://127.0.0.1:9/{connector_id}"
    app.create(connector_id, "WEBHOOK", Settings(webhook_url=url, fields=("given_name",)), SECRET)


def sync_app(tmp_path: Path, key: bytes) -> ProfileSyncApplication:
    store = open_store(None, tmp_path / "profilesync.sqlite", pool_size=2)
    return ProfileSyncApplication(store, connectors(tmp_path, key))


async def rounds(deliverer: Deliverer, http: ScriptedHttp, count: int) -> None:
    for _ in range(count):
        await deliverer.deliver_once(cast(Http1Client, http))


async def test_a_send_that_raises_is_a_failed_attempt_and_ends_as_a_dead_letter(
    tmp_path: Path,
) -> None:
    app = sync_app(tmp_path, b"s" * 32)
    add_webhook(app.connectors, "crm")
    app.project("IDENTITY", registered(ALICE, position=1, given_name="Hanako"))
    http = ScriptedHttp("http://127.0.0.1:9/crm", UnicodeEncodeError("ascii", "x", 0, 1, "no"))
    deliverer = Deliverer(app.store, app.connectors, RetryPolicy(max_attempts=2), clock=Clock())

    await rounds(deliverer, http, 3)

    counts = app.store.counts("crm")
    assert (counts.pending, counts.dead) == (0, 1)
    assert counts.last_error == "UnicodeEncodeError"


async def test_one_connectors_failing_round_leaves_the_others_sent_once(tmp_path: Path) -> None:
    # The secrets key was replaced after "crm" was created: its secret no longer opens,
    # so its every round fails. "erp" was created under the new key and works.
    add_webhook(connectors(tmp_path, b"o" * 32), "crm")
    app = sync_app(tmp_path, b"n" * 32)
    add_webhook(app.connectors, "erp")
    app.project("IDENTITY", registered(ALICE, position=1, given_name="Hanako"))
    http = ScriptedHttp()
    deliverer = Deliverer(app.store, app.connectors, RetryPolicy(max_attempts=2), clock=Clock())

    await rounds(deliverer, http, 4)
    await asyncio.sleep(0.2)  # any send a round left behind would land by now

    assert http.sent == [("http://127.0.0.1:9/erp", "identity:1")]
    assert app.store.counts("erp").delivered == 1
    assert app.store.counts("crm").pending == 1  # kept for when the key is put right
