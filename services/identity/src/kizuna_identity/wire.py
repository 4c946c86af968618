"""Stored identity events -> protobuf events of stream IDENTITY.

Only what consumers need leaves the service: never a password hash, a session,
or the uniqueness keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import Mapper, Notification
from google.protobuf.message import Message

from kizuna.identity.v1 import events_pb2 as ev
from kizuna_identity.convert import links_to_proto, profile_to_proto
from kizuna_identity.domain.customer import Customer
from kizuna_identity.domain.site import Site
from kizuna_kit.wire import OutgoingEvent

STREAM = "IDENTITY"
SUBJECTS = ["identity.>"]

Builder = Callable[[Any], Message]

CUSTOMER_EVENTS: dict[str, Builder] = {
    "Registered": lambda e: ev.CustomerRegistered(
        customer_id=str(e.originator_id),
        site_id=e.site_id,
        login_id=e.login_id,
        profile=profile_to_proto(e.profile),
        channel=e.channel,
    ),
    "ProfileUpdated": lambda e: ev.CustomerProfileUpdated(
        customer_id=str(e.originator_id),
        profile=profile_to_proto(e.profile),
        changed_fields=e.changed,
    ),
    "SiteJoined": lambda e: ev.CustomerSiteJoined(
        customer_id=str(e.originator_id), site_id=e.site_id
    ),
    "IdentityLinked": lambda e: ev.CustomerIdentityLinked(
        customer_id=str(e.originator_id),
        identity=links_to_proto([[e.provider, e.external_id]])[0],
    ),
    "IdentityUnlinked": lambda e: ev.CustomerIdentityUnlinked(
        customer_id=str(e.originator_id),
        identity=links_to_proto([[e.provider, e.external_id]])[0],
    ),
    "Absorbed": lambda e: ev.CustomerAbsorbed(
        customer_id=str(e.originator_id),
        merged_id=str(e.merged_id),
        profile=profile_to_proto(e.profile),
        linked_identities=links_to_proto(e.linked),
        sites=e.sites,
        login_ids=sorted(e.credentials),
    ),
    "Merged": lambda e: ev.CustomerMerged(
        customer_id=str(e.originator_id), survivor_id=str(e.survivor_id)
    ),
    "Erased": lambda e: ev.CustomerErased(customer_id=str(e.originator_id)),
}

SITE_EVENTS: dict[str, Builder] = {
    "Created": lambda e: ev.SiteCreated(
        site_id=e.site_id,
        display_name=e.display_name,
        site_group=e.site_group,
        required_fields=e.required_fields,
    ),
    "PolicyUpdated": lambda e: ev.SitePolicyUpdated(
        site_id=e.site_id, required_fields=e.required_fields
    ),
}

BUILDERS: dict[type, tuple[str, dict[str, Builder]]] = {
    Customer: ("customer", CUSTOMER_EVENTS),
    Site: ("site", SITE_EVENTS),
}


def _builder(domain_event: object) -> tuple[type, str, Builder] | None:
    """The aggregate class, subject kind and message builder of a published event; None
    for what stays inside identity (unique keys, sessions, credentials)."""
    aggregate_class = getattr(type(domain_event), "__qualname__", "").split(".")[0]
    for cls, (kind, builders) in BUILDERS.items():
        if cls.__name__ == aggregate_class:
            build = builders.get(type(domain_event).__name__)
            return None if build is None else (cls, kind, build)
    return None


def is_published(domain_event: object) -> bool:
    """Whether the relay puts this event on stream IDENTITY."""
    return _builder(domain_event) is not None


def translator(mapper: Mapper[Any]) -> Callable[[Notification], OutgoingEvent | None]:
    def translate(notification: Notification) -> OutgoingEvent | None:
        domain_event = mapper.to_domain_event(notification)
        found = _builder(domain_event)
        if found is None:
            return None
        cls, kind, build = found
        return OutgoingEvent(
            subject=f"identity.{kind}.{domain_event.originator_id}",
            aggregate_id=str(domain_event.originator_id),
            aggregate_version=domain_event.originator_version,
            occurred_at=domain_event.timestamp,  # type: ignore[attr-defined]
            recorded_at=domain_event.timestamp,  # type: ignore[attr-defined]
            payload=build(domain_event),
            # Its earlier messages carry what the erasure erased.
            purges_subject=cls is Customer and type(domain_event).__name__ == "Erased",
        )

    return translate
