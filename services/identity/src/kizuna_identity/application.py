"""The identity application: loads aggregates, applies commands, saves atomically.

Every write returns the position of its last event on stream IDENTITY (read-your-writes
for its consumers), or 0 when it put nothing there (a session, say).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import ApplicationRecorder, IntegrityError, StoredEvent
from eventsourcing.utils import get_topic

from kizuna_identity.domain.customer import ACTIVE, ERASED, MERGED, Customer
from kizuna_identity.domain.erasure import Erasure, keys_named, redacted
from kizuna_identity.domain.errors import (
    CustomerNotFound,
    ExternalIdTaken,
    InvalidValue,
    LoginFailed,
    LoginIdTaken,
    LoginLocked,
    MissingRequiredFields,
    NotActive,
    SessionInvalid,
    SessionWrongGroup,
    SiteExists,
    SiteNotFound,
    VersionConflict,
)
from kizuna_identity.domain.keys import UniqueKey, external_key_id, login_key_id
from kizuna_identity.domain.password import check_password
from kizuna_identity.domain.profile import (
    Profile,
    check_login_id,
    check_profile,
    clean,
    merge_update,
    missing_fields,
    normalise_login_id,
)
from kizuna_identity.domain.session import Session, session_id
from kizuna_identity.domain.site import Site
from kizuna_identity.passwords import PasswordHasher
from kizuna_identity.throttle import LoginThrottle, Throttle
from kizuna_identity.wire import is_published
from kizuna_kit.rewrites import rewriting_recorder
from kizuna_kit.thread_group_commit import ThreadGroupCommit

A = TypeVar("A", bound=Aggregate)
Event = DomainEventProtocol[UUID]

PROVIDER = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
CHANNEL = re.compile(r"^[a-z0-9_-]{0,32}$")
TOKEN_PREFIX = "kzs_"  # noqa: S105 - a prefix, not a secret
MAX_MERGE_HOPS = 64
LOGIN_COMMIT_TRIES = 5


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Write:
    """New events, and earlier ones rewritten in the same transaction (erasure)."""

    events: Sequence[Event]
    rewrites: Sequence[StoredEvent] = ()


@dataclass(frozen=True)
class Written:
    aggregate_id: UUID
    version: int
    position: int


@dataclass(frozen=True)
class LoginResult:
    customer_id: UUID
    session_token: str
    expires_at: datetime
    missing_fields: list[str]
    position: int


@dataclass(frozen=True)
class SessionView:
    customer_id: UUID
    missing_fields: list[str]
    expires_at: datetime


@dataclass(frozen=True)
class Change:
    version: int
    type: str
    occurred_at: datetime


class IdentityApplication(Application[UUID]):
    name = "identity"

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        hasher: PasswordHasher,
        throttle: Throttle | None = None,
        clock: Callable[[], datetime] = utcnow,
        session_ttl: timedelta = timedelta(hours=12),
        on_recorded: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(env)
        self._hasher = hasher
        self._throttle = throttle or LoginThrottle()
        self._clock = clock
        self._session_ttl = session_ttl
        self._on_recorded = on_recorded
        # Writes from concurrent requests share one transaction: the recorder locks the
        # table to number notifications, so separate commits would queue for the lock
        # and each pay an fsync.
        self._writes: ThreadGroupCommit[Write, int] = ThreadGroupCommit(self._record_all)

    def construct_recorder(self) -> ApplicationRecorder:
        return rewriting_recorder(self.factory)

    # Writes ---------------------------------------------------------------

    def _commit(self, *aggregates: Aggregate | None, rewrites: Sequence[StoredEvent] = ()) -> int:
        """Records the aggregates' new events atomically; returns the last one's position."""
        events = [event for a in aggregates if a is not None for event in a.collect_events()]
        return self._writes.submit(Write(events, rewrites)) if events else 0

    def _record_all(self, writes: Sequence[Write]) -> list[int]:
        recordings = self.save(
            *(event for write in writes for event in write.events),
            rewrites=[rewrite for write in writes for rewrite in write.rewrites],
        )
        if self._on_recorded is not None:
            self._on_recorded()
        # A write's position is that of its last event on stream IDENTITY, what a
        # projection waiting for it can reach: 0 when it put nothing there.
        positions, start = [], 0
        for write in writes:
            own = recordings[start : start + len(write.events)]
            published = [r.notification.id for r in own if is_published(r.domain_event)]
            positions.append(max(published, default=0))
            start += len(write.events)
        return positions

    def create_site(
        self, site_id: str, display_name: str, site_group: str, required_fields: list[str]
    ) -> tuple[Site, int]:
        site = Site.create(site_id, display_name, site_group, required_fields)
        if self._exists(site.id):
            raise SiteExists("a site with this id exists", site_id=site_id)
        try:
            position = self._commit(site)
        except IntegrityError:
            raise SiteExists("a site with this id exists", site_id=site_id) from None
        return site, position

    def update_site_policy(self, site_id: str, required_fields: list[str]) -> tuple[Site, int]:
        site = self.get_site(site_id)
        site.update_policy(required_fields)
        return site, self._commit_versioned(site)

    def register_customer(
        self, site_id: str, login_id: str, password: str, profile: Profile, channel: str
    ) -> Written:
        login_id = normalise_login_id(login_id)
        check_login_id(login_id)
        check_channel(channel)
        profile = clean(profile)
        check_profile(profile)
        site = self.get_site(site_id)
        missing = missing_fields(profile, site.required_fields)
        if missing:
            raise MissingRequiredFields(missing)
        check_password(password, login_id)
        key = self._key(login_key_id(login_id))
        if key is not None and not key.is_free:
            raise LoginIdTaken("this login id is already registered")
        customer = Customer(site_id, login_id, self._hasher.hash(password), profile, channel)
        key = self._claim(key, login_key_id(login_id), customer.id)
        try:
            position = self._commit(customer, key)
        except IntegrityError:
            raise LoginIdTaken("this login id is already registered") from None
        return Written(customer.id, customer.version, position)

    def login(self, site_id: str, login_id: str, password: str) -> LoginResult:
        login_id = normalise_login_id(login_id)
        retry_after = self._throttle.retry_after(login_id)
        if retry_after:
            raise LoginLocked(retry_after)
        site = self.get_site(site_id)
        customer = self._owner(login_key_id(login_id))
        password_hash = customer.credentials.get(login_id) if customer is not None else None
        # The hash check runs for unknown logins too, so both failures take the same time.
        if not self._hasher.verify(password_hash, password) or customer is None:
            self._throttle.failed(login_id)
            raise LoginFailed()
        # The hash took a while: the customer is read again, and a change that landed
        # meanwhile (another device joining the site, an update) means another try, not
        # an error; an erasure or a merge meanwhile ends the login as an unknown one.
        for attempt in range(1, LOGIN_COMMIT_TRIES + 1):
            customer = self._load(customer.id, Customer)
            if customer is None or customer.status != ACTIVE:
                raise LoginFailed()
            token = TOKEN_PREFIX + secrets.token_urlsafe(32)
            expires_at = self._clock() + self._session_ttl
            session = Session(
                _digest(token), customer.id, site.site_id, site.site_group, expires_at
            )
            customer.join_site(site.site_id)
            try:
                position = self._commit_versioned(session, customer)
            except VersionConflict:
                if attempt == LOGIN_COMMIT_TRIES:
                    raise
                continue
            break
        self._throttle.succeeded(login_id)
        return LoginResult(
            customer.id,
            token,
            expires_at,
            missing_fields(customer.profile, site.required_fields),
            position,
        )

    def revoke_session(self, token: str) -> int:
        session = self._session(token)
        session.revoke()
        return self._commit_versioned(session)

    def update_profile(
        self,
        customer_id: UUID,
        update: Profile,
        mask: list[str],
        expected_version: int | None,
    ) -> Written:
        customer = self.get_customer(customer_id)
        if expected_version is not None and expected_version != customer.version:
            raise VersionConflict(
                "customer has changed since that version", version=str(customer.version)
            )
        customer.check_active()
        profile, changed = merge_update(customer.profile, update, mask)
        check_profile(profile)
        customer.update_profile(profile, changed)
        return Written(customer.id, customer.version, self._commit_versioned(customer))

    def link_identity(self, customer_id: UUID, provider: str, external_id: str) -> Written:
        check_external(provider, external_id)
        customer = self.get_customer(customer_id)
        customer.check_active()
        key_id = external_key_id(provider, external_id)
        key = self._key(key_id)
        if key is not None and not key.is_free and not key.is_held_by(customer.id):
            raise ExternalIdTaken("this external id is linked to another customer")
        if (
            key is not None
            and key.is_held_by(customer.id)
            and customer.has_link(provider, external_id)
        ):
            return Written(customer.id, customer.version, 0)
        customer.link(provider, external_id)
        key = self._claim(key, key_id, customer.id)
        try:
            position = self._commit(customer, key)
        except IntegrityError:
            # Either someone claimed the id first, or the customer changed meanwhile.
            holder = self._key(key_id)
            if holder is not None and not holder.is_free and not holder.is_held_by(customer.id):
                raise ExternalIdTaken("this external id is linked to another customer") from None
            raise VersionConflict("a concurrent change came first; read and try again") from None
        return Written(customer.id, customer.version, position)

    def unlink_identity(self, customer_id: UUID, provider: str, external_id: str) -> Written:
        check_external(provider, external_id)
        customer = self.get_customer(customer_id)
        customer.unlink(provider, external_id)
        key = self._key(external_key_id(provider, external_id))
        if key is not None and key.is_held_by(customer.id):
            key.release()
        return Written(customer.id, customer.version, self._commit_versioned(customer, key))

    def merge_customers(self, survivor_id: UUID, merged_id: UUID, reason: str) -> Written:
        survivor = self.get_customer(survivor_id)
        merged = self.get_customer(merged_id)
        survivor.absorb(merged)
        keys = [self._key(login_key_id(login)) for login in merged.login_ids]
        keys += [self._key(external_key_id(p, e)) for p, e in merged.linked]
        merged.mark_merged(survivor.id, reason[:500])
        for key in keys:
            if key is not None:
                key.claim(survivor.id)
        position = self._commit_versioned(survivor, merged, *keys)
        return Written(survivor.id, survivor.version, position)

    def erase_customer(self, customer_id: UUID, reason: str) -> Written:
        """Erases the person: the live customer (a merged id leads to its survivor) and
        every customer merged into it, however deep the merges went."""
        customer = self.live_customer(customer_id)
        erased = [c for c in self._merge_tree(customer) if c.status != ERASED]
        erasure = Erasure(person.id for person in erased)
        # Read before anything changes: the erasure is recorded at the next versions, so
        # one that raced with another change fails as a whole and nothing is rewritten.
        pasts = [list(self.events.get(person.id, lte=person.version)) for person in erased]
        rewrites = self._redacted(erasure, (event for past in pasts for event in past))
        keys: list[UniqueKey] = []
        for key_id in sorted(set().union(*(keys_named(past) for past in pasts))):
            key = self._key(key_id)
            if key is None:
                continue
            rewrites += self._redacted(erasure, self.events.get(key.id, lte=key.version))
            if key.owner_id in erasure.customer_ids:
                key.release()
                keys.append(key)
        for person in erased:
            person.erase(reason[:500])
        position = self._commit_versioned(*erased, *keys, rewrites=rewrites)
        return Written(customer.id, customer.version, position)

    def _redacted(self, erasure: Erasure, events: Iterable[Event]) -> list[StoredEvent]:
        """Stored events to put in place of `events`, without the erased's personal data."""
        rewritten = (redacted(event, erasure) for event in events)
        return [self.mapper.to_stored_event(e) for e in rewritten if e is not None]

    def _merge_tree(self, root: Customer) -> list[Customer]:
        found, pending = [root], list(root.merged_ids)
        while pending:
            merged = self.get_customer(pending.pop())
            found.append(merged)
            pending.extend(merged.merged_ids)
        return found

    def _commit_versioned(
        self, *aggregates: Aggregate | None, rewrites: Sequence[StoredEvent] = ()
    ) -> int:
        try:
            return self._commit(*aggregates, rewrites=rewrites)
        except IntegrityError:
            raise VersionConflict("a concurrent change came first; read and try again") from None

    # Reads ----------------------------------------------------------------

    def get_site(self, site_id: str) -> Site:
        site = self._load(Site.create_id(site_id), Site)
        if site is None:
            raise SiteNotFound("no site with this id", site_id=site_id)
        return site

    def list_sites(self, site_group: str = "") -> list[Site]:
        topic = get_topic(Site.Created)
        sites: list[Site] = []
        start: int | None = 1
        while start is not None:
            page = self.recorder.select_notifications(start, 500, topics=[topic])
            for notification in page:
                site = self._load(UUID(str(notification.originator_id)), Site)
                if site is not None and (not site_group or site.site_group == site_group):
                    sites.append(site)
            start = page[-1].id + 1 if len(page) == 500 else None
        return sorted(sites, key=lambda s: s.site_id)

    def validate_session(self, token: str, site_id: str) -> SessionView:
        session = self._session(token)
        if not session.is_valid(self._clock()):
            raise SessionInvalid("session is not valid")
        site = self.get_site(site_id)
        if site.site_group != session.site_group:
            raise SessionWrongGroup("this session is not valid at that site")
        customer = self.live_customer(session.customer_id)
        if customer.status != ACTIVE:
            raise SessionInvalid("session is not valid")
        return SessionView(
            customer.id, missing_fields(customer.profile, site.required_fields), session.expires_at
        )

    def get_customer(self, customer_id: UUID, at: datetime | None = None) -> Customer:
        customer = self._load(customer_id, Customer)
        if customer is None:
            raise CustomerNotFound("no customer with this id")
        if at is None or customer.status == ERASED:
            # An erased customer's past is not shown either.
            return customer
        version = None
        for domain_event in self.events.get(customer_id):
            if _timestamp(domain_event) > at:
                break
            version = domain_event.originator_version
        if version is None:
            raise CustomerNotFound("the customer did not exist at that time")
        past = self._load(customer_id, Customer, version=version)
        assert past is not None
        return past

    def live_customer(self, customer_id: UUID) -> Customer:
        """The customer, or the survivor it was merged into."""
        customer = self.get_customer(customer_id)
        for _ in range(MAX_MERGE_HOPS):
            if customer.status != MERGED or customer.merged_into is None:
                return customer
            customer = self.get_customer(customer.merged_into)
        raise NotActive("merge chain is too long")

    def resolve_login(self, login_id: str) -> Customer:
        customer = self._owner(login_key_id(normalise_login_id(login_id)))
        if customer is None:
            raise CustomerNotFound("no customer has this login id")
        return customer

    def resolve_external(self, provider: str, external_id: str) -> Customer:
        check_external(provider, external_id)
        customer = self._owner(external_key_id(provider, external_id))
        if customer is None:
            raise CustomerNotFound("no customer has this external id")
        return customer

    def history(self, customer_id: UUID) -> list[Change]:
        self.get_customer(customer_id)
        return [
            Change(e.originator_version, type(e).__name__, _timestamp(e))
            for e in self.events.get(customer_id)
        ]

    # Helpers --------------------------------------------------------------

    def _load(self, aggregate_id: UUID, cls: type[A], version: int | None = None) -> A | None:
        try:
            aggregate: object = self.repository.get(
                aggregate_id, version=version, projector_func=_project
            )
        except AggregateNotFoundError:
            return None
        return aggregate if isinstance(aggregate, cls) else None

    def _exists(self, aggregate_id: UUID) -> bool:
        return aggregate_id in self.repository

    def _key(self, key_id: UUID) -> UniqueKey | None:
        return self._load(key_id, UniqueKey)

    @staticmethod
    def _claim(key: UniqueKey | None, key_id: UUID, owner_id: UUID) -> UniqueKey:
        if key is None:
            return UniqueKey(key_id, owner_id)
        key.claim(owner_id)
        return key

    def _owner(self, key_id: UUID) -> Customer | None:
        key = self._key(key_id)
        if key is None or key.owner_id is None:
            return None
        customer = self.live_customer(key.owner_id)
        return customer if customer.status == ACTIVE else None

    def _session(self, token: str) -> Session:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            raise SessionInvalid("session is not valid")
        session = self._load(session_id(_digest(token)), Session)
        if session is None:
            raise SessionInvalid("session is not valid")
        return session


def _project(aggregate: Aggregate | None, events: Iterable[Event]) -> Aggregate | None:
    """eventsourcing's project_aggregate without its per-event isinstance check against a
    runtime Protocol, which is slow on Python 3.11; every event here is an
    Aggregate.Event, which mutates."""
    for domain_event in events:
        aggregate = cast(Aggregate.Event, domain_event).mutate(aggregate)
    return aggregate


def _timestamp(domain_event: object) -> datetime:
    value = getattr(domain_event, "timestamp", None)
    assert isinstance(value, datetime)
    return value


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_channel(channel: str) -> None:
    if not CHANNEL.match(channel):
        raise InvalidValue("channel must be up to 32 lower-case letters, digits, '_' or '-'")


def check_external(provider: str, external_id: str) -> None:
    if not PROVIDER.match(provider):
        raise InvalidValue("provider must be 1 to 32 lower-case letters, digits, '.', '_' or '-'")
    if not external_id or len(external_id) > 128 or not external_id.isprintable():
        raise InvalidValue("external_id must be 1 to 128 printable characters")


def parse_customer_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise InvalidValue("customer_id must be a UUID") from None


__all__ = ["IdentityApplication", "LoginResult", "SessionView", "Written"]
