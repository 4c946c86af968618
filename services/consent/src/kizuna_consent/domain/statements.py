"""Statements: versioned documents a customer consents to, and the rules on their versions.

A version is ``MAJOR.MINOR`` (decimal, no sign, no leading zeros, at most 9 digits each so
it fits a 32-bit column). A grant of an older MAJOR than the latest published one is
OUTDATED (the customer must consent again); a MINOR change keeps it valid.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from kizuna_consent.domain.errors import ConsentError
from kizuna_consent.domain.instants import to_utc

STATEMENT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}", flags=re.ASCII)
_VERSION = re.compile(r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})", flags=re.ASCII)
MAX_TITLE = 200
MAX_PURPOSE = 200


@dataclass(frozen=True, order=True, slots=True)
class Version:
    """A parsed ``MAJOR.MINOR``; ordering is numeric (1.10 > 1.9)."""

    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> Version:
        # fullmatch, not match + "$": "$" would accept a trailing newline.
        m = _VERSION.fullmatch(text)
        if m is None:
            raise InvalidVersion(text)
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


@dataclass(frozen=True, slots=True)
class Statement:
    """One published version of a statement; immutable once published."""

    statement_id: str
    version: Version
    purpose: str
    title: str
    text: str
    text_sha256: str
    published_at: datetime


def publish_statement(
    statement_id: str,
    version: str | Version,
    purpose: str,
    title: str,
    text: str,
    published_at: datetime,
    existing: Iterable[Version] = (),
) -> Statement:
    """A new statement version, checked; `existing` are the versions already published."""
    check_statement_id(statement_id)
    parsed = version if isinstance(version, Version) else Version.parse(version)
    check_not_published(statement_id, parsed, existing)
    if not text.strip():
        raise InvalidStatement("text must not be empty", field="text")
    if not title.strip() or len(title) > MAX_TITLE:
        raise InvalidStatement(f"title must be 1 to {MAX_TITLE} characters", field="title")
    if len(purpose) > MAX_PURPOSE:
        raise InvalidStatement(f"purpose must be at most {MAX_PURPOSE} characters", field="purpose")
    return Statement(
        statement_id=statement_id,
        version=parsed,
        purpose=purpose,
        title=title,
        text=text,
        text_sha256=text_sha256(text),
        published_at=to_utc(published_at, "published_at"),
    )


def text_sha256(text: str) -> str:
    """Lower-case hex SHA-256 of the UTF-8 text, as PublishStatement answers it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_statement_id(statement_id: str) -> str:
    if STATEMENT_ID.fullmatch(statement_id) is None:
        raise InvalidStatementId(statement_id)
    return statement_id


def check_not_published(statement_id: str, version: Version, existing: Iterable[Version]) -> None:
    """A published version never changes, so publishing it again is refused."""
    if version in set(existing):
        raise StatementVersionExists(statement_id, version)


def latest_version(versions: Iterable[Version]) -> Version | None:
    return max(versions, default=None)


def latest_majors(statements: Iterable[Statement], as_of: datetime | None = None) -> dict[str, int]:
    """The latest published MAJOR per statement id, optionally counting only those published
    by `as_of` (for an auditor who wants OUTDATED judged as it was at that time)."""
    cutoff = None if as_of is None else to_utc(as_of, "as_of")
    majors: dict[str, int] = {}
    for s in statements:
        if cutoff is not None and s.published_at > cutoff:
            continue
        if s.version.major > majors.get(s.statement_id, -1):
            majors[s.statement_id] = s.version.major
    return majors


def is_outdated(granted: Version, latest_major: int | None) -> bool:
    """Only a newer MAJOR invalidates a grant; an unknown latest (None) never does."""
    return latest_major is not None and granted.major < latest_major


class InvalidStatementId(ConsentError):
    def __init__(self, statement_id: str) -> None:
        super().__init__(
            "statement_id must be 1 to 63 lower-case letters, digits or '-', starting with a "
            f"letter or digit; got {statement_id[:70]!r}",
            field="statement_id",
        )


class InvalidVersion(ConsentError):
    def __init__(self, text: str) -> None:
        super().__init__(
            f"version must be MAJOR.MINOR (e.g. 1.0, no leading zeros); got {text[:40]!r}",
            field="version",
        )


class InvalidStatement(ConsentError):
    pass


class StatementVersionExists(ConsentError):
    def __init__(self, statement_id: str, version: Version) -> None:
        super().__init__(
            f"statement {statement_id} version {version} is already published and cannot change",
            statement_id=statement_id,
            version=str(version),
        )
