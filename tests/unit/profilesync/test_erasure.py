"""Profile-sync's redaction of an erased customer's identity events: every event type is
covered, and a redacted envelope keeps everything but the personal data."""

from __future__ import annotations

from datetime import UTC, datetime

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna.identity.v1 import events_pb2 as ev
from kizuna.identity.v1 import identity_pb2 as ipb
from kizuna_kit.wire import OutgoingEvent, envelope
from kizuna_profilesync.domain.erasure import NOTHING_PERSONAL, REDACTED, redacted

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_every_identity_event_is_either_redacted_or_holds_nothing_personal() -> None:
    events = {m.full_name for m in ev.DESCRIPTOR.message_types_by_name.values()}
    assert events == REDACTED | NOTHING_PERSONAL
    assert not REDACTED & NOTHING_PERSONAL


def test_a_redacted_envelope_keeps_its_identity() -> None:
    event = OutgoingEvent(
        "identity.customer.x",
        "x",
        1,
        T0,
        T0,
        ev.CustomerAbsorbed(
            customer_id="x",
            merged_id="y",
            profile=ipb.Profile(given_name="Taro"),
            linked_identities=[ipb.LinkedIdentity(provider="line", external_id="LINE-42")],
            sites=["shop"],
            login_ids=["tanaka@example.jp"],
        ),
    )
    original = envelope("identity", "IDENTITY", 7, event)
    without = redacted(original)
    assert without is not None
    absorbed = ev.CustomerAbsorbed()
    assert without.payload.Unpack(absorbed)
    assert (absorbed.customer_id, absorbed.merged_id, list(absorbed.sites)) == ("x", "y", ["shop"])
    assert not absorbed.HasField("profile")
    assert list(absorbed.login_ids) == []
    assert [i.external_id for i in absorbed.linked_identities] == ["erased"]
    assert (without.event_id, without.position, without.type) == (
        original.event_id,
        original.position,
        original.type,
    )
    assert redacted(Envelope()) is None
