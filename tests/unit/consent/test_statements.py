"""Statement ids, MAJOR.MINOR versions and the OUTDATED rule: table-style."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from kizuna_consent.domain.instants import NaiveDatetime
from kizuna_consent.domain.statements import (
    InvalidStatement,
    InvalidStatementId,
    InvalidVersion,
    StatementVersionExists,
    Version,
    check_statement_id,
    is_outdated,
    latest_majors,
    latest_version,
    publish_statement,
    text_sha256,
)

JST = timezone(timedelta(hours=9))
T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "major", "minor"),
    [
        ("1.0", 1, 0),
        ("0.1", 0, 1),
        ("10.20", 10, 20),
        ("999999999.999999999", 999999999, 999999999),
    ],
)
def test_version_parses(text: str, major: int, minor: int) -> None:
    v = Version.parse(text)
    assert (v.major, v.minor) == (major, minor)
    assert str(v) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "1.",
        ".1",
        "1.0.0",
        "01.0",
        "1.01",
        "v1.0",
        "1.0\n",
        " 1.0",
        "1.0 ",
        "+1.0",
        "1.-1",
        "\uff11.\uff10",
        "\u0661.0",
        "1000000000.0",
        "1,0",
        "1_0.0",
    ],
)
def test_version_rejects(text: str) -> None:
    with pytest.raises(InvalidVersion, match=r"MAJOR\.MINOR"):
        Version.parse(text)


@pytest.mark.parametrize(
    ("lower", "higher"), [("1.9", "1.10"), ("1.99", "2.0"), ("0.0", "0.1"), ("2.0", "10.0")]
)
def test_version_order_is_numeric(lower: str, higher: str) -> None:
    assert Version.parse(lower) < Version.parse(higher)
    assert latest_version([Version.parse(higher), Version.parse(lower)]) == Version.parse(higher)


def test_latest_version_of_nothing_is_none() -> None:
    assert latest_version([]) is None


@pytest.mark.parametrize("sid", ["terms", "privacy", "marketing-email", "a", "0", "a" * 63, "9-"])
def test_statement_id_accepts(sid: str) -> None:
    assert check_statement_id(sid) == sid


@pytest.mark.parametrize(
    "sid", ["", "-terms", "Terms", "terms_v1", "terms\n", "a" * 64, "t\u00e9rms", "terms v1", "a.b"]
)
def test_statement_id_rejects(sid: str) -> None:
    with pytest.raises(InvalidStatementId, match="statement_id") as info:
        check_statement_id(sid)
    assert info.value.metadata == {"field": "statement_id"}


@pytest.mark.parametrize("text", ["", "I agree.", "\u540c\u610f\u3057\u307e\u3059", "a\r\nb"])
def test_text_sha256_is_hex_of_utf8(text: str) -> None:
    assert text_sha256(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_text_sha256_of_empty_text_is_the_known_digest() -> None:
    assert text_sha256("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_publish_computes_hash_and_utc_time() -> None:
    s = publish_statement("terms", "2.1", "service", "Terms", "Be nice.", T0.astimezone(JST))
    assert s.version == Version(2, 1)
    assert s.text_sha256 == text_sha256("Be nice.")
    assert s.published_at == T0
    assert s.published_at.tzinfo is UTC


def test_publish_refuses_a_published_version() -> None:
    with pytest.raises(StatementVersionExists, match=r"terms version 1\.0 is already published"):
        publish_statement("terms", "1.0", "p", "T", "x", T0, existing=[Version(1, 0)])
    # Another version of the same statement is fine.
    publish_statement("terms", "1.1", "p", "T", "x", T0, existing=[Version(1, 0)])


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"statement_id": "Terms"}, InvalidStatementId, "statement_id"),
        ({"version": "1"}, InvalidVersion, "version"),
        ({"text": "  \n"}, InvalidStatement, "text"),
        ({"title": ""}, InvalidStatement, "title"),
        ({"title": "t" * 201}, InvalidStatement, "title"),
        ({"purpose": "p" * 201}, InvalidStatement, "purpose"),
        ({"published_at": datetime(2025, 1, 1)}, NaiveDatetime, "published_at"),
    ],
)
def test_publish_rejects(kwargs: dict[str, object], error: type[Exception], field: str) -> None:
    args: dict[str, object] = {
        "statement_id": "terms",
        "version": "1.0",
        "purpose": "service",
        "title": "Terms",
        "text": "Be nice.",
        "published_at": T0,
    } | kwargs
    with pytest.raises(error) as info:
        publish_statement(**args)  # type: ignore[arg-type]
    assert info.value.metadata["field"] == field  # type: ignore[attr-defined]


def test_latest_majors_per_statement_and_as_of() -> None:
    published = [
        publish_statement("terms", "1.0", "p", "T", "a", T0),
        publish_statement("terms", "2.0", "p", "T", "b", T0 + timedelta(days=30)),
        publish_statement("terms", "1.5", "p", "T", "c", T0 + timedelta(days=40)),
        publish_statement("privacy", "3.2", "p", "P", "d", T0),
    ]
    assert latest_majors(published) == {"terms": 2, "privacy": 3}
    assert latest_majors(published, as_of=T0 + timedelta(days=29)) == {"terms": 1, "privacy": 3}
    assert latest_majors(published, as_of=T0 + timedelta(days=30)) == {"terms": 2, "privacy": 3}
    assert latest_majors(published, as_of=T0 - timedelta(seconds=1)) == {}


@pytest.mark.parametrize(
    ("granted", "latest", "outdated"),
    [
        ("1.0", 1, False),
        ("1.3", 2, True),
        ("2.0", 2, False),
        ("1.9", 1, False),
        ("0.5", 1, True),
        ("3.0", 2, False),
        ("1.0", None, False),
    ],
)
def test_is_outdated(granted: str, latest: int | None, outdated: bool) -> None:
    assert is_outdated(Version.parse(granted), latest) is outdated
