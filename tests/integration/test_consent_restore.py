"""Restoring the consent database from a dump, as docs/operating.md describes: pg_dump,
more traffic (a record, an erasure), pg_restore into an empty database, the CONSENT
stream and consent's durable consumer on IDENTITY deleted, profile-sync rewound,
consent and profile-sync started again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import nats
import psycopg
import pytest

from kizuna.consent.v1 import consent_pb2 as cpb
from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna.identity.v1 import identity_pb2 as ipb
from kizuna.profilesync.v1 import profilesync_pb2 as ppb
from kizuna_consent.identity_events import DURABLE
from kizuna_consent.wire import STREAM
from kizuna_kit.natsd import NatsServer
from kizuna_kit.testing.postgres import PostgresCluster, find_pg_bin_dir
from kizuna_kit.testing.waiting import eventually
from kizuna_profilesync.maintenance import main as profilesync_maintenance
from tests.conftest import Keys
from tests.integration.consent.service import Consent, publish, running_consent
from tests.integration.identity.conftest import identity_with_relay, register_at_shop
from tests.integration.profilesync.service import (
    SECRET,
    Receiver,
    running_profilesync,
    running_receiver,
)

pytestmark = pytest.mark.integration
STATEMENT = "marketing-email"


def grant(subject: str, ip: str, decision: int = cpb.DECISION_GRANTED) -> cpb.RecordConsentRequest:
    return cpb.RecordConsentRequest(
        subject_id=subject,
        statement_id=STATEMENT,
        version="1.0",
        decision=decision,  # type: ignore[arg-type]
        evidence=cpb.Evidence(ip=ip),
    )


async def pg_tool(tool: str, *args: str) -> None:
    process = await asyncio.create_subprocess_exec(str(find_pg_bin_dir() / tool), *args)
    assert await process.wait() == 0, tool


async def restore(dump: Path, restored_url: str, nats_url: str) -> None:
    """docs/operating.md's steps 1-3, with consent stopped: the dump into an empty
    database, then the CONSENT stream and consent's durable consumer on IDENTITY gone."""
    await pg_tool("pg_restore", "-d", restored_url, str(dump))
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        await js.delete_stream(STREAM)
        await js.delete_consumer("IDENTITY", DURABLE)
    finally:
        await client.close()


async def history(consent: Consent, subject: str) -> list[cpb.ListConsentHistoryResponse]:
    return await consent.stream(
        "ListConsentHistory", cpb.ListConsentHistoryRequest(subject_id=subject)
    )


def shredded(records: list[cpb.ListConsentHistoryResponse]) -> bool:
    """Tanaka's one record, its evidence unreadable."""
    return len(records) == 1 and records[0].record.evidence_shredded


async def consent_positions(nats_url: str) -> list[int]:
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        last = (await js.stream_info(STREAM)).state.last_seq
        return [
            Envelope.FromString((await js.get_msg(STREAM, seq=s)).data or b"").position
            for s in range(1, last + 1)
        ]
    finally:
        await client.close()


async def test_a_restored_ledger_catches_up_and_publishes_in_order(
    tmp_path: Path,
    keys: Keys,
    postgres_cluster: PostgresCluster,
    postgres_url: str,
    nats_server: NatsServer,
) -> None:
    auth = Keys.auth(keys.admin)
    dump = tmp_path / "consent.dump"
    restored_url = postgres_cluster.create_database("consent_restored")
    async with identity_with_relay(tmp_path / "identity", keys, nats_server.url) as ids:
        tanaka = await register_at_shop(ids, keys, "tanaka@example.jp")
        sato = await register_at_shop(ids, keys, "sato@example.jp")
        async with running_consent(
            tmp_path / "consent", keys, postgres_url, nats_server.url
        ) as consent:
            await publish(consent, STATEMENT, "1.0")
            await consent.call("RecordConsent", grant(tanaka, "198.51.100.1"))
            await consent.call("RecordConsent", grant(sato, "198.51.100.2"))
            await pg_tool("pg_dump", "-Fc", "-f", str(dump), postgres_url)
            # After the backup: a record that the restore loses, and an erasure that
            # identity's stream still holds.
            lost = await consent.call("RecordConsent", grant(sato, "198.51.100.3"))
            await ids.EraseCustomer(
                ipb.EraseCustomerRequest(customer_id=tanaka, reason="art. 17"), metadata=auth
            )

            async def erased() -> bool:
                return shredded(await history(consent, tanaka))

            await eventually(erased, within=30)
            published_before = await consent_positions(nats_server.url)

        await restore(dump, restored_url, nats_server.url)

        async with running_consent(
            tmp_path / "consent", keys, restored_url, nats_server.url
        ) as consent:
            # The erasure after the backup comes again from IDENTITY.
            async def erased_again() -> bool:
                return shredded(await history(consent, tanaka))

            await eventually(erased_again, within=30)
            await consent.fails(
                "RecordConsent",
                grant(tanaka, "198.51.100.4"),
                grpc.StatusCode.FAILED_PRECONDITION,
                "SUBJECT_ERASED",
            )
            assert [h.record.evidence.ip for h in await history(consent, sato)] == ["198.51.100.2"]
            verified = await consent.call("VerifyLedger", cpb.VerifyLedgerRequest())
            assert (verified.ok, verified.records_checked) == (True, 2)
            again = await consent.call("RecordConsent", grant(sato, "198.51.100.5"))
            assert again.sequence == lost.sequence == 3
            expected = await consent.call("VerifyLedger", cpb.VerifyLedgerRequest())
            assert expected.records_checked == 3

            async def republished() -> bool:
                positions = await consent_positions(nats_server.url)
                return len(positions) == len(published_before)

            # The re-created stream holds the restored log once, in order, then the new
            # record: as many events as before the restore (the lost record's place is
            # taken by the new one).
            await eventually(republished, within=30)
            positions = await consent_positions(nats_server.url)
            assert positions == sorted(set(positions)) == list(range(1, len(positions) + 1))
    postgres_cluster.drop_database("consent_restored")


async def test_profilesync_follows_the_restored_ledger_after_a_rewind(
    tmp_path: Path,
    keys: Keys,
    postgres_cluster: PostgresCluster,
    postgres_url: str,
    nats_server: NatsServer,
) -> None:
    dump = tmp_path / "consent.dump"
    restored_url = postgres_cluster.create_database("consent_restored_for_profilesync")
    sync_dir = tmp_path / "profilesync"  # profile-sync on SQLite there
    receiver = Receiver()  # it drops a webhook id it has seen, as a receiver should
    withdraw = cpb.DECISION_WITHDRAWN
    async with (
        identity_with_relay(tmp_path / "identity", keys, nats_server.url) as ids,
        running_receiver(receiver),
    ):
        sato = await register_at_shop(ids, keys, "sato@example.jp", given_name="Hanako")

        async def sent() -> bool:
            return sato in receiver.state

        async def withdrawn() -> bool:
            return sato not in receiver.state and len(receiver.applied) > 1

        async with (
            running_consent(tmp_path / "consent", keys, postgres_url, nats_server.url) as consent,
            running_profilesync(sync_dir, keys, None, nats_server.url) as sync,
        ):
            await sync.call(
                "CreateConnector",
                ppb.CreateConnectorRequest(
                    connector_id="crm",
                    kind=ppb.CONNECTOR_KIND_WEBHOOK,
                    fields=["given_name"],
                    required_statements=[STATEMENT],
                    webhook=ppb.WebhookConfig(
                        url=f"http://127.0.0.1:{receiver.port}/", secret=SECRET
                    ),
                ),
            )
            await publish(consent, STATEMENT, "1.0")
            await consent.call("RecordConsent", grant(sato, "198.51.100.1"))
            await eventually(sent, within=30)
            await pg_tool("pg_dump", "-Fc", "-f", str(dump), postgres_url)
            # After the backup: Sato withdraws; the restore loses it.
            lost = await consent.call("RecordConsent", grant(sato, "198.51.100.2", withdraw))
            await eventually(withdrawn, within=30)

        await restore(dump, restored_url, nats_server.url)
        with psycopg.connect(restored_url) as db:
            row = db.execute("SELECT outbox_position FROM ledger_head").fetchone()
            assert row is not None
            restored_position = int(row[0])
        env = {
            "KIZUNA_DATA_DIR": str(sync_dir),
            "KIZUNA_PROFILESYNC_SECRETS_KEY_FILE": str(sync_dir / "secrets.key"),
        }
        rewind = ["rewind", "--stream", "CONSENT", "--after", str(restored_position)]
        assert profilesync_maintenance(rewind, env) == 0

        async with (
            running_consent(tmp_path / "consent", keys, restored_url, nats_server.url) as consent,
            running_profilesync(sync_dir, keys, None, nats_server.url) as sync,
        ):
            # The restored ledger still has Sato's grant: the connector gets her back.
            await eventually(sent, within=30)
            assert f"consent-rewind:1/{sato}" in receiver.seen
            # She withdraws again: a new record at the lost one's position, delivered
            # under an id of its own (the receiver would drop a repeated one).
            again = await consent.call("RecordConsent", grant(sato, "198.51.100.3", withdraw))
            assert again.sequence == lost.sequence
            await eventually(withdrawn, within=30)
            assert receiver.duplicates == 0
            assert any(i.startswith("consent:") and i.endswith("~1") for i in receiver.seen)
            profile = await sync.call("GetProfile", ppb.GetProfileRequest(customer_id=sato))
            assert [c.status for c in profile.profile.consents] == [ppb.CONSENT_STATUS_WITHDRAWN]
    postgres_cluster.drop_database("consent_restored_for_profilesync")
