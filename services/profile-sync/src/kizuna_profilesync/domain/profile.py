"""The unified profile view: one customer as the projection holds it.

Plain frozen dataclasses; the projection's fold builds new ones instead of mutating.
Connectors pick what they receive by *paths*: a scalar field ("given_name"), a section
("postal_address", "attributes"), one entry of a section ("postal_address.country",
"attributes.tier") or a collection ("login_ids", "linked_identities", "sites", "consents").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class ProfileStatus(StrEnum):
    ACTIVE = "ACTIVE"
    MERGED = "MERGED"
    ERASED = "ERASED"


class ConsentStatus(StrEnum):
    GRANTED = "GRANTED"
    WITHDRAWN = "WITHDRAWN"
    # Only ever read (statements.resolve): a grant of an older MAJOR than the latest.
    OUTDATED = "OUTDATED"


SCALAR_FIELDS = ("given_name", "family_name", "phone", "birthdate", "locale")
ADDRESS_FIELDS = ("postal_code", "region", "locality", "street", "country")
COLLECTION_PATHS = ("login_ids", "linked_identities", "sites", "consents")
# Every top-level path, in the fixed order used when a connector selects no fields.
ALL_PATHS = (*SCALAR_FIELDS, "postal_address", "attributes", *COLLECTION_PATHS)
# Same rule as identity's attribute keys, so every key identity accepts is selectable.
ATTRIBUTE_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

JsonValue = Any


@dataclass(frozen=True, slots=True)
class PostalAddress:
    postal_code: str = ""
    region: str = ""
    locality: str = ""
    street: str = ""
    country: str = ""


@dataclass(frozen=True, slots=True)
class ProfileFields:
    """The personal fields. `attributes` is never mutated: the fold replaces it."""

    given_name: str = ""
    family_name: str = ""
    phone: str = ""
    birthdate: str = ""
    locale: str = ""
    postal_address: PostalAddress = PostalAddress()
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, order=True)
class LinkedIdentity:
    provider: str
    external_id: str


@dataclass(frozen=True, slots=True)
class ConsentEntry:
    """The winning ledger record for one statement of one customer."""

    status: ConsentStatus
    version: str
    effective_at: datetime
    recorded_at: datetime
    sequence: int
    record_id: str = ""

    def winner_key(self) -> tuple[datetime, datetime, int]:
        # The consent ledger's rule (kizuna_consent.domain.state.winner_key): the greatest
        # (effective_at, recorded_at, sequence) wins, so arrival order does not matter.
        return (self.effective_at, self.recorded_at, self.sequence)


@dataclass(frozen=True, slots=True)
class Profile:
    customer_id: str
    status: ProfileStatus = ProfileStatus.ACTIVE
    fields: ProfileFields = ProfileFields()
    login_ids: tuple[str, ...] = ()
    linked_identities: tuple[LinkedIdentity, ...] = ()
    sites: tuple[str, ...] = ()
    consents: Mapping[str, ConsentEntry] = field(default_factory=dict)
    merged_into: str = ""
    # Version of the identity aggregate last applied; 0 while only consent records were
    # seen (the CONSENT stream can run ahead of IDENTITY).
    identity_version: int = 0
    identity_position: int = 0
    consent_position: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def registered(self) -> bool:
        return self.identity_version > 0

    @property
    def active(self) -> bool:
        return self.status == ProfileStatus.ACTIVE and self.registered

    def consent_status(self, statement_id: str) -> ConsentStatus | None:
        entry = self.consents.get(statement_id)
        return None if entry is None else entry.status

    def grants_all(self, statement_ids: Iterable[str]) -> bool:
        return all(self.consent_status(s) == ConsentStatus.GRANTED for s in statement_ids)


def check_field_path(path: str) -> str:
    """`path` if a connector may select it; UnknownField otherwise."""
    if path in ALL_PATHS:
        return path
    head, _, key = path.partition(".")
    if head == "postal_address" and key in ADDRESS_FIELDS:
        return path
    if head == "attributes" and ATTRIBUTE_KEY.match(key):
        return path
    raise UnknownField(path)


def effective_paths(paths: Iterable[str]) -> tuple[str, ...]:
    """The paths a connector receives: its own selection, or every path when it has none."""
    chosen = tuple(dict.fromkeys(paths))
    return chosen or ALL_PATHS


def value_at(profile: Profile, path: str) -> JsonValue:
    """The JSON value of one path. Absent values are "" (or empty), so a cleared field is a
    visible change and every row has the same shape."""
    fields = profile.fields
    head, _, key = path.partition(".")
    if head == "postal_address":
        address = fields.postal_address
        if key:
            return str(getattr(address, key))
        return {name: getattr(address, name) for name in ADDRESS_FIELDS}
    if head == "attributes":
        if key:
            return fields.attributes.get(key, "")
        return dict(sorted(fields.attributes.items()))
    if path in SCALAR_FIELDS:
        return str(getattr(fields, path))
    if path == "login_ids":
        return list(profile.login_ids)
    if path == "linked_identities":
        return [
            {"provider": i.provider, "external_id": i.external_id}
            for i in profile.linked_identities
        ]
    if path == "sites":
        return list(profile.sites)
    if path == "consents":
        return {
            sid: {
                "status": entry.status.value,
                "version": entry.version,
                "effective_at": rfc3339(entry.effective_at),
            }
            for sid, entry in sorted(profile.consents.items())
        }
    raise UnknownField(path)


def select(profile: Profile, paths: Iterable[str]) -> dict[str, JsonValue]:
    """The nested JSON object of the selected paths ("postal_address.country" lands in
    {"postal_address": {"country": ...}})."""
    data: dict[str, JsonValue] = {}
    for path in effective_paths(paths):
        head, _, key = path.partition(".")
        if key:
            section = data.setdefault(head, {})
            section[key] = value_at(profile, path)
        elif head in data:
            # A sub-path came first; the whole section holds the same values and more.
            data[head] = {**value_at(profile, path), **data[head]}
        else:
            data[head] = value_at(profile, path)
    return data


def rfc3339(instant: datetime) -> str:
    """UTC with microseconds and "Z": one fixed-width text per instant, for stable output."""
    if instant.tzinfo is None:
        raise ValueError("naive datetime: pass an aware (UTC) instant")
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class UnknownField(ValueError):
    def __init__(self, path: str) -> None:
        super().__init__(f"unknown profile field {path!r}")
        self.path = path
