"""Statement versions: a grant of an older MAJOR reads as OUTDATED, and connectors that
require the statement are told the customer is gone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna_profilesync.domain.profile import ConsentStatus, Profile
from kizuna_profilesync.domain.projection import MalformedEvent, published_statement
from kizuna_profilesync.domain.statements import (
    EMPTY,
    Catalogue,
    major_of,
    resolve,
    statements_changed,
    with_version,
)
from kizuna_profilesync.projector import projector
from kizuna_profilesync.storage.interface import OutgoingDelivery, Target

from .builders import ALICE, BOB, consent, entry, profile, published, registered

MAIL = "marketing-email"
MARKETING = Target("mkt", event_types=(), required_statements=(MAIL,), fields=())
EVERYONE = Target("all", event_types=(), required_statements=(), fields=())


@pytest.mark.parametrize(
    ("version", "major"),
    [("2.1", 2), ("10.0", 10), ("0.3", 0), ("2", None), ("2.", None), (".1", None), ("a.b", None)],
)
def test_major_of(version: str, major: int | None) -> None:
    assert major_of(version) == major


def test_only_a_newer_major_changes_the_catalogue() -> None:
    catalogue = with_version(EMPTY, MAIL, 1)
    assert catalogue == {MAIL: 1}
    assert with_version(catalogue, MAIL, 1) is catalogue  # a MINOR of the latest
    assert with_version(catalogue, MAIL, 0) is catalogue  # an older one, published late
    assert with_version(catalogue, MAIL, 2) == {MAIL: 2}
    assert catalogue == {MAIL: 1}  # never changed in place
    assert statements_changed(catalogue, {MAIL: 2, "terms": 1}) == {MAIL, "terms"}
    assert statements_changed(catalogue, {MAIL: 1}) == set()


def test_resolve_reads_grants_of_an_older_major_as_outdated() -> None:
    stored = profile(
        consents={
            MAIL: entry(version="1.4"),
            "terms": entry(version="2.0"),
            "survey": entry(ConsentStatus.WITHDRAWN, version="1.0"),
            "unpublished": entry(version="1.0"),
            "odd": entry(version="v3"),
        }
    )
    read = resolve(stored, {MAIL: 2, "terms": 2, "survey": 2, "odd": 1})
    assert {s: e.status for s, e in read.consents.items()} == {
        MAIL: ConsentStatus.OUTDATED,
        "terms": ConsentStatus.GRANTED,
        "survey": ConsentStatus.WITHDRAWN,  # a withdrawal stays one
        "unpublished": ConsentStatus.GRANTED,  # no version known: the ledger's word
        "odd": ConsentStatus.OUTDATED,  # cannot show it is current
    }
    assert read.consents[MAIL].version == "1.4"
    assert stored.consents[MAIL].status == ConsentStatus.GRANTED  # the stored one unchanged
    current = profile(consents={MAIL: entry(version="2.0")})
    assert resolve(current, {MAIL: 2}) is current


def test_published_statement() -> None:
    assert published_statement(published(MAIL, "3.1", position=1)) == (MAIL, 3)
    assert published_statement(consent(ALICE, MAIL)) is None
    assert published_statement(registered(ALICE)) is None
    with pytest.raises(MalformedEvent):
        published_statement(published(MAIL, "three", position=1))


class Feed:
    """The projector run over events in memory, as a store runs it: profiles, what each
    connector holds, the catalogue."""

    def __init__(self, *targets: Target) -> None:
        self.targets = targets
        self.profiles: dict[str, Profile] = {}
        self.held: dict[tuple[str, str], bool] = {}
        self.catalogue: Catalogue = EMPTY
        self.seq = 0
        self.asked: list[str] = []

    def holding(self, connector_id: str) -> Iterator[tuple[str, Profile | None]]:
        self.asked.append(connector_id)
        for (c, customer_id), held in list(self.held.items()):
            if c == connector_id and held:
                yield customer_id, self.profiles.get(customer_id)

    def __call__(self, event: Envelope) -> list[tuple[str, str, str, str]]:
        """(connector, type, customer, webhook id) of each delivery the event gives."""
        self.seq += 1
        changed, deliveries, self.catalogue = projector(
            event,
            self.seq,
            lambda customer_id: self.profiles.get(customer_id),
            self.targets,
            lambda c, customer: self.held.get((c, customer), False),
            self.catalogue,
            self.holding,
        )
        for customer_id, changed_profile in changed.items():
            assert changed_profile is not None
            self.profiles[customer_id] = changed_profile
        return [self.record(d) for d in deliveries]

    def record(self, d: OutgoingDelivery) -> tuple[str, str, str, str]:
        self.held[(d.connector_id, d.customer_id)] = d.holding is not None
        return d.connector_id, d.type, d.customer_id, d.delivery_id


UPSERT, DELETE = "customer.upserted", "customer.deleted"


def test_a_new_major_deletes_the_customer_from_connectors_that_require_it() -> None:
    feed = Feed(MARKETING, EVERYONE)
    feed(published(MAIL, "1.0", position=1))
    feed(registered(ALICE))
    feed(registered(BOB, position=2, login="b@example.com"))
    assert feed(consent(ALICE, MAIL, version="1.0")) == [
        ("mkt", UPSERT, ALICE, "consent:1"),
        ("all", UPSERT, ALICE, "consent:1"),
    ]
    stored = dict(feed.profiles)
    feed.asked.clear()

    # A MINOR keeps the grant current: nobody is asked.
    assert feed(published(MAIL, "1.1", position=2)) == []
    assert feed.asked == []
    # A new MAJOR: only the requiring connector, and only its customer, gets a deletion.
    assert feed(published(MAIL, "2.0", position=3)) == [
        ("mkt", DELETE, ALICE, f"consent:3/{ALICE}")
    ]
    assert feed.asked == ["mkt"]
    assert feed.profiles == stored  # no profile changed: the grant is read as OUTDATED
    # An unrelated statement's new MAJOR asks nobody.
    assert feed(published("terms", "2.0", position=4)) == []
    assert feed.asked == ["mkt"]

    # A late grant of the old MAJOR does not make Bob visible; consenting to 2.0 does.
    assert feed(consent(BOB, MAIL, version="1.1", sequence=5)) == [
        ("all", UPSERT, BOB, "consent:5")
    ]
    assert feed(consent(ALICE, MAIL, version="2.0", sequence=6)) == [
        ("mkt", UPSERT, ALICE, "consent:6"),
        ("all", UPSERT, ALICE, "consent:6"),
    ]


def test_a_new_major_tells_nothing_to_a_connector_that_never_had_the_customer() -> None:
    feed = Feed(MARKETING)
    feed(published(MAIL, "1.0", position=1))
    feed(registered(ALICE))
    feed(consent(ALICE, MAIL, granted=False))
    feed.asked.clear()
    assert feed(published(MAIL, "2.0", position=2)) == []
    assert feed.asked == ["mkt"]
