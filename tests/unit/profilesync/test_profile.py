"""Profile paths: which a connector may select, and what selecting gives."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from kizuna_profilesync.domain.profile import (
    LinkedIdentity,
    PostalAddress,
    Profile,
    ProfileFields,
    UnknownField,
    check_field_path,
    rfc3339,
    select,
)

from .builders import ALICE, entry

PERSON = Profile(
    customer_id=ALICE,
    fields=ProfileFields(
        given_name="Hanako",
        postal_address=PostalAddress(postal_code="100-0001", country="JP"),
        attributes={"tier": "gold", "age": "30"},
    ),
    login_ids=("a@example.com",),
    linked_identities=(LinkedIdentity("line", "U1"),),
    sites=("ec",),
    consents={"terms": entry()},
    identity_version=1,
)


@pytest.mark.parametrize(
    "path",
    [
        "given_name",
        "postal_address",
        "postal_address.region",
        "attributes",
        "attributes.a.b-c",
        "login_ids",
        "linked_identities",
        "sites",
        "consents",
    ],
)
def test_known_paths(path: str) -> None:
    assert check_field_path(path) == path


@pytest.mark.parametrize(
    "path", ["", "password", "postal_address.city", "attributes.", "attributes.a b", "sites.0"]
)
def test_unknown_paths(path: str) -> None:
    with pytest.raises(UnknownField):
        check_field_path(path)


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        (["given_name"], {"given_name": "Hanako"}),
        (["phone"], {"phone": ""}),
        (["postal_address.country"], {"postal_address": {"country": "JP"}}),
        (
            ["postal_address.country", "postal_address"],
            {
                "postal_address": {
                    "postal_code": "100-0001",
                    "region": "",
                    "locality": "",
                    "street": "",
                    "country": "JP",
                }
            },
        ),
        (["attributes.tier", "attributes.none"], {"attributes": {"tier": "gold", "none": ""}}),
        (["attributes"], {"attributes": {"age": "30", "tier": "gold"}}),
        (["linked_identities"], {"linked_identities": [{"provider": "line", "external_id": "U1"}]}),
        (["sites", "login_ids"], {"sites": ["ec"], "login_ids": ["a@example.com"]}),
    ],
)
def test_select(paths: list[str], expected: dict[str, object]) -> None:
    assert select(PERSON, paths) == expected


def test_rfc3339_is_utc_fixed_width() -> None:
    tokyo = timezone(timedelta(hours=9))
    assert rfc3339(datetime(2025, 4, 1, 9, 0, tzinfo=tokyo)) == "2025-04-01T00:00:00.000000Z"
    with pytest.raises(ValueError):
        rfc3339(datetime(2025, 4, 1))
