"""Event store settings for the eventsourcing library: SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlparse

from eventsourcing.persistence import IntegrityError

A = TypeVar("A")


def eventsourcing_env(
    database_url: str | None, sqlite_path: Path, pool_size: int = 8
) -> dict[str, str]:
    if database_url:
        url = urlparse(database_url)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": url.path.lstrip("/"),
            "POSTGRES_HOST": url.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": unquote(url.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(url.password or ""),
            "POSTGRES_POOL_SIZE": str(pool_size),
            "POSTGRES_CONNECT_TIMEOUT": "5",
            "POSTGRES_PRE_PING": "y",
            "CREATE_TABLE": "y",
        }
    sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(sqlite_path),
        "SQLITE_LOCK_TIMEOUT": "10",
        "CREATE_TABLE": "y",
    }


def open_application(factory: Callable[[], A], attempts: int = 5) -> A:
    """Constructs an eventsourcing Application, which creates its tables. Two replicas
    starting together on an empty PostgreSQL database race in CREATE TABLE IF NOT
    EXISTS (PostgreSQL reports a duplicate type); the loser tries again and finds the
    tables made."""
    for attempt in range(1, attempts + 1):
        try:
            return factory()
        except IntegrityError as exc:
            if "already exists" not in str(exc) or attempt == attempts:
                raise
            time.sleep(0.1 * attempt)
    raise AssertionError("unreachable")
