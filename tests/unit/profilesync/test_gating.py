"""Consent gating: every rule, table-style, plus whole event sequences."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import pytest

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna.identity.v1 import events_pb2 as identity_events
from kizuna_profilesync.domain.connector import Connector, Settings
from kizuna_profilesync.domain.gating import Delivery, EventType, decide, visible
from kizuna_profilesync.domain.profile import ConsentStatus, Profile, ProfileFields, ProfileStatus
from kizuna_profilesync.domain.projection import project, run

from .builders import ALICE, BOB, consent, entry, envelope, later, profile, registered

UPSERTED = EventType.UPSERTED
DELETED = EventType.DELETED


@dataclass(frozen=True)
class Audience:
    required_statements: Sequence[str] = ("marketing-email",)
    fields: Sequence[str] = ("given_name",)
    event_types: Sequence[str] = ()


MARKETING = Audience()
OPEN = Audience(required_statements=())
GRANTED = {"marketing-email": entry(ConsentStatus.GRANTED)}
WITHDRAWN = {"marketing-email": entry(ConsentStatus.WITHDRAWN, sequence=2, effective=later(1))}


def upsert(customer_id: str = ALICE, given_name: str = "Hanako") -> Delivery:
    return Delivery(UPSERTED, customer_id, {"given_name": given_name})


def delete(reason: str, customer_id: str = ALICE) -> Delivery:
    return Delivery(DELETED, customer_id, {"reason": reason})


@pytest.mark.parametrize(
    ("audience", "before", "after", "expected"),
    [
        pytest.param(MARKETING, None, profile(), None, id="registered-without-consent"),
        pytest.param(OPEN, None, profile(), upsert(), id="no-required-statement"),
        pytest.param(MARKETING, profile(), profile(consents=GRANTED), upsert(), id="grant"),
        pytest.param(
            MARKETING,
            profile(consents=GRANTED),
            profile(consents=GRANTED, given_name="Hana"),
            upsert(given_name="Hana"),
            id="selected-field-changed",
        ),
        pytest.param(
            MARKETING,
            profile(consents=GRANTED),
            replace(profile(consents=GRANTED), sites=("ec", "app")),
            None,
            id="unselected-change-invisible",
        ),
        pytest.param(
            MARKETING,
            profile(consents=GRANTED),
            profile(consents={**GRANTED, "terms": entry()}),
            None,
            id="other-statement-invisible",
        ),
        pytest.param(
            MARKETING,
            profile(consents=GRANTED),
            profile(consents=WITHDRAWN),
            delete("consent"),
            id="withdraw",
        ),
        pytest.param(
            MARKETING, profile(), profile(consents=WITHDRAWN), None, id="withdraw-never-sent"
        ),
        pytest.param(
            MARKETING,
            profile(consents=WITHDRAWN),
            profile(consents={"marketing-email": entry(sequence=3, effective=later(2))}),
            upsert(),
            id="re-grant",
        ),
        pytest.param(
            MARKETING,
            profile(consents=GRANTED),
            profile(status=ProfileStatus.ERASED, given_name=""),
            delete("erased"),
            id="erase",
        ),
        pytest.param(
            MARKETING,
            profile(),
            profile(status=ProfileStatus.ERASED, given_name=""),
            None,
            id="erase-never-sent",
        ),
        pytest.param(
            MARKETING,
            profile(consents=GRANTED),
            profile(status=ProfileStatus.MERGED, merged_into=BOB),
            delete("merged"),
            id="merged-away",
        ),
        pytest.param(
            MARKETING,
            profile(consents=WITHDRAWN),
            profile(status=ProfileStatus.MERGED, merged_into=BOB),
            None,
            id="merged-never-sent",
        ),
        pytest.param(
            MARKETING, None, profile(consents=GRANTED, version=0), None, id="consent-only-stub"
        ),
        pytest.param(
            Audience(required_statements=("marketing-email", "terms")),
            None,
            profile(consents=GRANTED),
            None,
            id="needs-every-statement",
        ),
        pytest.param(
            Audience(event_types=("customer.deleted",)),
            profile(),
            profile(consents=GRANTED),
            None,
            id="upserts-not-wanted",
        ),
        pytest.param(
            Audience(event_types=("customer.deleted",)),
            profile(consents=GRANTED),
            profile(consents=WITHDRAWN),
            delete("consent"),
            id="deletes-wanted",
        ),
        pytest.param(MARKETING, None, None, None, id="nothing"),
    ],
)
def test_decide(
    audience: Audience, before: Profile | None, after: Profile | None, expected: Delivery | None
) -> None:
    assert decide(audience, before, after) == expected


def test_was_sent_false_means_no_deletion_and_a_first_upsert() -> None:
    granted = profile(consents=GRANTED)
    assert decide(MARKETING, granted, profile(consents=WITHDRAWN), was_sent=False) is None
    assert decide(MARKETING, granted, granted, was_sent=False) == upsert()


def test_was_sent_true_sends_deletion_even_if_before_looked_invisible() -> None:
    assert decide(MARKETING, profile(), profile(consents=WITHDRAWN), was_sent=True) == delete(
        "consent"
    )


def test_all_fields_when_none_selected() -> None:
    after = profile(consents=GRANTED)
    delivery = decide(Audience(fields=()), None, after)
    assert delivery is not None
    assert list(delivery.data) == [
        "given_name",
        "family_name",
        "phone",
        "birthdate",
        "locale",
        "postal_address",
        "attributes",
        "login_ids",
        "linked_identities",
        "sites",
        "consents",
    ]
    assert delivery.data["consents"] == {
        "marketing-email": {
            "status": "GRANTED",
            "version": "1.0",
            "effective_at": "2025-04-01T09:00:00.000000Z",
        }
    }


def test_visible_requires_active_registered_and_granted() -> None:
    assert visible(MARKETING, profile(consents=GRANTED))
    assert not visible(MARKETING, profile(consents=GRANTED, version=0))
    assert not visible(MARKETING, profile(consents=GRANTED, status=ProfileStatus.MERGED))
    assert not visible(MARKETING, None)


def test_the_connector_aggregate_is_an_audience() -> None:
    connector = Connector.create(
        "crm",
        "WEBHOOK",
        Settings(
            webhook_url="https://crm.example.com/hook",
            secret_ref="ref-1",
            required_statements=("marketing-email",),
            fields=("family_name",),
        ),
    )
    delivery = decide(connector, None, profile(consents=GRANTED))
    assert delivery == Delivery(UPSERTED, ALICE, {"family_name": "Tanaka"})


# --- Whole sequences: events -> projection -> gating, as the executor will run them --------


def deliveries(audience: Audience, events: list[Envelope]) -> list[Delivery]:
    profiles: dict[str, Profile] = {}
    out: list[Delivery] = []
    for event in events:
        for customer_id, change in run(profiles, project(event)).items():
            delivery = decide(audience, change.before, change.after)
            if delivery is not None:
                out.append(delivery)
            assert change.after is not None
            profiles[customer_id] = change.after
    return out


def test_marketing_connector_gets_customer_only_after_grant_and_deletion_on_withdrawal() -> None:
    events = [
        registered(given_name="Hanako"),
        consent(granted=True, sequence=1, effective=later(1)),
        consent(granted=False, sequence=2, effective=later(2)),
        consent(granted=True, sequence=3, effective=later(3)),
    ]
    assert deliveries(MARKETING, events) == [upsert(), delete("consent"), upsert()]


def test_erasure_sends_a_deletion_to_a_connector_that_had_the_customer() -> None:
    erased = envelope(
        identity_events.CustomerErased(customer_id=ALICE), position=9, aggregate_id=ALICE, version=2
    )
    events = [registered(given_name="Hanako"), consent(granted=True), erased]
    assert deliveries(MARKETING, events) == [upsert(), delete("erased")]
    assert deliveries(Audience(required_statements=("terms",)), events) == []


def test_merge_deletes_the_merged_id_and_upserts_the_survivor() -> None:
    merged = envelope(
        identity_events.CustomerMerged(customer_id=BOB, survivor_id=ALICE),
        position=9,
        aggregate_id=BOB,
        version=2,
    )
    events = [
        registered(ALICE, position=1, given_name="Alice"),
        registered(BOB, position=2, login="b@example.com", given_name="Bob"),
        consent(BOB, granted=True),
        merged,
    ]
    got = deliveries(MARKETING, events)
    assert got == [
        upsert(BOB, "Bob"),
        upsert(ALICE, "Alice"),  # Alice inherits Bob's grant
        delete("merged", BOB),
    ]


def test_late_earlier_withdrawal_does_not_delete() -> None:
    events = [
        registered(given_name="Hanako"),
        consent(granted=True, sequence=1, effective=later(10)),
        consent(granted=False, sequence=2, effective=later(1), recorded=later(20)),
    ]
    assert deliveries(MARKETING, events) == [upsert()]


def test_cleared_selected_field_is_sent_empty() -> None:
    # A profile that lost its given name still sends the field, empty: a visible clear.
    before = profile(consents=GRANTED)
    after = replace(before, fields=ProfileFields(family_name="Tanaka"))
    assert decide(MARKETING, before, after) == upsert(given_name="")


def test_was_sent_with_no_profile_at_all_gives_nothing() -> None:
    assert decide(MARKETING, None, None, was_sent=True) is None
