"""Profile and customer: domain dicts <-> protobuf messages."""

from __future__ import annotations

from kizuna.identity.v1 import identity_pb2 as pb
from kizuna_identity.domain.customer import Customer
from kizuna_identity.domain.profile import ADDRESS_FIELDS, SCALAR_FIELDS, Profile
from kizuna_identity.domain.site import Site
from kizuna_kit.wire import timestamp

STATUSES = {
    "ACTIVE": pb.CUSTOMER_STATUS_ACTIVE,
    "MERGED": pb.CUSTOMER_STATUS_MERGED,
    "ERASED": pb.CUSTOMER_STATUS_ERASED,
}


def profile_from_proto(message: pb.Profile) -> Profile:
    profile: Profile = {name: getattr(message, name) for name in SCALAR_FIELDS}
    profile["postal_address"] = {
        name: getattr(message.postal_address, name) for name in ADDRESS_FIELDS
    }
    profile["attributes"] = dict(message.attributes)
    return profile


def profile_to_proto(profile: Profile) -> pb.Profile:
    message = pb.Profile(
        **{name: profile.get(name, "") for name in SCALAR_FIELDS},
        attributes=profile.get("attributes", {}),
    )
    if profile.get("postal_address"):
        message.postal_address.CopyFrom(pb.PostalAddress(**profile["postal_address"]))
    return message


def links_to_proto(links: list[list[str]]) -> list[pb.LinkedIdentity]:
    return [pb.LinkedIdentity(provider=p, external_id=e) for p, e in links]


def customer_to_proto(customer: Customer) -> pb.Customer:
    return pb.Customer(
        customer_id=str(customer.id),
        status=STATUSES[customer.status],
        profile=profile_to_proto(customer.profile),
        linked_identities=links_to_proto(customer.linked),
        sites=customer.sites,
        merged_into=str(customer.merged_into or ""),
        version=customer.version,
        created_at=timestamp(customer.created_on),
        updated_at=timestamp(customer.modified_on),
        login_ids=customer.login_ids,
    )


def site_to_proto(site: Site) -> pb.Site:
    return pb.Site(
        site_id=site.site_id,
        display_name=site.display_name,
        site_group=site.site_group,
        required_fields=site.required_fields,
        created_at=timestamp(site.created_on),
        updated_at=timestamp(site.modified_on),
        version=site.version,
    )
