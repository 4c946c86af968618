"""Uniqueness of login ids and external ids.

A key aggregate's id is uuid5 of the normalised value, so two claims of one value
meet on one aggregate and the event store's (id, version) constraint lets only
one commit. The value itself is not stored, only who holds it.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from kizuna_identity.domain.ids import derived_id

LOGIN = "login"
EXTERNAL = "external"


def login_key_id(login_id: str) -> UUID:
    return derived_id(LOGIN, login_id)


def external_key_id(provider: str, external_id: str) -> UUID:
    return derived_id(EXTERNAL, f"{provider}\x00{external_id}")


class UniqueKey(Aggregate):
    @staticmethod
    def create_id(key_id: UUID) -> UUID:
        return key_id

    @event("Created")
    def __init__(self, key_id: UUID, owner_id: UUID) -> None:
        self.owner_id: UUID | None = owner_id

    @property
    def is_free(self) -> bool:
        return self.owner_id is None

    def is_held_by(self, customer_id: UUID) -> bool:
        return self.owner_id == customer_id

    @event("Claimed")
    def claim(self, owner_id: UUID) -> None:
        self.owner_id = owner_id

    @event("Released")
    def release(self) -> None:
        self.owner_id = None
