"""Customer profiles as plain dicts (what events carry), and the rules on them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

Profile = dict[str, Any]

SCALAR_FIELDS = ("given_name", "family_name", "phone", "birthdate", "locale")
ADDRESS_FIELDS = ("postal_code", "region", "locality", "street", "country")
# An address counts as given when a letter could reach it; region is optional
# because not every country has one.
ADDRESS_NEEDS = ("postal_code", "locality", "street", "country")
TOP_FIELDS = (*SCALAR_FIELDS, "postal_address", "attributes")

MAX_TEXT = 200
MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_VALUE = 1000
ATTRIBUTE_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
PHONE = re.compile(r"^\+?[0-9 ()-]{5,24}$")
LOCALE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
COUNTRY = re.compile(r"^[A-Z]{2}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalise_login_id(login_id: str) -> str:
    return login_id.strip().lower()


def check_login_id(login_id: str) -> None:
    if len(login_id) > 254 or not EMAIL.match(login_id):
        raise InvalidProfile("login_id must be an email address", fields=["login_id"])


def check_field_path(path: str) -> None:
    """Whether `path` names a profile field a policy or update mask may use."""
    if path in TOP_FIELDS and path != "attributes":
        return
    head, _, key = path.partition(".")
    if head == "attributes" and ATTRIBUTE_KEY.match(key):
        return
    if head == "postal_address" and key in ADDRESS_FIELDS:
        return
    raise UnknownField(f"unknown profile field {path!r}", fields=[path])


def clean(profile: Mapping[str, Any]) -> Profile:
    """The profile with its values trimmed and without empty ones (blank is empty: it
    must not pass for a required field), so that equal profiles compare equal."""
    result: Profile = {}
    for name in SCALAR_FIELDS:
        value = (profile.get(name) or "").strip()
        if value:
            result[name] = value
    address = _trimmed(profile.get("postal_address") or {})
    if address:
        result["postal_address"] = address
    attributes = _trimmed(profile.get("attributes") or {})
    if attributes:
        result["attributes"] = attributes
    return result


def check_profile(profile: Mapping[str, Any]) -> None:
    bad: list[str] = []
    for name in SCALAR_FIELDS:
        value = profile.get(name, "")
        if len(value) > MAX_TEXT:
            bad.append(name)
    if profile.get("phone") and not PHONE.match(profile["phone"]):
        bad.append("phone")
    if profile.get("locale") and not LOCALE.match(profile["locale"]):
        bad.append("locale")
    if profile.get("birthdate") and not _is_past_date(profile["birthdate"]):
        bad.append("birthdate")
    address = profile.get("postal_address") or {}
    for name, value in address.items():
        if len(value) > MAX_TEXT:
            bad.append(f"postal_address.{name}")
    if address.get("country") and not COUNTRY.match(address["country"]):
        bad.append("postal_address.country")
    attributes = profile.get("attributes") or {}
    if len(attributes) > MAX_ATTRIBUTES:
        bad.append("attributes")
    for key, value in attributes.items():
        if not ATTRIBUTE_KEY.match(key) or len(value) > MAX_ATTRIBUTE_VALUE:
            bad.append(f"attributes.{key}")
    if bad:
        raise InvalidProfile(f"invalid profile fields: {', '.join(bad)}", fields=bad)


def _is_past_date(text: str) -> bool:
    try:
        value = date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10 and date(1900, 1, 1) <= value <= date.today()


def _trimmed(values: Mapping[str, str]) -> dict[str, str]:
    return {k: v.strip() for k, v in values.items() if v and v.strip()}


def has_field(profile: Mapping[str, Any], path: str) -> bool:
    head, _, key = path.partition(".")
    if head == "attributes":
        return bool((profile.get("attributes") or {}).get(key))
    if head == "postal_address":
        address = profile.get("postal_address") or {}
        if key:
            return bool(address.get(key))
        return all(address.get(name) for name in ADDRESS_NEEDS)
    return bool(profile.get(path))


def missing_fields(profile: Mapping[str, Any], required: Iterable[str]) -> list[str]:
    return [path for path in required if not has_field(profile, path)]


def merge_update(
    profile: Mapping[str, Any], update: Mapping[str, Any], mask: Iterable[str]
) -> tuple[Profile, list[str]]:
    """The profile after an update, and the paths that changed.

    With a mask, exactly the masked paths are set (an empty value clears);
    without one, every non-empty field of the update is set.
    """
    paths = list(mask)
    if paths:
        for path in paths:
            if path != "attributes":
                check_field_path(path)
    else:
        paths = _present_paths(update)
    result = clean(profile)
    for path in paths:
        _set_path(result, path, update)
    result = clean(result)
    changed = [p for p in paths if _get_path(result, p) != _get_path(clean(profile), p)]
    return result, changed


def fill_missing(survivor: Mapping[str, Any], other: Mapping[str, Any]) -> Profile:
    """The survivor's profile with the fields it lacks taken from the other one."""
    result = clean(survivor)
    other = clean(other)
    for name in SCALAR_FIELDS:
        if name not in result and name in other:
            result[name] = other[name]
    if "postal_address" not in result and "postal_address" in other:
        result["postal_address"] = dict(other["postal_address"])
    attributes = dict(other.get("attributes", {}))
    attributes.update(result.get("attributes", {}))
    if attributes:
        result["attributes"] = attributes
    return result


def _present_paths(update: Mapping[str, Any]) -> list[str]:
    paths = [name for name in SCALAR_FIELDS if update.get(name)]
    if any((update.get("postal_address") or {}).values()):
        paths.append("postal_address")
    paths += [f"attributes.{k}" for k, v in (update.get("attributes") or {}).items() if v]
    return paths


def _get_path(profile: Mapping[str, Any], path: str) -> Any:
    head, _, key = path.partition(".")
    if head in ("attributes", "postal_address"):
        section = profile.get(head) or {}
        return section.get(key) if key else section
    return profile.get(path)


def _set_path(profile: Profile, path: str, update: Mapping[str, Any]) -> None:
    head, _, key = path.partition(".")
    if head in ("attributes", "postal_address"):
        source = update.get(head) or {}
        if not key:
            profile[head] = dict(source)
            return
        section = dict(profile.get(head) or {})
        section[key] = source.get(key, "")
        profile[head] = section
        return
    profile[path] = update.get(path, "")


class InvalidProfile(ValueError):
    def __init__(self, message: str, fields: list[str]) -> None:
        super().__init__(message)
        self.metadata = {"fields": ",".join(fields)}


class UnknownField(InvalidProfile):
    pass
