"""Event store recorders that can rewrite stored events in the transaction that records
new ones.

An event store is append-only, except where the law says otherwise: when a person is
erased, their earlier events must stop holding their personal data. The rewrite goes
with the events that record the erasure, in one transaction, so there is never an
erasure on record whose earlier events still hold what it erased. A rewrite replaces
the state of an existing event (same originator, same version, same topic) and never
moves it in the notification log.

`save(..., rewrites=[...])` on an application with one of these recorders does both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, InfrastructureFactory, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder, POPOFactory
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresFactory
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteFactory
from eventsourcing.utils import get_topic
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier


class PostgresRewritingRecorder(PostgresApplicationRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rewrite_statement = SQL(
            "UPDATE {schema}.{table} SET state = %s"
            " WHERE originator_id = %s AND originator_version = %s"
        ).format(
            schema=Identifier(self.datastore.schema),
            table=Identifier(self.events_table_name),
        )

    def _insert_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        *,
        rewrites: Sequence[StoredEvent] = (),
        **kwargs: Any,
    ) -> None:
        if rewrites:
            # The table lock the insert takes anyway, taken before the first row lock,
            # so that two writers never hold each other's locks.
            self._lock_table(curs)
            curs.executemany(
                self._rewrite_statement,
                [(s.state, s.originator_id, s.originator_version) for s in rewrites],
            )
        super()._insert_events(curs, stored_events, **kwargs)


class SQLiteRewritingRecorder(SQLiteApplicationRecorder):
    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        *,
        rewrites: Sequence[StoredEvent] = (),
        **kwargs: Any,
    ) -> Sequence[int] | None:
        if rewrites:
            c.executemany(
                f"UPDATE {self.events_table_name} SET state = ?"  # noqa: S608 - the recorder's own table name
                " WHERE originator_id = ? AND originator_version = ?",
                [(s.state, _sqlite_id(s.originator_id), s.originator_version) for s in rewrites],
            )
        return super()._insert_events(c, stored_events, **kwargs)


class POPORewritingRecorder(POPOApplicationRecorder):
    def _update_table(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        rewrites: Sequence[StoredEvent] = (),
        **kwargs: Any,
    ) -> Sequence[int] | None:
        # Every place is found before any is written: all or nothing, as in a database.
        places = [
            self._stored_events_index[str(r.originator_id)][r.originator_version] for r in rewrites
        ]
        for place, rewrite in zip(places, rewrites, strict=True):
            self._stored_events[place] = rewrite
        return super()._update_table(stored_events, **kwargs)


_REWRITING = (PostgresRewritingRecorder, SQLiteRewritingRecorder, POPORewritingRecorder)


def rewriting_recorder(factory: InfrastructureFactory[Any]) -> ApplicationRecorder:
    """The factory's application recorder, as one that takes `rewrites`: for an
    Application's `construct_recorder`. Other recorders would ignore the keyword, and
    what should have been rewritten would stay, so anything else is refused."""
    recorder: ApplicationRecorder | None = None
    if isinstance(factory, POPOFactory):
        recorder = POPORewritingRecorder()
    for factory_class, recorder_class in (
        (PostgresFactory, PostgresRewritingRecorder),
        (SQLiteFactory, SQLiteRewritingRecorder),
    ):
        if isinstance(factory, factory_class):
            factory.env[factory.APPLICATION_RECORDER_TOPIC] = get_topic(recorder_class)
            recorder = factory.application_recorder()
    # The environment can name another recorder class, or have PostgreSQL insert through
    # a database function, which bypasses the hook the rewrites run in.
    if not isinstance(recorder, _REWRITING) or getattr(
        getattr(recorder, "datastore", None), "enable_db_functions", False
    ):
        raise TypeError(f"no rewriting recorder with {type(factory).__name__} and this environment")
    return recorder


def _sqlite_id(originator_id: UUID | str) -> str:
    # As eventsourcing's SQLite recorder stores it.
    return originator_id.hex if isinstance(originator_id, UUID) else originator_id
