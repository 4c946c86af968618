"""The unified customer: one id across every site, with its logins and linked ids."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from kizuna_identity.domain.errors import IdentityNotLinked, InvalidMerge, NotActive
from kizuna_identity.domain.profile import Profile, fill_missing

ACTIVE = "ACTIVE"
MERGED = "MERGED"
ERASED = "ERASED"

# A linked identity as events carry it: [provider, external_id].
Link = list[str]


class Customer(Aggregate):
    @event("Registered")
    def __init__(
        self, site_id: str, login_id: str, password_hash: str, profile: Profile, channel: str
    ) -> None:
        self.status = ACTIVE
        self.profile = profile
        # login id -> argon2id hash; a survivor of merges can hold several.
        self.credentials: dict[str, str] = {login_id: password_hash}
        self.linked: list[Link] = []
        self.sites: list[str] = [site_id]
        self.channel = channel
        self.merged_into: UUID | None = None
        self.merged_ids: list[UUID] = []

    @property
    def login_ids(self) -> list[str]:
        return sorted(self.credentials)

    def has_link(self, provider: str, external_id: str) -> bool:
        return [provider, external_id] in self.linked

    def update_profile(self, profile: Profile, changed: list[str]) -> None:
        self.check_active()
        if changed:
            self._profile_updated(profile, changed)

    @event("ProfileUpdated")
    def _profile_updated(self, profile: Profile, changed: list[str]) -> None:
        self.profile = profile

    def join_site(self, site_id: str) -> None:
        self.check_active()
        if site_id not in self.sites:
            self._site_joined(site_id)

    @event("SiteJoined")
    def _site_joined(self, site_id: str) -> None:
        self.sites.append(site_id)

    def link(self, provider: str, external_id: str) -> None:
        self.check_active()
        if not self.has_link(provider, external_id):
            self._identity_linked(provider, external_id)

    @event("IdentityLinked")
    def _identity_linked(self, provider: str, external_id: str) -> None:
        self.linked.append([provider, external_id])

    def unlink(self, provider: str, external_id: str) -> None:
        self.check_active()
        if not self.has_link(provider, external_id):
            raise IdentityNotLinked("that identity is not linked to this customer")
        self._identity_unlinked(provider, external_id)

    @event("IdentityUnlinked")
    def _identity_unlinked(self, provider: str, external_id: str) -> None:
        self.linked.remove([provider, external_id])

    def absorb(self, merged: Customer) -> None:
        """Takes the merged customer's logins, linked ids and sites; fills profile gaps."""
        self.check_active()
        check_mergeable(self, merged)
        self._absorbed(
            merged_id=merged.id,
            profile=fill_missing(self.profile, merged.profile),
            credentials=dict(merged.credentials),
            linked=[link for link in merged.linked if link not in self.linked],
            sites=[site for site in merged.sites if site not in self.sites],
        )

    @event("Absorbed")
    def _absorbed(
        self,
        merged_id: UUID,
        profile: Profile,
        credentials: dict[str, str],
        linked: list[Link],
        sites: list[str],
    ) -> None:
        self.profile = profile
        self.credentials.update(credentials)
        self.linked.extend(linked)
        self.sites.extend(sites)
        self.merged_ids.append(merged_id)

    def mark_merged(self, survivor_id: UUID, reason: str) -> None:
        self.check_active()
        self._merged(survivor_id, reason)

    @event("Merged")
    def _merged(self, survivor_id: UUID, reason: str) -> None:
        # The survivor now holds what is kept of this profile; no second copy stays here.
        self.status = MERGED
        self.merged_into = survivor_id
        self.profile = {}
        self.credentials = {}
        self.linked = []

    def erase(self, reason: str) -> None:
        if self.status == ERASED:
            raise NotActive("customer is already erased", status=ERASED)
        self._erased(reason)

    @event("Erased")
    def _erased(self, reason: str) -> None:
        self.status = ERASED
        self.profile = {}
        self.credentials = {}
        self.linked = []
        self.channel = ""

    def check_active(self) -> None:
        if self.status != ACTIVE:
            extra: dict[str, Any] = {"status": self.status}
            if self.merged_into is not None:
                extra["merged_into"] = str(self.merged_into)
            raise NotActive(f"customer is {self.status.lower()}", **extra)


def check_mergeable(survivor: Customer, merged: Customer) -> None:
    if survivor.id == merged.id:
        raise InvalidMerge("a customer cannot be merged into itself")
    if merged.status != ACTIVE:
        raise NotActive(f"merged customer is {merged.status.lower()}", status=merged.status)
