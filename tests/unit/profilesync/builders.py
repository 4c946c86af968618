"""Wire events and profiles for the profile-sync tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.message import Message

from kizuna.consent.v1 import consent_pb2
from kizuna.consent.v1 import events_pb2 as consent_events
from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna.identity.v1 import events_pb2 as identity_events
from kizuna.identity.v1 import identity_pb2
from kizuna_profilesync.domain.profile import (
    ConsentEntry,
    ConsentStatus,
    Profile,
    ProfileFields,
    ProfileStatus,
)

T0 = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)
ALICE = "11111111-1111-5111-8111-111111111111"
BOB = "22222222-2222-5222-8222-222222222222"
CAROL = "33333333-3333-5333-8333-333333333333"


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def envelope(
    payload: Message,
    *,
    position: int,
    aggregate_id: str,
    version: int = 1,
    stream: str = "IDENTITY",
    at: datetime = T0,
) -> Envelope:
    packed = any_pb2.Any()
    packed.Pack(payload)
    service = stream.lower()
    return Envelope(
        event_id=f"{service}:{position}",
        stream=stream,
        aggregate_id=aggregate_id,
        aggregate_version=version,
        type=payload.DESCRIPTOR.full_name,
        occurred_at=ts(at),
        recorded_at=ts(at),
        position=position,
        payload=packed,
    )


def pb_profile(**kwargs: str) -> identity_pb2.Profile:
    attributes = {k[len("attr_") :]: v for k, v in kwargs.items() if k.startswith("attr_")}
    address = {k[len("addr_") :]: v for k, v in kwargs.items() if k.startswith("addr_")}
    plain = {k: v for k, v in kwargs.items() if not k.startswith(("attr_", "addr_"))}
    return identity_pb2.Profile(
        **plain, attributes=attributes, postal_address=identity_pb2.PostalAddress(**address)
    )


def registered(
    customer_id: str = ALICE, *, position: int = 1, login: str = "a@example.com", **fields: str
) -> Envelope:
    event = identity_events.CustomerRegistered(
        customer_id=customer_id,
        site_id="ec",
        login_id=login,
        profile=pb_profile(**fields),
        channel="web",
    )
    return envelope(event, position=position, aggregate_id=customer_id, version=1)


def consent(
    subject: str = ALICE,
    statement: str = "marketing-email",
    *,
    granted: bool = True,
    sequence: int = 1,
    effective: datetime = T0,
    recorded: datetime | None = None,
    version: str = "1.0",
) -> Envelope:
    recorded_at = recorded or effective
    event = consent_events.ConsentRecorded(
        record_id=f"rec-{sequence}",
        sequence=sequence,
        subject_id=subject,
        statement_id=statement,
        version=version,
        decision=consent_pb2.DECISION_GRANTED if granted else consent_pb2.DECISION_WITHDRAWN,
        effective_at=ts(effective),
        recorded_at=ts(recorded_at),
        channel="web",
        site_id="ec",
    )
    return envelope(
        event,
        position=sequence,
        aggregate_id=subject,
        version=sequence,
        stream="CONSENT",
        at=effective,
    )


def published(
    statement: str = "marketing-email", version: str = "2.0", *, position: int
) -> Envelope:
    event = consent_events.StatementPublished(
        statement_id=statement, version=version, purpose="marketing", title="Mail"
    )
    return envelope(event, position=position, aggregate_id=statement, version=0, stream="CONSENT")


def entry(
    status: ConsentStatus = ConsentStatus.GRANTED,
    *,
    effective: datetime = T0,
    recorded: datetime | None = None,
    sequence: int = 1,
    version: str = "1.0",
) -> ConsentEntry:
    return ConsentEntry(
        status=status,
        version=version,
        effective_at=effective,
        recorded_at=recorded or effective,
        sequence=sequence,
        record_id=f"rec-{sequence}",
    )


def profile(
    customer_id: str = ALICE,
    *,
    status: ProfileStatus = ProfileStatus.ACTIVE,
    consents: dict[str, ConsentEntry] | None = None,
    given_name: str = "Hanako",
    version: int = 1,
    **kwargs: object,
) -> Profile:
    return Profile(
        customer_id=customer_id,
        status=status,
        fields=ProfileFields(given_name=given_name, family_name="Tanaka"),
        login_ids=("hanako@example.com",),
        consents=consents or {},
        identity_version=version,
        **kwargs,  # type: ignore[arg-type]
    )


def later(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)
