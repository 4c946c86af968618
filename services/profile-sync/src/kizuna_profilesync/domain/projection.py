"""The unified-profile projection: pure functions from a wire event to operations, and the
fold that applies one operation to one profile.

`project(envelope)` looks at nothing but the envelope, so it can run anywhere and be tested
table-style. An executor (SQL, in the application layer) applies the operations together
with its tracking position in one transaction; `apply` is the reference semantics it
mirrors, and `run` is an in-memory executor built on it (tests, rebuild checks).

Rules the executor must mirror:
- Every operation targets exactly one profile, `op.customer_id`.
- Identity operations carry the aggregate version; one whose version is not above the
  profile's `identity_version` was applied already and changes nothing (a second guard
  next to the tracking record).
- `SetConsent` for a MERGED customer belongs to the survivor: follow `merged_into` to the
  live profile first (`resolve_target`). The consent service does the same for new records;
  this covers records that reach us after the merge because the two streams interleave.
- `MoveConsents(customer_id=survivor, from_id=merged)` reads the merged profile's consents
  (`source`) and folds them into the survivor by the ledger's winner rule. The projection
  emits it before `MarkMerged`, which then clears the merged profile's consents.
- Consent on an ERASED profile is dropped; an erasure keeps only a tombstone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any, TypeAlias, TypedDict, TypeVar

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from kizuna.consent.v1 import consent_pb2
from kizuna.consent.v1 import events_pb2 as consent_events
from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna.identity.v1 import events_pb2 as identity_events
from kizuna.identity.v1 import identity_pb2
from kizuna_profilesync.domain.profile import (
    ConsentEntry,
    ConsentStatus,
    LinkedIdentity,
    PostalAddress,
    Profile,
    ProfileFields,
    ProfileStatus,
)
from kizuna_profilesync.domain.statements import major_of

_T = TypeVar("_T")

# --- Operations -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Op:
    customer_id: str
    # Position of the event in its stream (IDENTITY or CONSENT) and when it happened.
    position: int
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class _IdentityOp(_Op):
    # Version of the customer aggregate after the event; 0 when the operation targets
    # another customer than the event's aggregate (no version guard then).
    aggregate_version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UpsertProfile(_IdentityOp):
    """A registration: creates the profile, or completes a consent-only stub."""

    login_id: str
    site_id: str
    fields: ProfileFields


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplaceFields(_IdentityOp):
    """The whole profile after an update (the event carries all of it)."""

    fields: ProfileFields


@dataclass(frozen=True, slots=True, kw_only=True)
class AddSite(_IdentityOp):
    site_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkIdentity(_IdentityOp):
    identity: LinkedIdentity


@dataclass(frozen=True, slots=True, kw_only=True)
class UnlinkIdentity(_IdentityOp):
    identity: LinkedIdentity


@dataclass(frozen=True, slots=True, kw_only=True)
class AbsorbMerged(_IdentityOp):
    """The survivor of a merge: its filled-in fields and what it took over."""

    merged_id: str
    fields: ProfileFields
    linked_identities: tuple[LinkedIdentity, ...]
    sites: tuple[str, ...]
    login_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class MoveConsents(_IdentityOp):
    """Survivor (`customer_id`) adopts the consents of `from_id` by the winner rule."""

    from_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MarkMerged(_IdentityOp):
    survivor_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EraseProfile(_IdentityOp):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class SetConsent(_Op):
    statement_id: str
    status: ConsentStatus
    # The statement version ("MAJOR.MINOR"), not an aggregate version.
    version: str
    effective_at: datetime
    recorded_at: datetime
    sequence: int
    record_id: str

    def entry(self) -> ConsentEntry:
        return ConsentEntry(
            status=self.status,
            version=self.version,
            effective_at=self.effective_at,
            recorded_at=self.recorded_at,
            sequence=self.sequence,
            record_id=self.record_id,
        )


Operation: TypeAlias = (
    UpsertProfile
    | ReplaceFields
    | AddSite
    | LinkIdentity
    | UnlinkIdentity
    | AbsorbMerged
    | MoveConsents
    | MarkMerged
    | EraseProfile
    | SetConsent
)

# --- Events -> operations ---------------------------------------------------------------

IDENTITY_STREAM = "IDENTITY"
CONSENT_STREAM = "CONSENT"


@dataclass(frozen=True, slots=True)
class _Meta:
    aggregate_id: str
    version: int
    position: int
    at: datetime


Handler = Callable[[Message, _Meta], list[Operation]]


def project(envelope: Envelope) -> list[Operation]:
    """The operations one event stands for, in the order they must be applied.

    Event types the profile does not depend on (sites, statements, anything newer than
    this code) give no operations. A payload that contradicts its envelope, or lacks the
    customer id, raises MalformedEvent: skipping it silently would lose data.
    """
    name = envelope.payload.type_url.rpartition("/")[2]
    if envelope.type and envelope.type != name:
        raise MalformedEvent(f"envelope type {envelope.type!r} but payload {name!r}")
    entry = _HANDLERS.get(name)
    if entry is None:
        return []
    message_class, handler = entry
    # The handler was found by the type URL's name, so this is what `Any.Unpack` would
    # check and then do.
    if "/" not in envelope.payload.type_url:
        raise MalformedEvent(f"payload of {envelope.event_id!r} does not unpack as {name}")
    message = message_class.FromString(envelope.payload.value)
    meta = _Meta(
        aggregate_id=envelope.aggregate_id,
        version=envelope.aggregate_version,
        position=envelope.position,
        at=_instant(envelope.occurred_at),
    )
    return handler(message, meta)


_STATEMENT_PUBLISHED = consent_events.StatementPublished.DESCRIPTOR.full_name


def published_statement(envelope: Envelope) -> tuple[str, int] | None:
    """(statement id, MAJOR) of a statement's publication; None for any other event.

    A publication changes no profile (`project` gives no operations for it) but what the
    profiles' grants are worth: see `statements`.
    """
    if envelope.payload.type_url.rpartition("/")[2] != _STATEMENT_PUBLISHED:
        return None
    message = consent_events.StatementPublished.FromString(envelope.payload.value)
    major = major_of(message.version)
    if major is None:
        raise MalformedEvent(f"statement version {message.version!r} is not MAJOR.MINOR")
    return _required(message.statement_id, "statement_id"), major


def _registered(m: Message, meta: _Meta) -> list[Operation]:
    assert isinstance(m, identity_events.CustomerRegistered)
    return [
        UpsertProfile(
            **_identity(m.customer_id, meta),
            login_id=m.login_id,
            site_id=m.site_id,
            fields=fields_from_proto(m.profile),
        )
    ]


def _profile_updated(m: Message, meta: _Meta) -> list[Operation]:
    assert isinstance(m, identity_events.CustomerProfileUpdated)
    return [ReplaceFields(**_identity(m.customer_id, meta), fields=fields_from_proto(m.profile))]


def _site_joined(m: Message, meta: _Meta) -> list[Operation]:
    assert isinstance(m, identity_events.CustomerSiteJoined)
    return [AddSite(**_identity(m.customer_id, meta), site_id=m.site_id)]


def _linked(m: Message, meta: _Meta) -> list[Operation]:
    assert isinstance(m, identity_events.CustomerIdentityLinked)
    return [LinkIdentity(**_identity(m.customer_id, meta), identity=_link(m.identity))]


def _unlinked(m: Message, meta: _Meta) -> list[Operation]:
    assert isinstance(m, identity_events.CustomerIdentityUnlinked)
    return [UnlinkIdentity(**_identity(m.customer_id, meta), identity=_link(m.identity))]


def _absorbed(m: Message, meta: _Meta) -> list[Operation]:
    assert isinstance(m, identity_events.CustomerAbsorbed)
    return [
        AbsorbMerged(
            **_identity(m.customer_id, meta),
            merged_id=_required(m.merged_id, "merged_id"),
            fields=fields_from_proto(m.profile),
            linked_identities=tuple(_link(i) for i in m.linked_identities),
            sites=tuple(m.sites),
            login_ids=tuple(m.login_ids),
        )
    ]


def _merged(m: Message, meta: _Meta) -> list[Operation]:
    assert isinstance(m, identity_events.CustomerMerged)
    survivor = _required(m.survivor_id, "survivor_id")
    ids = _identity(m.customer_id, meta)
    # Consents move on this event, not on CustomerAbsorbed: after it, SetConsent for the
    # merged id is redirected, so no record can land on the merged profile in between.
    return [
        MoveConsents(
            customer_id=survivor,
            position=meta.position,
            at=meta.at,
            aggregate_version=0,
            from_id=ids["customer_id"],
        ),
        MarkMerged(**ids, survivor_id=survivor),
    ]


def _erased(m: Message, meta: _Meta) -> list[Operation]:
    assert isinstance(m, identity_events.CustomerErased)
    return [EraseProfile(**_identity(m.customer_id, meta))]


_STATUSES = {
    consent_pb2.DECISION_GRANTED: ConsentStatus.GRANTED,
    consent_pb2.DECISION_WITHDRAWN: ConsentStatus.WITHDRAWN,
}


def _consent_recorded(m: Message, meta: _Meta) -> list[Operation]:
    assert isinstance(m, consent_events.ConsentRecorded)
    status = _STATUSES.get(m.decision)
    if status is None:
        raise MalformedEvent(f"consent record {m.record_id!r} has no decision")
    return [
        SetConsent(
            customer_id=_required(m.subject_id, "subject_id"),
            position=meta.position,
            at=meta.at,
            statement_id=_required(m.statement_id, "statement_id"),
            status=status,
            version=m.version,
            effective_at=_instant(m.effective_at),
            recorded_at=_instant(m.recorded_at),
            sequence=m.sequence,
            record_id=m.record_id,
        )
    ]


def _ignored(_m: Message, _meta: _Meta) -> list[Operation]:
    # Site policies do not change what a profile holds; statements change what its grants
    # are worth (`published_statement`), not the profile.
    return []


_HANDLERS: dict[str, tuple[type[Message], Handler]] = {
    cls.DESCRIPTOR.full_name: (cls, handler)
    for cls, handler in (
        (identity_events.CustomerRegistered, _registered),
        (identity_events.CustomerProfileUpdated, _profile_updated),
        (identity_events.CustomerSiteJoined, _site_joined),
        (identity_events.CustomerIdentityLinked, _linked),
        (identity_events.CustomerIdentityUnlinked, _unlinked),
        (identity_events.CustomerAbsorbed, _absorbed),
        (identity_events.CustomerMerged, _merged),
        (identity_events.CustomerErased, _erased),
        (identity_events.SiteCreated, _ignored),
        (identity_events.SitePolicyUpdated, _ignored),
        (consent_events.ConsentRecorded, _consent_recorded),
        (consent_events.StatementPublished, _ignored),
    )
}


class _IdentityArgs(TypedDict):
    customer_id: str
    position: int
    at: datetime
    aggregate_version: int


def _identity(customer_id: str, meta: _Meta) -> _IdentityArgs:
    """The common fields of an operation on the event's own customer aggregate."""
    _required(customer_id, "customer_id")
    if meta.aggregate_id and meta.aggregate_id != customer_id:
        raise MalformedEvent(f"event of aggregate {meta.aggregate_id!r} names {customer_id!r}")
    return _IdentityArgs(
        customer_id=customer_id,
        position=meta.position,
        at=meta.at,
        aggregate_version=meta.version,
    )


def fields_from_proto(message: identity_pb2.Profile) -> ProfileFields:
    address = message.postal_address
    return ProfileFields(
        given_name=message.given_name,
        family_name=message.family_name,
        phone=message.phone,
        birthdate=message.birthdate,
        locale=message.locale,
        postal_address=PostalAddress(
            postal_code=address.postal_code,
            region=address.region,
            locality=address.locality,
            street=address.street,
            country=address.country,
        ),
        attributes={k: v for k, v in sorted(message.attributes.items()) if v},
    )


def _link(message: identity_pb2.LinkedIdentity) -> LinkedIdentity:
    return LinkedIdentity(
        provider=_required(message.provider, "provider"),
        external_id=_required(message.external_id, "external_id"),
    )


def _required(value: str, name: str) -> str:
    if not value:
        raise MalformedEvent(f"event without {name}")
    return value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _instant(value: timestamp_pb2.Timestamp) -> datetime:
    """`value.ToDatetime(tzinfo=UTC)` (nanoseconds truncated to microseconds), in a
    fraction of its time."""
    return _EPOCH + timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)


# --- The fold ---------------------------------------------------------------------------


def apply(profile: Profile | None, op: Operation, source: Profile | None = None) -> Profile | None:
    """The profile `op.customer_id` after `op`; `profile` is its state before (None: absent).

    `source` is the profile of `op.from_id` for MoveConsents and is ignored otherwise.
    Returns the profile unchanged (the same object) when the operation has no effect, so
    `after is before` tells an executor that nothing needs writing.
    """
    if isinstance(op, SetConsent):
        return _set_consent(profile, op)
    if isinstance(op, MoveConsents):
        return _move_consents(profile, op, source)
    if profile is not None and 0 < op.aggregate_version <= profile.identity_version:
        return profile  # applied already: a redelivery
    current = profile or Profile(customer_id=op.customer_id, created_at=op.at)
    if isinstance(op, EraseProfile):
        # Keep only a tombstone: no personal datum, consent or login survives.
        return _stamp(
            Profile(
                customer_id=op.customer_id,
                status=ProfileStatus.ERASED,
                merged_into=current.merged_into,
                identity_version=current.identity_version,
                identity_position=current.identity_position,
                consent_position=current.consent_position,
                created_at=current.created_at,
            ),
            op,
        )
    if current.status == ProfileStatus.ERASED:
        return profile  # identity refuses changes to erased customers; never resurrect
    stamp = {
        "identity_version": max(current.identity_version, op.aggregate_version),
        "identity_position": max(current.identity_position, op.position),
        "updated_at": op.at,
    }
    if isinstance(op, UpsertProfile):
        return _evolve(
            current,
            status=ProfileStatus.ACTIVE,
            fields=op.fields,
            login_ids=_union(current.login_ids, (op.login_id,) if op.login_id else ()),
            sites=_union(current.sites, (op.site_id,) if op.site_id else ()),
            created_at=op.at,
            **stamp,
        )
    if isinstance(op, ReplaceFields):
        return _evolve(current, fields=op.fields, **stamp)
    if isinstance(op, AddSite):
        return _evolve(current, sites=_union(current.sites, (op.site_id,)), **stamp)
    if isinstance(op, LinkIdentity):
        linked = _union(current.linked_identities, (op.identity,))
        return _evolve(current, linked_identities=linked, **stamp)
    if isinstance(op, UnlinkIdentity):
        linked = tuple(i for i in current.linked_identities if i != op.identity)
        return _evolve(current, linked_identities=linked, **stamp)
    if isinstance(op, AbsorbMerged):
        return _evolve(
            current,
            fields=op.fields,
            linked_identities=_union(current.linked_identities, op.linked_identities),
            sites=_union(current.sites, op.sites),
            login_ids=tuple(sorted(set(current.login_ids) | set(op.login_ids))),
            **stamp,
        )
    # MarkMerged: the survivor now answers for this id (fields, logins, links and
    # consents went to it); like identity, the merged profile keeps none of them.
    return _evolve(
        current,
        status=ProfileStatus.MERGED,
        merged_into=op.survivor_id,
        fields=ProfileFields(),
        login_ids=(),
        linked_identities=(),
        consents={},
        **stamp,
    )


def resolve_target(customer_id: str, lookup: Callable[[str], Profile | None]) -> str:
    """The live id for a consent record: follows `merged_into` (a merge chain A->B->C)."""
    seen = {customer_id}
    profile = lookup(customer_id)
    while profile is not None and profile.status == ProfileStatus.MERGED and profile.merged_into:
        if profile.merged_into in seen:
            raise MalformedEvent(f"merge cycle through {profile.merged_into!r}")
        customer_id = profile.merged_into
        seen.add(customer_id)
        profile = lookup(customer_id)
    return customer_id


@dataclass(frozen=True, slots=True)
class Change:
    before: Profile | None
    after: Profile | None


def run(profiles: Mapping[str, Profile], ops: Iterable[Operation]) -> dict[str, Change]:
    """The reference executor: applies one event's operations to `profiles` (not mutated)
    and returns, per customer touched, its state before the event and after it.

    Gating compares exactly these two states, so one event gives each connector at most
    one delivery per customer however many operations it held.
    """
    current: dict[str, Profile | None] = {}

    def lookup(customer_id: str) -> Profile | None:
        if customer_id in current:
            return current[customer_id]
        return profiles.get(customer_id)

    changes: dict[str, Change] = {}
    for op in ops:
        target = op.customer_id
        if isinstance(op, SetConsent):
            target = resolve_target(target, lookup)
            if target != op.customer_id:
                op = replace(op, customer_id=target)
        before = lookup(target)
        source = lookup(op.from_id) if isinstance(op, MoveConsents) else None
        after = apply(before, op, source)
        if target not in changes:
            changes[target] = Change(before=before, after=after)
        else:
            changes[target] = Change(before=changes[target].before, after=after)
        current[target] = after
    return {k: c for k, c in changes.items() if c.before != c.after}


def fold(profiles: dict[str, Profile], ops: Iterable[Operation]) -> None:
    """`run` for a rebuild: applies the operations to `profiles` in place and keeps no
    before/after pairs, as nothing is gated or delivered. Ends in the state `run` gives."""
    for op in ops:
        target = op.customer_id
        if isinstance(op, SetConsent):
            target = resolve_target(target, profiles.get)
            if target != op.customer_id:
                op = replace(op, customer_id=target)
        source = profiles.get(op.from_id) if isinstance(op, MoveConsents) else None
        after = apply(profiles.get(target), op, source)
        if after is None:
            profiles.pop(target, None)
        else:
            profiles[target] = after


def _set_consent(profile: Profile | None, op: SetConsent) -> Profile | None:
    if profile is not None and profile.status != ProfileStatus.ACTIVE:
        # ERASED: nothing is kept. MERGED: the executor redirects to the survivor first.
        return profile
    current = profile or Profile(customer_id=op.customer_id)
    consents = _adopt(current.consents, {op.statement_id: op.entry()})
    if consents is current.consents:
        return profile  # an older record (by the winner rule) or a redelivery
    position = max(current.consent_position, op.position)
    return _evolve(current, consents=consents, consent_position=position, updated_at=op.at)


def _move_consents(
    profile: Profile | None, op: MoveConsents, source: Profile | None
) -> Profile | None:
    if source is None or not source.consents:
        return profile
    if profile is not None and profile.status == ProfileStatus.ERASED:
        return profile
    current = profile or Profile(customer_id=op.customer_id)
    consents = _adopt(current.consents, source.consents)
    if consents is current.consents:
        return profile
    return _evolve(
        current,
        consents=consents,
        consent_position=max(current.consent_position, source.consent_position),
        updated_at=op.at,
    )


def _adopt(
    held: Mapping[str, ConsentEntry], incoming: Mapping[str, ConsentEntry]
) -> Mapping[str, ConsentEntry]:
    """`held` with every incoming entry that beats the held one; the same object if none."""
    winners = {
        sid: entry
        for sid, entry in incoming.items()
        if sid not in held or entry.winner_key() > held[sid].winner_key()
    }
    if not winners:
        return held
    return dict(sorted({**held, **winners}.items()))


def _stamp(profile: Profile, op: _IdentityOp) -> Profile:
    return _evolve(
        profile,
        identity_version=max(profile.identity_version, op.aggregate_version),
        identity_position=max(profile.identity_position, op.position),
        updated_at=op.at,
    )


_PROFILE_FIELDS = tuple(f.name for f in dataclass_fields(Profile))
_PROFILE_INDEX = {name: i for i, name in enumerate(_PROFILE_FIELDS)}
_profile_values = attrgetter(*_PROFILE_FIELDS)


def _evolve(profile: Profile, **changes: Any) -> Profile:
    """`dataclasses.replace` for a Profile, without its per-field bookkeeping: the fold
    makes one per operation, so this is the projection's (and a rebuild's) hot path."""
    values = list(_profile_values(profile))
    for name, value in changes.items():
        values[_PROFILE_INDEX[name]] = value
    return Profile(*values)


def _union(held: tuple[_T, ...], more: Iterable[_T]) -> tuple[_T, ...]:
    """`held` then the new items of `more`, in order: first-seen order is deterministic."""
    return tuple(dict.fromkeys((*held, *more)))


class MalformedEvent(ValueError):
    """An event the projection cannot interpret; the consumer must not ack it silently."""
