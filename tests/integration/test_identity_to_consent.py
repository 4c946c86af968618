"""Merges and erasures travel from identity to the consent ledger through JetStream."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from kizuna.consent.v1 import consent_pb2 as cpb
from kizuna.identity.v1 import identity_pb2 as ipb
from kizuna_kit.natsd import NatsServer
from kizuna_kit.testing.waiting import eventually
from tests.conftest import Keys
from tests.integration.consent.service import publish, running_consent
from tests.integration.identity.conftest import identity_with_relay, register_at_shop

pytestmark = pytest.mark.integration


async def test_merge_and_erasure_reach_the_ledger(
    tmp_path: Path, keys: Keys, postgres_url: str, nats_server: NatsServer
) -> None:
    auth = Keys.auth(keys.admin)
    async with (
        identity_with_relay(tmp_path / "identity", keys, nats_server.url) as ids,
        running_consent(tmp_path / "consent", keys, postgres_url, nats_server.url) as consent,
    ):
        tanaka = await register_at_shop(ids, keys, "tanaka@example.jp")
        other = await register_at_shop(ids, keys, "t.tanaka@example.com")
        await publish(consent, "marketing-email", "1.0")
        await consent.call(
            "RecordConsent",
            cpb.RecordConsentRequest(
                subject_id=other,
                statement_id="marketing-email",
                version="1.0",
                decision=cpb.DECISION_GRANTED,
                evidence=cpb.Evidence(ip="198.51.100.1", user_agent="App/1.0"),
            ),
        )

        await ids.MergeCustomers(
            ipb.MergeCustomersRequest(survivor_id=tanaka, merged_id=other), metadata=auth
        )

        async def survivor_answers() -> bool:
            reply = await consent.call(
                "GetConsentState", cpb.GetConsentStateRequest(subject_id=other)
            )
            return bool(reply.subject_id == tanaka)

        await eventually(survivor_answers, within=30)
        state = await consent.call("GetConsentState", cpb.GetConsentStateRequest(subject_id=tanaka))
        assert [(e.statement_id, e.status) for e in state.entries] == [
            ("marketing-email", cpb.CONSENT_STATUS_GRANTED)
        ]
        # New consent for the merged id lands on the survivor.
        recorded = await consent.call(
            "RecordConsent",
            cpb.RecordConsentRequest(
                subject_id=other,
                statement_id="marketing-email",
                version="1.0",
                decision=cpb.DECISION_WITHDRAWN,
                evidence=cpb.Evidence(ip="198.51.100.2"),
            ),
        )
        assert recorded.subject_id == tanaka

        await ids.EraseCustomer(
            ipb.EraseCustomerRequest(customer_id=tanaka, reason="art. 17"), metadata=auth
        )

        async def shredded() -> bool:
            history = await consent.stream(
                "ListConsentHistory", cpb.ListConsentHistoryRequest(subject_id=tanaka)
            )
            return len(history) == 2 and all(h.record.evidence_shredded for h in history)

        await eventually(shredded, within=30)
        history = await consent.stream(
            "ListConsentHistory", cpb.ListConsentHistoryRequest(subject_id=tanaka)
        )
        assert "198.51.100" not in str(history)
        verified = await consent.call("VerifyLedger", cpb.VerifyLedgerRequest())
        assert (verified.ok, verified.records_checked) == (True, 2)
        later = cpb.RecordConsentRequest(
            subject_id=other,
            statement_id="marketing-email",
            version="1.0",
            decision=cpb.DECISION_GRANTED,
        )
        await consent.fails(
            "RecordConsent", later, grpc.StatusCode.FAILED_PRECONDITION, "SUBJECT_ERASED"
        )
        # Merges and erasures applied exactly once, whatever JetStream redelivers.
        assert consent.service.store.tracked_position() > 0
