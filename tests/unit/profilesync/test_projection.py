"""Projection: wire event in -> operations out, and what the fold makes of them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TypedDict

import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from kizuna.consent.v1 import events_pb2 as consent_events
from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna.identity.v1 import events_pb2 as identity_events
from kizuna.identity.v1 import identity_pb2
from kizuna_profilesync.domain.profile import (
    ConsentStatus,
    LinkedIdentity,
    PostalAddress,
    Profile,
    ProfileFields,
    ProfileStatus,
)
from kizuna_profilesync.domain.projection import (
    AbsorbMerged,
    AddSite,
    EraseProfile,
    LinkIdentity,
    MalformedEvent,
    MarkMerged,
    MoveConsents,
    Operation,
    ReplaceFields,
    SetConsent,
    UnlinkIdentity,
    UpsertProfile,
    _evolve,
    _instant,
    apply,
    project,
    resolve_target,
    run,
)
from kizuna_profilesync.domain.projection import fold as fold_in_place

from .builders import (
    ALICE,
    BOB,
    CAROL,
    T0,
    consent,
    entry,
    envelope,
    later,
    pb_profile,
    profile,
    registered,
)

CALLCENTER = identity_pb2.LinkedIdentity(provider="callcenter", external_id="CC-1234")
LINK = LinkedIdentity("callcenter", "CC-1234")


class Common(TypedDict):
    customer_id: str
    position: int
    at: datetime
    aggregate_version: int


def common(customer_id: str = ALICE, position: int = 7, version: int = 3) -> Common:
    return Common(customer_id=customer_id, position=position, at=T0, aggregate_version=version)


def on_alice(payload: Message, customer_id: str = ALICE) -> Envelope:
    return envelope(payload, position=7, aggregate_id=customer_id, version=3)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        pytest.param(
            registered(position=7, given_name="Hanako", addr_country="JP", attr_tier="gold"),
            [
                UpsertProfile(
                    customer_id=ALICE,
                    position=7,
                    at=T0,
                    aggregate_version=1,
                    login_id="a@example.com",
                    site_id="ec",
                    fields=ProfileFields(
                        given_name="Hanako",
                        postal_address=PostalAddress(country="JP"),
                        attributes={"tier": "gold"},
                    ),
                )
            ],
            id="registered",
        ),
        pytest.param(
            on_alice(
                identity_events.CustomerProfileUpdated(
                    customer_id=ALICE,
                    profile=pb_profile(given_name="Hana", attr_empty=""),
                    changed_fields=["given_name"],
                )
            ),
            # Empty attribute values are dropped so equal profiles compare equal.
            [ReplaceFields(**common(), fields=ProfileFields(given_name="Hana"))],
            id="profile-updated",
        ),
        pytest.param(
            on_alice(identity_events.CustomerSiteJoined(customer_id=ALICE, site_id="app")),
            [AddSite(**common(), site_id="app")],
            id="site-joined",
        ),
        pytest.param(
            on_alice(
                identity_events.CustomerIdentityLinked(customer_id=ALICE, identity=CALLCENTER)
            ),
            [LinkIdentity(**common(), identity=LINK)],
            id="linked",
        ),
        pytest.param(
            on_alice(
                identity_events.CustomerIdentityUnlinked(customer_id=ALICE, identity=CALLCENTER)
            ),
            [UnlinkIdentity(**common(), identity=LINK)],
            id="unlinked",
        ),
        pytest.param(
            on_alice(
                identity_events.CustomerAbsorbed(
                    customer_id=ALICE,
                    merged_id=BOB,
                    profile=pb_profile(given_name="Hanako", phone="+81 3 1234 5678"),
                    linked_identities=[CALLCENTER],
                    sites=["store"],
                    login_ids=["b@example.com"],
                )
            ),
            [
                AbsorbMerged(
                    **common(),
                    merged_id=BOB,
                    fields=ProfileFields(given_name="Hanako", phone="+81 3 1234 5678"),
                    linked_identities=(LINK,),
                    sites=("store",),
                    login_ids=("b@example.com",),
                )
            ],
            id="absorbed",
        ),
        pytest.param(
            on_alice(identity_events.CustomerMerged(customer_id=BOB, survivor_id=ALICE), BOB),
            [
                MoveConsents(**common(ALICE, version=0), from_id=BOB),
                MarkMerged(**common(BOB), survivor_id=ALICE),
            ],
            id="merged",
        ),
        pytest.param(
            on_alice(identity_events.CustomerErased(customer_id=ALICE)),
            [EraseProfile(**common())],
            id="erased",
        ),
        pytest.param(
            consent(sequence=5, effective=T0, recorded=later(3)),
            [
                SetConsent(
                    customer_id=ALICE,
                    position=5,
                    at=T0,
                    statement_id="marketing-email",
                    status=ConsentStatus.GRANTED,
                    version="1.0",
                    effective_at=T0,
                    recorded_at=later(3),
                    sequence=5,
                    record_id="rec-5",
                )
            ],
            id="consent-recorded",
        ),
        pytest.param(
            on_alice(identity_events.SiteCreated(site_id="ec", display_name="EC"), "site-ec"),
            [],
            id="site-created-ignored",
        ),
        pytest.param(
            on_alice(identity_events.SitePolicyUpdated(site_id="ec"), "site-ec"),
            [],
            id="site-policy-ignored",
        ),
        pytest.param(
            envelope(
                consent_events.StatementPublished(statement_id="terms", version="1.0"),
                position=1,
                aggregate_id="terms",
                stream="CONSENT",
            ),
            [],
            id="statement-ignored",
        ),
        pytest.param(on_alice(timestamp_pb2.Timestamp(seconds=1)), [], id="unknown-type-ignored"),
    ],
)
def test_project(event: Envelope, expected: list[Operation]) -> None:
    assert project(event) == expected


def _mismatched_type() -> Envelope:
    event = registered()
    event.type = "kizuna.identity.v1.CustomerErased"
    return event


@pytest.mark.parametrize(
    ("event", "message"),
    [
        pytest.param(_mismatched_type(), "envelope type", id="type-mismatch"),
        pytest.param(
            on_alice(identity_events.CustomerErased(customer_id="")), "customer_id", id="no-id"
        ),
        pytest.param(
            on_alice(identity_events.CustomerErased(customer_id=BOB)),
            "names",
            id="aggregate-mismatch",
        ),
        pytest.param(
            on_alice(identity_events.CustomerMerged(customer_id=ALICE)), "survivor_id", id="merge"
        ),
        pytest.param(
            envelope(
                consent_events.ConsentRecorded(subject_id=ALICE, statement_id="terms"),
                position=1,
                aggregate_id=ALICE,
                stream="CONSENT",
            ),
            "no decision",
            id="no-decision",
        ),
    ],
)
def test_malformed_events_raise(event: Envelope, message: str) -> None:
    with pytest.raises(MalformedEvent, match=message):
        project(event)


# --- The fold ---------------------------------------------------------------------------


def fold(events: Iterable[Envelope], start: dict[str, Profile] | None = None) -> dict[str, Profile]:
    """Events through `project` and the reference executor, as the real consumer will;
    checks on the way that a rebuild's in-place fold ends in the same state."""
    profiles = dict(start or {})
    rebuilt = dict(start or {})
    for event in events:
        operations = project(event)
        for customer_id, change in run(profiles, operations).items():
            assert change.after is not None
            profiles[customer_id] = change.after
        fold_in_place(rebuilt, operations)
        assert rebuilt == profiles
    return profiles


def identity_event(payload: Message, customer_id: str, version: int, position: int) -> Envelope:
    return envelope(payload, position=position, aggregate_id=customer_id, version=version)


def test_identity_lifecycle_builds_the_profile() -> None:
    events = [
        registered(position=1, given_name="Hanako"),
        identity_event(
            identity_events.CustomerProfileUpdated(
                customer_id=ALICE, profile=pb_profile(given_name="Hanako", family_name="Tanaka")
            ),
            ALICE,
            2,
            2,
        ),
        identity_event(
            identity_events.CustomerSiteJoined(customer_id=ALICE, site_id="app"), ALICE, 3, 3
        ),
        identity_event(
            identity_events.CustomerSiteJoined(customer_id=ALICE, site_id="ec"), ALICE, 4, 4
        ),
        identity_event(
            identity_events.CustomerIdentityLinked(customer_id=ALICE, identity=CALLCENTER),
            ALICE,
            5,
            5,
        ),
        identity_event(
            identity_events.CustomerIdentityLinked(
                customer_id=ALICE,
                identity=identity_pb2.LinkedIdentity(provider="line", external_id="U1"),
            ),
            ALICE,
            6,
            6,
        ),
        identity_event(
            identity_events.CustomerIdentityUnlinked(customer_id=ALICE, identity=CALLCENTER),
            ALICE,
            7,
            7,
        ),
    ]
    alice = fold(events)[ALICE]
    assert alice.status == ProfileStatus.ACTIVE
    assert alice.fields == ProfileFields(given_name="Hanako", family_name="Tanaka")
    assert alice.sites == ("ec", "app")  # join order, no duplicate
    assert alice.linked_identities == (LinkedIdentity("line", "U1"),)
    assert alice.login_ids == ("a@example.com",)
    assert (alice.identity_version, alice.identity_position) == (7, 7)
    assert alice.registered


def test_redelivered_identity_operation_changes_nothing() -> None:
    alice = fold([registered(given_name="Hanako")])[ALICE]
    stale = ReplaceFields(
        customer_id=ALICE, position=1, at=T0, aggregate_version=1, fields=ProfileFields()
    )
    assert apply(alice, stale) is alice
    assert run({ALICE: alice}, [stale]) == {}


def test_consent_before_registration_is_kept() -> None:
    profiles = fold([consent(granted=True)])
    stub = profiles[ALICE]
    assert not stub.registered
    assert stub.consent_status("marketing-email") == ConsentStatus.GRANTED
    alice = fold([registered(given_name="Hanako")], profiles)[ALICE]
    assert alice.registered
    assert alice.fields.given_name == "Hanako"
    assert alice.consent_status("marketing-email") == ConsentStatus.GRANTED


# Each row: records in arrival order -> the status and sequence that must win.
@pytest.mark.parametrize(
    ("records", "status", "sequence"),
    [
        pytest.param(
            [
                consent(granted=True, sequence=1),
                consent(granted=False, sequence=2, effective=later(1)),
            ],
            ConsentStatus.WITHDRAWN,
            2,
            id="later-effective-wins",
        ),
        pytest.param(
            # A paper form signed earlier, learned later: must not override.
            [
                consent(granted=False, sequence=1, effective=later(10)),
                consent(granted=True, sequence=2, effective=later(1), recorded=later(20)),
            ],
            ConsentStatus.WITHDRAWN,
            1,
            id="late-arriving-earlier-effective-loses",
        ),
        pytest.param(
            [
                consent(granted=True, sequence=2, effective=T0, recorded=later(5)),
                consent(granted=False, sequence=1, effective=T0, recorded=later(2)),
            ],
            ConsentStatus.GRANTED,
            2,
            id="same-effective-later-recorded-wins",
        ),
        pytest.param(
            [
                consent(granted=False, sequence=4, effective=T0, recorded=T0),
                consent(granted=True, sequence=3, effective=T0, recorded=T0),
            ],
            ConsentStatus.WITHDRAWN,
            4,
            id="full-tie-higher-sequence-wins",
        ),
    ],
)
def test_consent_winner_rule(records: list[Envelope], status: ConsentStatus, sequence: int) -> None:
    winner = fold(records)[ALICE].consents["marketing-email"]
    assert (winner.status, winner.sequence) == (status, sequence)


def test_redelivered_consent_returns_the_same_profile() -> None:
    alice = fold([registered(), consent(sequence=1)])[ALICE]
    (op,) = project(consent(sequence=1))
    assert apply(alice, op) is alice


def merged_event(merged: str, survivor: str, version: int = 2, position: int = 50) -> Envelope:
    return identity_event(
        identity_events.CustomerMerged(customer_id=merged, survivor_id=survivor),
        merged,
        version,
        position,
    )


def test_merge_moves_consents_to_the_survivor() -> None:
    profiles = fold(
        [
            registered(ALICE, position=1, given_name="Alice"),
            registered(BOB, position=2, login="b@example.com", given_name="Bob"),
            consent(BOB, "marketing-email", granted=True, sequence=1, effective=later(1)),
            # The survivor's own newer withdrawal of "terms" beats the merged one's grant.
            consent(BOB, "terms", granted=True, sequence=2, effective=later(1)),
            consent(ALICE, "terms", granted=False, sequence=3, effective=later(2)),
            merged_event(BOB, ALICE),
        ]
    )
    alice, bob = profiles[ALICE], profiles[BOB]
    assert alice.consent_status("marketing-email") == ConsentStatus.GRANTED
    assert alice.consent_status("terms") == ConsentStatus.WITHDRAWN
    assert bob.status == ProfileStatus.MERGED
    assert bob.merged_into == ALICE
    assert (bob.consents, bob.login_ids, bob.linked_identities) == ({}, (), ())
    assert bob.fields == ProfileFields()  # as identity, which clears the merged profile


def test_merge_reports_both_customers_as_changed() -> None:
    start = fold([registered(ALICE, position=1), registered(BOB, position=2), consent(BOB)])
    changes = run(start, project(merged_event(BOB, ALICE)))
    assert set(changes) == {ALICE, BOB}
    assert changes[BOB].before == start[BOB]
    survivor = changes[ALICE].after
    assert survivor is not None
    assert survivor.consent_status("marketing-email") == ConsentStatus.GRANTED


def test_consent_arriving_after_the_merge_goes_to_the_survivor() -> None:
    profiles = fold(
        [
            registered(ALICE, position=1),
            registered(BOB, position=2),
            registered(CAROL, position=3),
            merged_event(BOB, ALICE, position=4),
            merged_event(ALICE, CAROL, position=5),  # a chain: BOB -> ALICE -> CAROL
            consent(BOB, granted=True, sequence=9),
        ]
    )
    assert profiles[CAROL].consent_status("marketing-email") == ConsentStatus.GRANTED
    assert profiles[BOB].consents == {}
    assert profiles[ALICE].consents == {}


def test_resolve_target_detects_a_cycle() -> None:
    loop = {
        ALICE: profile(ALICE, status=ProfileStatus.MERGED, merged_into=BOB),
        BOB: profile(BOB, status=ProfileStatus.MERGED, merged_into=ALICE),
    }
    with pytest.raises(MalformedEvent, match="cycle"):
        resolve_target(ALICE, loop.get)


def test_absorb_takes_over_the_merged_customers_data() -> None:
    start = fold(
        [
            registered(ALICE, position=1, login="z@example.com", given_name="Alice"),
            identity_event(
                identity_events.CustomerSiteJoined(customer_id=ALICE, site_id="app"), ALICE, 2, 2
            ),
        ]
    )
    absorbed = identity_event(
        identity_events.CustomerAbsorbed(
            customer_id=ALICE,
            merged_id=BOB,
            profile=pb_profile(given_name="Alice", phone="+81 90 0000 0000"),
            linked_identities=[CALLCENTER],
            sites=["store", "app"],
            login_ids=["b@example.com"],
        ),
        ALICE,
        3,
        3,
    )
    alice = fold([absorbed], start)[ALICE]
    assert alice.fields == ProfileFields(given_name="Alice", phone="+81 90 0000 0000")
    assert alice.sites == ("ec", "app", "store")
    assert alice.login_ids == ("b@example.com", "z@example.com")
    assert alice.linked_identities == (LINK,)


def erased_event(customer_id: str = ALICE, version: int = 2, position: int = 60) -> Envelope:
    return identity_event(
        identity_events.CustomerErased(customer_id=customer_id), customer_id, version, position
    )


def test_erasure_keeps_only_a_tombstone() -> None:
    profiles = fold(
        [
            registered(given_name="Hanako", attr_tier="gold"),
            consent(granted=True),
            erased_event(),
            consent(granted=True, sequence=2, effective=later(5)),  # late: dropped
        ]
    )
    alice = profiles[ALICE]
    assert alice.status == ProfileStatus.ERASED
    assert alice.fields == ProfileFields()
    assert (alice.login_ids, alice.sites, alice.linked_identities) == ((), (), ())
    assert alice.consents == {}
    assert alice.identity_version == 2


def test_erased_profile_is_never_resurrected() -> None:
    tombstone = fold([registered(), erased_event(version=2)])[ALICE]
    late = ReplaceFields(
        customer_id=ALICE,
        position=99,
        at=T0,
        aggregate_version=3,
        fields=ProfileFields(given_name="X"),
    )
    assert apply(tombstone, late) is tombstone


def test_erasure_of_an_unknown_customer_leaves_a_tombstone() -> None:
    profiles = fold([erased_event(version=4), consent(granted=True)])
    assert profiles[ALICE].status == ProfileStatus.ERASED
    assert profiles[ALICE].consents == {}


def test_move_consents_without_source_changes_nothing() -> None:
    alice = profile(ALICE)
    op = MoveConsents(customer_id=ALICE, position=1, at=T0, aggregate_version=0, from_id=BOB)
    assert apply(alice, op, None) is alice
    assert apply(alice, op, profile(BOB)) is alice  # BOB holds no consent


def test_set_consent_on_merged_profile_is_left_to_the_executor() -> None:
    bob = profile(BOB, status=ProfileStatus.MERGED, merged_into=ALICE)
    (op,) = project(consent(BOB))
    assert apply(bob, op) is bob


def test_updated_at_follows_the_event_time() -> None:
    alice = fold([registered()])[ALICE]
    op = AddSite(
        customer_id=ALICE, position=2, at=T0 + timedelta(days=1), aggregate_version=2, site_id="x"
    )
    after = apply(alice, op)
    assert after is not None
    assert after.updated_at == T0 + timedelta(days=1)
    assert (
        replace(
            after,
            updated_at=alice.updated_at,
            sites=alice.sites,
            identity_version=1,
            identity_position=1,
        )
        == alice
    )


def test_entry_builder_matches_set_consent() -> None:
    (op,) = project(consent(sequence=3, effective=later(1), recorded=later(2)))
    assert isinstance(op, SetConsent)
    assert op.entry() == entry(effective=later(1), recorded=later(2), sequence=3)


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(0, 0), (1_743_498_000, 123_456_789), (1_743_498_000, 999), (-86_400, 500_000_001)],
)
def test_instants_read_as_protobuf_reads_them(seconds: int, nanos: int) -> None:
    value = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    ours, theirs = _instant(value), value.ToDatetime(tzinfo=UTC)
    assert (ours, ours.tzinfo) == (theirs, theirs.tzinfo)


def test_evolve_is_dataclasses_replace() -> None:
    before = Profile(customer_id=ALICE, sites=("a",), identity_version=3)
    at = datetime(2025, 1, 1, tzinfo=UTC)
    assert _evolve(before, sites=("a", "b"), identity_version=4, updated_at=at) == replace(
        before, sites=("a", "b"), identity_version=4, updated_at=at
    )
    assert _evolve(before) == before
