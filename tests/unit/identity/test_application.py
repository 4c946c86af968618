"""Application rules with the library's in-memory event store and a counting hasher."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from kizuna_identity.application import IdentityApplication
from kizuna_identity.domain.errors import LoginFailed, SessionInvalid
from kizuna_identity.passwords import PasswordHasher
from kizuna_identity.wire import translator


class CountingHasher(PasswordHasher):
    """Plain-text "hashes": fast, and counts every verification. `meanwhile` runs once
    during the next verification (another request landing while a hash is checked)."""

    def __init__(self) -> None:
        self.verified: list[str | None] = []
        self.meanwhile: Callable[[], object] | None = None

    def hash(self, password: str) -> str:
        return "plain$" + password

    def verify(self, password_hash: str | None, password: str) -> bool:
        self.verified.append(password_hash)
        if self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()
        return password_hash == "plain$" + password


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(hasher: CountingHasher, clock: Clock) -> IdentityApplication:
    app = IdentityApplication(
        {"PERSISTENCE_MODULE": "eventsourcing.popo"}, hasher=hasher, clock=clock
    )
    app.create_site("shop", "Shop", "brand", ["given_name"])
    app.register_customer(
        "shop", "a@example.jp", "correct horse battery", {"given_name": "A"}, "ec"
    )
    return app


def test_unknown_login_does_the_same_hashing_work(
    app: IdentityApplication, hasher: CountingHasher
) -> None:
    with pytest.raises(LoginFailed) as wrong:
        app.login("shop", "a@example.jp", "not the password")
    with pytest.raises(LoginFailed) as unknown:
        app.login("shop", "nobody@example.jp", "not the password")
    assert str(wrong.value) == str(unknown.value)
    assert len(hasher.verified) == 2
    assert hasher.verified[1] is None  # checked against the decoy hash


def test_sessions_expire(app: IdentityApplication, clock: Clock) -> None:
    result = app.login("shop", "a@example.jp", "correct horse battery")
    assert app.validate_session(result.session_token, "shop").customer_id == result.customer_id
    clock.now += timedelta(hours=13)
    with pytest.raises(SessionInvalid):
        app.validate_session(result.session_token, "shop")


def test_writes_return_increasing_positions(app: IdentityApplication) -> None:
    first = app.register_customer(
        "shop", "b@example.jp", "correct horse battery", {"given_name": "B"}, ""
    )
    second = app.update_profile(first.aggregate_id, {"phone": "+81 3 1234 5678"}, [], None)
    assert second.position > first.position
    assert second.version == first.version + 1
    assert app.recorder.max_notification_id() == second.position


def published_positions(app: IdentityApplication) -> set[int]:
    publish = translator(app.mapper)
    return {n.id for n in app.recorder.select_notifications(1, 10_000) if publish(n) is not None}


def test_a_write_returns_the_position_of_its_last_event_on_the_stream(
    app: IdentityApplication,
) -> None:
    """What a projection waiting for the position can reach: unique keys and sessions
    stay inside identity, and a write that ends with one of them must not name it."""
    password = "correct horse battery"
    a = app.register_customer("shop", "b@example.jp", password, {"given_name": "B"}, "ec")
    c = app.register_customer("shop", "c@example.jp", password, {"given_name": "C"}, "ec")
    written = {
        "register": a.position,
        "link": app.link_identity(a.aggregate_id, "callcenter", "CC-1").position,
        "unlink": app.unlink_identity(a.aggregate_id, "callcenter", "CC-1").position,
        "merge": app.merge_customers(a.aggregate_id, c.aggregate_id, "duplicate").position,
        "erase": app.erase_customer(a.aggregate_id, "request").position,
    }
    on_stream = published_positions(app)
    assert {name for name, p in written.items() if p not in on_stream} == set()
    assert list(written.values()) == sorted(written.values())
    # A login at a site the customer joined already puts nothing on the stream.
    app.register_customer("shop", "d@example.jp", password, {"given_name": "D"}, "ec")
    assert app.login("shop", "d@example.jp", password).position == 0


def test_a_change_to_the_customer_during_the_password_check_does_not_fail_the_login(
    app: IdentityApplication, hasher: CountingHasher
) -> None:
    app.create_site("app", "App", "brand", [])
    customer = app.resolve_login("a@example.jp").id
    # The same person logging in at the same site on another device, meanwhile.
    hasher.meanwhile = lambda: app.login("app", "a@example.jp", "correct horse battery")

    result = app.login("app", "a@example.jp", "correct horse battery")

    assert result.customer_id == customer
    assert app.get_customer(customer).sites.count("app") == 1


def test_an_erasure_during_the_password_check_fails_the_login(
    app: IdentityApplication, hasher: CountingHasher
) -> None:
    customer = app.resolve_login("a@example.jp").id
    hasher.meanwhile = lambda: app.erase_customer(customer, "request")

    with pytest.raises(LoginFailed):
        app.login("shop", "a@example.jp", "correct horse battery")
