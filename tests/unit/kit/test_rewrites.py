"""Rewriting recorders: chosen for the application whatever the backend, refused where
the environment would silently drop rewrites, and all or nothing in memory."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import get_topic

from kizuna_kit.rewrites import POPORewritingRecorder, SQLiteRewritingRecorder, rewriting_recorder


class Ledger(Application[UUID]):
    name = "ledger"

    def construct_recorder(self) -> ApplicationRecorder:
        return rewriting_recorder(self.factory)


def stored(originator: UUID, version: int, state: bytes) -> StoredEvent:
    return StoredEvent(originator_id=originator, originator_version=version, topic="t", state=state)


def test_each_backend_gets_its_rewriting_recorder(tmp_path: Path) -> None:
    memory = Ledger({"PERSISTENCE_MODULE": "eventsourcing.popo"})
    assert isinstance(memory.recorder, POPORewritingRecorder)
    sqlite = Ledger(
        {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "db")}
    )
    assert isinstance(sqlite.recorder, SQLiteRewritingRecorder)


def test_an_environment_naming_another_recorder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="no rewriting recorder"):
        Ledger(
            {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(tmp_path / "db"),
                "LEDGER_APPLICATION_RECORDER_TOPIC": get_topic(SQLiteApplicationRecorder),
            }
        )


@pytest.mark.parametrize("backend", ["popo", "sqlite"])
def test_rewrites_replace_states_in_the_same_insert(backend: str, tmp_path: Path) -> None:
    env = {"PERSISTENCE_MODULE": f"eventsourcing.{backend}", "SQLITE_DBNAME": str(tmp_path / "db")}
    ledger = Ledger(env)  # closing it (on collection) would close the recorder
    recorder = ledger.recorder
    a, b = uuid4(), uuid4()
    recorder.insert_events([stored(a, 1, b"a1"), stored(a, 2, b"a2"), stored(b, 1, b"b1")])
    recorder.insert_events([stored(a, 3, b"a3")], rewrites=[stored(a, 1, b"A1")])
    assert [e.state for e in recorder.select_events(a)] == [b"A1", b"a2", b"a3"]
    assert [e.state for e in recorder.select_events(b)] == [b"b1"]
    assert [n.id for n in recorder.select_notifications(1, 10)] == [1, 2, 3, 4]


def test_in_memory_a_rewrite_of_a_missing_event_changes_nothing() -> None:
    ledger = Ledger({"PERSISTENCE_MODULE": "eventsourcing.popo"})
    recorder = ledger.recorder
    a = uuid4()
    recorder.insert_events([stored(a, 1, b"a1")])
    with pytest.raises(KeyError):
        recorder.insert_events(
            [stored(a, 2, b"a2")], rewrites=[stored(a, 1, b"A1"), stored(a, 9, b"A9")]
        )
    assert [e.state for e in recorder.select_events(a)] == [b"a1"]
