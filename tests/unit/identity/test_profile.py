"""Profile rules: pure functions, table-style."""

from __future__ import annotations

import pytest

from kizuna_identity.domain.profile import (
    InvalidProfile,
    UnknownField,
    check_field_path,
    check_profile,
    clean,
    fill_missing,
    merge_update,
    missing_fields,
    normalise_login_id,
)

ADDRESS = {"postal_code": "100-0001", "locality": "Chiyoda", "street": "1-1", "country": "JP"}


@pytest.mark.parametrize(
    ("profile", "required", "missing"),
    [
        ({}, ["given_name"], ["given_name"]),
        ({"given_name": "Taro"}, ["given_name", "family_name"], ["family_name"]),
        ({"postal_address": {"country": "JP"}}, ["postal_address"], ["postal_address"]),
        ({"postal_address": ADDRESS}, ["postal_address"], []),
        ({"postal_address": {"country": "JP"}}, ["postal_address.country"], []),
        ({"attributes": {"rank": "gold"}}, ["attributes.rank", "attributes.x"], ["attributes.x"]),
    ],
)
def test_missing_fields(
    profile: dict[str, object], required: list[str], missing: list[str]
) -> None:
    assert missing_fields(profile, required) == missing


@pytest.mark.parametrize(
    "path", ["given_name", "postal_address", "postal_address.street", "attributes.rank"]
)
def test_known_paths(path: str) -> None:
    check_field_path(path)


@pytest.mark.parametrize(
    "path", ["shoe_size", "attributes", "attributes.", "postal_address.planet", "password"]
)
def test_unknown_paths(path: str) -> None:
    with pytest.raises(UnknownField):
        check_field_path(path)


@pytest.mark.parametrize(
    "profile",
    [
        {"phone": "call me"},
        {"birthdate": "1990-02-30"},
        {"birthdate": "2999-01-01"},
        {"locale": "not a locale"},
        {"postal_address": {"country": "Japan"}},
        {"attributes": {"bad key!": "x"}},
        {"given_name": "x" * 201},
    ],
)
def test_invalid_profiles(profile: dict[str, object]) -> None:
    with pytest.raises(InvalidProfile):
        check_profile(profile)


def test_update_without_mask_sets_non_empty_fields() -> None:
    result, changed = merge_update(
        {"given_name": "Taro", "phone": "+81 3"}, {"given_name": "Jiro", "phone": ""}, []
    )
    assert result == {"given_name": "Jiro", "phone": "+81 3"}
    assert changed == ["given_name"]


def test_update_with_mask_clears_and_sets_exactly() -> None:
    result, changed = merge_update(
        {"given_name": "Taro", "phone": "+81 3", "attributes": {"a": "1", "b": "2"}},
        {"given_name": "ignored", "attributes": {"b": "3"}},
        ["phone", "attributes.b"],
    )
    assert result == {"given_name": "Taro", "attributes": {"a": "1", "b": "3"}}
    assert changed == ["phone", "attributes.b"]


def test_fill_missing_keeps_the_survivor_first() -> None:
    survivor = {"given_name": "Taro", "attributes": {"rank": "gold"}}
    other = {
        "given_name": "T.",
        "phone": "+81",
        "postal_address": ADDRESS,
        "attributes": {"rank": "x", "y": "1"},
    }
    assert fill_missing(survivor, other) == {
        "given_name": "Taro",
        "phone": "+81",
        "postal_address": ADDRESS,
        "attributes": {"rank": "gold", "y": "1"},
    }


def test_login_ids_are_normalised() -> None:
    assert normalise_login_id("  Tanaka@Example.JP ") == "tanaka@example.jp"


def test_blank_values_are_empty_and_values_are_trimmed() -> None:
    given = {
        "given_name": "   ",
        "family_name": " Tanaka ",
        "postal_address": {"country": " JP", "street": "\t"},
        "attributes": {"rank": " ", "tier": "gold "},
    }
    cleaned = clean(given)
    assert cleaned == {
        "family_name": "Tanaka",
        "postal_address": {"country": "JP"},
        "attributes": {"tier": "gold"},
    }
    assert missing_fields(cleaned, ["given_name", "attributes.rank"]) == [
        "given_name",
        "attributes.rank",
    ]
