"""Event store settings for the eventsourcing library: SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlparse

from eventsourcing.persistence import IntegrityError, InternalError, ProgrammingError
from psycopg_pool import ConnectionPool

from kizuna_kit.sql import IdleCheck

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
            # Checked after idle instead of at every checkout: see check_after_idle().
            "POSTGRES_PRE_PING": "n",
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
    EXISTS (PostgreSQL reports a duplicate type, as a unique violation or as a duplicate
    object depending on where the two meet) and CREATE OR REPLACE FUNCTION ("tuple
    concurrently updated"); the loser tries again and finds them made."""
    for attempt in range(1, attempts + 1):
        try:
            app = factory()
        except (IntegrityError, InternalError, ProgrammingError) as exc:
            if not _lost_creation_race(exc) or attempt == attempts:
                raise
            time.sleep(0.1 * attempt)
        else:
            check_after_idle(app)
            return app
    raise AssertionError("unreachable")


def _lost_creation_race(exc: Exception) -> bool:
    if isinstance(exc, IntegrityError | ProgrammingError):
        return "already exists" in str(exc)
    return "concurrently updated" in str(exc)


def check_after_idle(app: object, check: IdleCheck | None = None) -> None:
    """Installs `check` (a default IdleCheck) on an eventsourcing application's
    PostgreSQL pool (SQLite has none). eventsourcing offers only check-every-checkout
    (POSTGRES_PRE_PING), which costs each read and each write a round trip."""
    datastore = getattr(getattr(app, "recorder", None), "datastore", None)
    pool = getattr(datastore, "pool", None)
    if isinstance(pool, ConnectionPool):
        # psycopg_pool takes `check` only at construction, which eventsourcing does.
        pool._check = check or IdleCheck()
