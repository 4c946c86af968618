"""A `Profile` as stored: compact UTF-8 JSON, read back to an equal `Profile`.

Written by hand rather than through `dataclasses.asdict`: that would lose the enums,
tuples and datetimes on the way back, and is slow on the projection's hot path. Mapping
order is kept as is (the fold already sorts what it builds); the repeated parts (linked
identities, consent entries) are positional arrays to keep documents small. Instants are ISO 8601 in
UTC with microseconds ("...T09:00:00.000001Z"); a naive datetime is refused, as it has
no instant to store.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from kizuna_profilesync.domain.profile import (
    ConsentEntry,
    ConsentStatus,
    LinkedIdentity,
    PostalAddress,
    Profile,
    ProfileFields,
    ProfileStatus,
)

# Bumped when the layout changes incompatibly; a reader can then convert old documents.
FORMAT = 1

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def profile_to_bytes(profile: Profile) -> bytes:
    fields = profile.fields
    address = fields.postal_address
    document = {
        "v": FORMAT,
        "customer_id": profile.customer_id,
        "status": profile.status.value,
        "fields": {
            "given_name": fields.given_name,
            "family_name": fields.family_name,
            "phone": fields.phone,
            "birthdate": fields.birthdate,
            "locale": fields.locale,
            "postal_address": {
                "postal_code": address.postal_code,
                "region": address.region,
                "locality": address.locality,
                "street": address.street,
                "country": address.country,
            },
            "attributes": dict(fields.attributes),
        },
        "login_ids": list(profile.login_ids),
        "linked_identities": [[i.provider, i.external_id] for i in profile.linked_identities],
        "sites": list(profile.sites),
        "consents": {sid: _entry(entry) for sid, entry in profile.consents.items()},
        "merged_into": profile.merged_into,
        "identity_version": profile.identity_version,
        "identity_position": profile.identity_position,
        "consent_position": profile.consent_position,
        "created_at": _optional_instant(profile.created_at),
        "updated_at": _optional_instant(profile.updated_at),
    }
    return _encoder.encode(document).encode()


def profile_from_bytes(data: bytes) -> Profile:
    document = json.loads(data)
    if document.get("v") != FORMAT:
        raise ValueError(f"unknown profile document format {document.get('v')!r}")
    fields = document["fields"]
    return Profile(
        customer_id=document["customer_id"],
        status=ProfileStatus(document["status"]),
        fields=ProfileFields(
            given_name=fields["given_name"],
            family_name=fields["family_name"],
            phone=fields["phone"],
            birthdate=fields["birthdate"],
            locale=fields["locale"],
            postal_address=PostalAddress(**fields["postal_address"]),
            attributes=fields["attributes"],
        ),
        login_ids=tuple(document["login_ids"]),
        linked_identities=tuple(LinkedIdentity(p, e) for p, e in document["linked_identities"]),
        sites=tuple(document["sites"]),
        consents={sid: _read_entry(e) for sid, e in document["consents"].items()},
        merged_into=document["merged_into"],
        identity_version=document["identity_version"],
        identity_position=document["identity_position"],
        consent_position=document["consent_position"],
        created_at=_read_optional_instant(document["created_at"]),
        updated_at=_read_optional_instant(document["updated_at"]),
    )


def _entry(entry: ConsentEntry) -> list[Any]:
    return [
        entry.status.value,
        entry.version,
        _instant(entry.effective_at),
        _instant(entry.recorded_at),
        entry.sequence,
        entry.record_id,
    ]


def _read_entry(row: list[Any]) -> ConsentEntry:
    status, version, effective_at, recorded_at, sequence, record_id = row
    return ConsentEntry(
        status=ConsentStatus(status),
        version=version,
        effective_at=_read_instant(effective_at),
        recorded_at=_read_instant(recorded_at),
        sequence=sequence,
        record_id=record_id,
    )


def _instant(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("naive datetime in a profile: pass an aware (UTC) instant")
    # isoformat pads the year to four digits (strftime's %Y does not below 1000).
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _read_instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _optional_instant(value: datetime | None) -> str | None:
    return None if value is None else _instant(value)


def _read_optional_instant(text: str | None) -> datetime | None:
    return None if text is None else _read_instant(text)
