"""Erasure rewrites a customer's past: no personal data stays, and the rewritten
history still replays to the same erased customer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from eventsourcing.domain import Aggregate

from kizuna_identity.application import IdentityApplication
from kizuna_identity.domain.customer import ERASED, Customer
from kizuna_identity.domain.erasure import REDACTIONS, Erasure, redacted
from kizuna_identity.domain.keys import UniqueKey, external_key_id, login_key_id
from tests.unit.identity.test_application import CountingHasher

PERSONAL = ["tanaka", "suzuki", "Taro", "Hanako", "090-1234", "CC-77", "LINE-9", "plain$"]


def replay(events: Sequence[Any]) -> Aggregate:
    aggregate: Aggregate | None = None
    for event in events:
        aggregate = event.mutate(aggregate)
    assert aggregate is not None
    return aggregate


def test_every_customer_and_key_event_says_what_erasure_blanks() -> None:
    kinds = {
        value.__qualname__
        for aggregate in (Customer, UniqueKey)
        for name, value in vars(aggregate).items()
        if isinstance(value, type) and issubclass(value, aggregate.Event) and name != "Event"
    }
    # A customer is created by Registered: the Created it inherits is never recorded.
    assert kinds - {"Customer.Created"} == set(REDACTIONS)


def test_an_unknown_event_cannot_be_redacted() -> None:
    with pytest.raises(TypeError, match="no redaction"):
        redacted(object(), Erasure([]))


def test_the_redacted_history_of_a_merge_tree_replays_to_the_same_state() -> None:
    survivor = Customer("shop", "tanaka@example.jp", "plain$a", {"given_name": "Taro"}, "ec")
    survivor.link("line", "LINE-9")
    survivor.link("callcenter", "CC-77")
    merged = Customer("shop", "suzuki@example.jp", "plain$b", {"phone": "090-1234"}, "app")
    merged.link("partner", "tanaka@example.jp")  # the same value as a login elsewhere
    survivor.absorb(merged)
    merged.mark_merged(survivor.id, "duplicate")
    survivor.unlink("partner", "tanaka@example.jp")  # refers to what the merge carried
    survivor.update_profile({"given_name": "Hanako"}, ["given_name"])
    survivor.erase("asked")
    merged.erase("asked")
    histories = [survivor.collect_events(), merged.collect_events()]

    erasure = Erasure([survivor.id, merged.id])
    rewritten = [[redacted(e, erasure) or e for e in events] for events in histories]

    for events, redacted_events in zip(histories, rewritten, strict=True):
        assert [type(e) for e in redacted_events] == [type(e) for e in events]
        assert [e.originator_version for e in redacted_events] == [
            e.originator_version for e in events
        ]
        assert not [word for e in redacted_events for word in PERSONAL if word in repr(e)]
        again, before = replay(redacted_events), replay(events)
        assert vars(again) == vars(before)
        assert isinstance(again, Customer)
        assert again.status == ERASED
        # Just before the erasure: the same shape, only the values differ.
        shape, then = replay(redacted_events[:-1]), replay(events[:-1])
        assert isinstance(shape, Customer)
        assert isinstance(then, Customer)
        assert (shape.status, shape.sites, shape.merged_ids, shape.merged_into) == (
            then.status,
            then.sites,
            then.merged_ids,
            then.merged_into,
        )
        assert [p for p, _ in shape.linked] == [p for p, _ in then.linked]
        assert len(shape.credentials) == len(then.credentials)
    stand_ins = {e for events in rewritten for e in repr(events).split("'") if "erased-" in e}
    # 2 logins and 3 external ids, one each: the external id equal to a login differs.
    assert len(stand_ins) == 5


def test_erasure_leaves_no_personal_data_in_the_event_store() -> None:
    app = IdentityApplication({"PERSISTENCE_MODULE": "eventsourcing.popo"}, hasher=CountingHasher())
    app.create_site("shop", "Shop", "brand", [])
    survivor = app.register_customer(
        "shop", "tanaka@example.jp", "Taro Hanako 1", {"given_name": "Taro"}, "ec"
    ).aggregate_id
    app.link_identity(survivor, "callcenter", "CC-77")
    merged = app.register_customer(
        "shop", "suzuki@example.jp", "Taro Hanako 2", {"phone": "090-1234"}, "ec"
    ).aggregate_id
    bystander = app.register_customer(
        "shop", "sato@example.jp", "Taro Hanako 3", {"given_name": "Hanako"}, "ec"
    ).aggregate_id
    app.merge_customers(survivor, merged, "duplicate")

    app.erase_customer(merged, "asked")  # a merged id erases its survivor, and both

    def states(customer_id: Any) -> list[str]:
        return [s.state.decode() for s in app.recorder.select_events(customer_id)]

    for erased in (survivor, merged):
        assert not [word for state in states(erased) for word in PERSONAL if word in state]
        assert app.get_customer(erased).status == ERASED
        history = [change.type for change in app.history(erased)]
        assert (history[0], history[-1]) == ("Registered", "Erased")
    freed = "".join(
        state
        for key in (login_key_id("tanaka@example.jp"), login_key_id("suzuki@example.jp"))
        for state in states(key)
    )
    assert freed, "the keys' events are still there"
    holders = [i for i in (survivor, merged) if i.hex in freed or str(i) in freed]
    assert not holders, "a freed key forgets who held it"
    assert "sato@example.jp" in states(bystander)[0]  # only the erased are rewritten
    assert app.resolve_login("sato@example.jp").id == bystander
    # Freed, and registered again by someone else.
    app.register_customer("shop", "tanaka@example.jp", "Taro Hanako 4", {}, "ec")


def test_keys_of_ids_given_up_before_the_erasure_forget_the_customer() -> None:
    app = IdentityApplication({"PERSISTENCE_MODULE": "eventsourcing.popo"}, hasher=CountingHasher())
    app.create_site("shop", "Shop", "brand", [])
    customer = app.register_customer("shop", "tanaka@example.jp", "Taro Hanako 1", {}, "ec")
    app.link_identity(customer.aggregate_id, "line", "LINE-9")
    app.unlink_identity(customer.aggregate_id, "line", "LINE-9")
    later = app.register_customer("shop", "sato@example.jp", "Taro Hanako 2", {}, "ec")
    app.link_identity(later.aggregate_id, "line", "LINE-9")  # now someone else's

    app.erase_customer(customer.aggregate_id, "asked")

    key = external_key_id("line", "LINE-9")
    states = "".join(s.state.decode() for s in app.recorder.select_events(key))
    assert customer.aggregate_id.hex not in states
    assert later.aggregate_id.hex in states, "its later holder stays"
    assert app.resolve_external("line", "LINE-9").id == later.aggregate_id
