"""A login session, valid at every site of one site group until it expires or is revoked.

The token itself is never stored: the session's id is uuid5 of the token's SHA-256.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from kizuna_identity.domain.ids import derived_id


def session_id(token_digest: str) -> UUID:
    return derived_id("session", token_digest)


class Session(Aggregate):
    @staticmethod
    def create_id(token_digest: str) -> UUID:
        return session_id(token_digest)

    @event("Started")
    def __init__(
        self,
        token_digest: str,
        customer_id: UUID,
        site_id: str,
        site_group: str,
        expires_at: datetime,
    ) -> None:
        self.customer_id = customer_id
        self.site_id = site_id
        self.site_group = site_group
        self.expires_at = expires_at
        self.revoked = False

    def is_valid(self, now: datetime) -> bool:
        return not self.revoked and now < self.expires_at

    def revoke(self) -> None:
        if not self.revoked:
            self._revoked()

    @event("Revoked")
    def _revoked(self) -> None:
        self.revoked = True
