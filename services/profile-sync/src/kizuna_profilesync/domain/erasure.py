"""What an erasure leaves of a customer's earlier events in the inbox: the events, without
the personal data their payloads carried.

The inbox keeps every event it applied (a rebuild replays it). Once a customer is
erased, their earlier identity events are stored again with profiles, login ids and
external ids blanked. Replaying them still gives the same result: the erasure at the
end leaves only a tombstone, whatever came before it. External ids become a stand-in
rather than empty, because a linked identity needs one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna.identity.v1 import events_pb2 as identity_events

ERASED_ID = "erased"


def _registered(m: identity_events.CustomerRegistered) -> None:
    m.ClearField("login_id")
    m.ClearField("profile")


def _profile_updated(m: identity_events.CustomerProfileUpdated) -> None:
    m.ClearField("profile")


def _linked(m: identity_events.CustomerIdentityLinked) -> None:
    m.identity.external_id = ERASED_ID


def _unlinked(m: identity_events.CustomerIdentityUnlinked) -> None:
    m.identity.external_id = ERASED_ID


def _absorbed(m: identity_events.CustomerAbsorbed) -> None:
    m.ClearField("profile")
    m.ClearField("login_ids")
    for linked in m.linked_identities:
        linked.external_id = ERASED_ID


_REDACTIONS: dict[str, tuple[type[Message], Callable[[Any], None]]] = {
    cls.DESCRIPTOR.full_name: (cls, redact)
    for cls, redact in (
        (identity_events.CustomerRegistered, _registered),
        (identity_events.CustomerProfileUpdated, _profile_updated),
        (identity_events.CustomerIdentityLinked, _linked),
        (identity_events.CustomerIdentityUnlinked, _unlinked),
        (identity_events.CustomerAbsorbed, _absorbed),
    )
}
# Identity events that carry no personal data: ids, site ids, site policies.
NOTHING_PERSONAL = frozenset(
    cls.DESCRIPTOR.full_name
    for cls in (
        identity_events.CustomerSiteJoined,
        identity_events.CustomerMerged,
        identity_events.CustomerErased,
        identity_events.SiteCreated,
        identity_events.SitePolicyUpdated,
    )
)
REDACTED = frozenset(_REDACTIONS)


def redacted(envelope: Envelope) -> Envelope | None:
    """The envelope without the personal data of its payload; None when it has none."""
    entry = _REDACTIONS.get(envelope.payload.type_url.rpartition("/")[2])
    if entry is None:
        return None
    message_class, redact = entry
    message = message_class.FromString(envelope.payload.value)
    redact(message)
    out = Envelope()
    out.CopyFrom(envelope)
    out.payload.value = message.SerializeToString()
    return out
