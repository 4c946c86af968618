"""Fixtures shared by the whole suite; the real-server fixtures come from kizuna_kit.testing."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from kizuna_kit.auth import ALL_SCOPES, AUDITOR_SCOPES, issue_keys

# Services started by tests may use a cheap password hash (never below this in production).
os.environ.setdefault("KIZUNA_TESTING", "1")


@dataclass(frozen=True)
class Keys:
    path: Path
    admin: str
    auditor: str
    writer: str

    @staticmethod
    def auth(token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    path = tmp_path / "api-keys.json"
    tokens = issue_keys(
        path,
        {
            "admin": ALL_SCOPES,
            "auditor": AUDITOR_SCOPES,
            "writer": {"identity:read", "identity:write"},
        },
    )
    return Keys(path, tokens["admin"], tokens["auditor"], tokens["writer"])


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Runs a test once on SQLite (None) and once on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
    else:
        yield request.getfixturevalue("postgres_url")


@pytest.fixture
async def channel_factory() -> AsyncIterator[list[grpc.aio.Channel]]:
    channels: list[grpc.aio.Channel] = []
    yield channels
    for channel in channels:
        await channel.close()
