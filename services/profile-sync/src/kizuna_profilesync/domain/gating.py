"""Consent gating: what one connector should receive when one customer changes.

A connector sees a customer while the customer is ACTIVE, registered, and every one of
the connector's required statements is GRANTED. Losing that (a withdrawal, an erasure, a
merge for the merged id) gives a deletion, but only to a connector that could see the
customer before: no deletion is ever sent about someone never sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from kizuna_profilesync.domain.profile import JsonValue, Profile, ProfileStatus, select


class EventType(StrEnum):
    """The change kinds a connector can subscribe to (`event_types`; empty means all)."""

    UPSERTED = "customer.upserted"
    DELETED = "customer.deleted"


class DeleteReason(StrEnum):
    CONSENT = "consent"
    ERASED = "erased"
    MERGED = "merged"


class Audience(Protocol):
    """What gating needs of a connector; the Connector aggregate has these attributes."""

    @property
    def event_types(self) -> Sequence[str]: ...

    @property
    def required_statements(self) -> Sequence[str]: ...

    @property
    def fields(self) -> Sequence[str]: ...


@dataclass(frozen=True, slots=True)
class Delivery:
    type: EventType
    customer_id: str
    # UPSERT: the connector's fields of the customer; DELETE: {"reason": ...} only.
    data: Mapping[str, JsonValue]


def visible(audience: Audience, profile: Profile | None) -> bool:
    """May this connector hold this customer's data right now?"""
    return (
        profile is not None and profile.active and profile.grants_all(audience.required_statements)
    )


def wants(audience: Audience, event_type: EventType) -> bool:
    return not audience.event_types or event_type.value in audience.event_types


def decide(
    audience: Audience,
    before: Profile | None,
    after: Profile | None,
    *,
    was_sent: bool | None = None,
) -> Delivery | None:
    """The delivery one change of one customer gives this connector, or None.

    `was_sent` overrides "could the connector see `before`?" when the executor tracks what
    each connector was actually sent (e.g. a connector created after the customer's last
    upsert). Left None, it is `visible(audience, before)`.
    """
    previously = visible(audience, before) if was_sent is None else was_sent
    if visible(audience, after):
        assert after is not None
        data = select(after, audience.fields)
        if previously and before is not None and select(before, audience.fields) == data:
            return None  # the change is in fields or statements this connector ignores
        if not wants(audience, EventType.UPSERTED):
            return None
        return Delivery(EventType.UPSERTED, after.customer_id, data)
    if not previously or not wants(audience, EventType.DELETED):
        return None
    subject = after or before
    if subject is None:
        return None  # was_sent=True about a customer we hold nothing of: nothing to name
    return Delivery(EventType.DELETED, subject.customer_id, {"reason": delete_reason(after).value})


def delete_reason(after: Profile | None) -> DeleteReason:
    if after is None or after.status == ProfileStatus.ERASED:
        return DeleteReason.ERASED
    if after.status == ProfileStatus.MERGED:
        return DeleteReason.MERGED
    return DeleteReason.CONSENT
