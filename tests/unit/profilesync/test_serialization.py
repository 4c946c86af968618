"""The stored profile document: any Profile reads back equal, field for field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kizuna_profilesync.domain.profile import (
    ConsentEntry,
    ConsentStatus,
    LinkedIdentity,
    PostalAddress,
    Profile,
    ProfileFields,
    ProfileStatus,
)
from kizuna_profilesync.storage.serialization import profile_from_bytes, profile_to_bytes
from tests.unit.profilesync.builders import ALICE, BOB, T0

text = st.text(max_size=12)
ids = st.text(min_size=1, max_size=8)
counters = st.integers(min_value=0, max_value=2**63 - 1)
# Any instant, in UTC or at another offset (it reads back as the same instant, in UTC).
instants = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=9)), timezone(-timedelta(hours=5))]),
)
entries = st.builds(
    ConsentEntry,
    status=st.sampled_from(ConsentStatus),
    version=text,
    effective_at=instants,
    recorded_at=instants,
    sequence=counters,
    record_id=text,
)
profiles = st.builds(
    Profile,
    customer_id=ids,
    status=st.sampled_from(ProfileStatus),
    fields=st.builds(
        ProfileFields,
        given_name=text,
        family_name=text,
        phone=text,
        birthdate=text,
        locale=text,
        postal_address=st.builds(
            PostalAddress,
            postal_code=text,
            region=text,
            locality=text,
            street=text,
            country=text,
        ),
        attributes=st.dictionaries(ids, text, max_size=4),
    ),
    login_ids=st.lists(text, max_size=3).map(tuple),
    linked_identities=st.lists(st.builds(LinkedIdentity, ids, ids), max_size=3).map(tuple),
    sites=st.lists(ids, max_size=3).map(tuple),
    consents=st.dictionaries(ids, entries, max_size=3),
    merged_into=text,
    identity_version=counters,
    identity_position=counters,
    consent_position=counters,
    created_at=st.none() | instants,
    updated_at=st.none() | instants,
)


@given(profiles)
def test_any_profile_round_trips(profile: Profile) -> None:
    back = profile_from_bytes(profile_to_bytes(profile))
    assert back == profile
    # Types, not just equal values: enums, tuples, UTC instants, mapping order.
    assert type(back.status) is ProfileStatus
    assert isinstance(back.login_ids, tuple)
    assert isinstance(back.linked_identities, tuple)
    assert all(isinstance(i, LinkedIdentity) for i in back.linked_identities)
    assert list(back.consents) == list(profile.consents)
    assert list(back.fields.attributes) == list(profile.fields.attributes)
    for entry in back.consents.values():
        assert type(entry.status) is ConsentStatus
        assert entry.effective_at.tzinfo is UTC
    for instant in (back.created_at, back.updated_at):
        assert instant is None or instant.tzinfo is UTC


@given(profiles)
def test_the_same_profile_gives_the_same_bytes(profile: Profile) -> None:
    data = profile_to_bytes(profile)
    assert profile_to_bytes(profile_from_bytes(data)) == data


def test_document_is_compact_utf8_json_with_microsecond_utc_instants() -> None:
    at = T0.astimezone(timezone(timedelta(hours=9))) + timedelta(microseconds=7)
    profile = Profile(
        customer_id=ALICE,
        fields=ProfileFields(family_name="田中", attributes={"tier": "gold"}),
        linked_identities=(LinkedIdentity("line", "U1"),),
        consents={
            "terms": ConsentEntry(ConsentStatus.GRANTED, "1.0", at, at, 3, "r-1"),
        },
        merged_into=BOB,
        created_at=at,
    )
    data = profile_to_bytes(profile)
    assert b" " not in data  # no padding between tokens
    assert "田中".encode() in data  # not \u-escaped
    document = json.loads(data)
    assert document["created_at"] == "2025-04-01T09:00:00.000007Z"
    assert document["consents"]["terms"][2] == "2025-04-01T09:00:00.000007Z"
    assert document["updated_at"] is None
    assert profile_from_bytes(data) == profile


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        profile_to_bytes(Profile(customer_id=ALICE, created_at=datetime(2025, 1, 1)))


def test_unknown_document_format_is_refused() -> None:
    document = json.loads(profile_to_bytes(Profile(customer_id=ALICE)))
    document["v"] = 99
    with pytest.raises(ValueError, match="format"):
        profile_from_bytes(json.dumps(document).encode())
