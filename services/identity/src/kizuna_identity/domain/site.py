"""A site (EC, app, store, call centre) with its registration policy."""

from __future__ import annotations

import re
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from kizuna_identity.domain.errors import InvalidValue
from kizuna_identity.domain.ids import derived_id
from kizuna_identity.domain.profile import check_field_path

SITE_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class Site(Aggregate):
    @staticmethod
    def create_id(site_id: str) -> UUID:
        return derived_id("site", site_id)

    @event("Created")
    def __init__(
        self, site_id: str, display_name: str, site_group: str, required_fields: list[str]
    ) -> None:
        self.site_id = site_id
        self.display_name = display_name
        self.site_group = site_group
        self.required_fields = required_fields

    @classmethod
    def create(
        cls, site_id: str, display_name: str, site_group: str, required_fields: list[str]
    ) -> Site:
        check_site_id(site_id, "site_id")
        check_site_id(site_group, "site_group")
        if not display_name.strip() or len(display_name) > 200:
            raise InvalidValue("display_name must be 1 to 200 characters", field="display_name")
        return cls(
            site_id, display_name.strip(), site_group, check_required_fields(required_fields)
        )

    def update_policy(self, required_fields: list[str]) -> None:
        self._policy_updated(self.site_id, check_required_fields(required_fields))

    @event("PolicyUpdated")
    def _policy_updated(self, site_id: str, required_fields: list[str]) -> None:
        self.required_fields = required_fields


def check_site_id(value: str, field: str) -> None:
    if not SITE_ID.match(value):
        raise InvalidValue(
            f"{field} must be 1 to 63 lower-case letters, digits, '.', '_' or '-'", field=field
        )


def check_required_fields(fields: list[str]) -> list[str]:
    unique = list(dict.fromkeys(f.strip() for f in fields))
    for path in unique:
        check_field_path(path)
    return unique
