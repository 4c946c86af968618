"""Filling a consent ledger fast: records go through the consent application's own
`append` (hash chain, Merkle peaks, timeline, outbox: the real write path), thousands per
transaction, instead of one RPC each."""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kizuna_consent.application import ConsentApplication
from kizuna_consent.domain.records import Decision
from kizuna_consent.domain.statements import Version
from kizuna_consent.evidence import Evidence, seal
from kizuna_consent.main import ConsentService, build
from kizuna_consent.storage.interface import NewConsent
from kizuna_kit.config import ServiceConfig

STATEMENTS = ("terms", "privacy", "marketing-email", "marketing-sms", "profiling")
V1 = Version(1, 0)
SPAN = timedelta(days=730)  # effective times fall in the two years before `now - 2 days`
EVIDENCE = Evidence(ip="198.51.100.23", user_agent="Mozilla/5.0 (bench)", collected_by="store-12")


@dataclass(frozen=True)
class Window:
    """The effective times seeded records fall in."""

    start: datetime
    end: datetime

    def random(self, rng: random.Random) -> datetime:
        return self.start + (self.end - self.start) * rng.random()


def seeding_window(now: datetime) -> Window:
    end = now - timedelta(days=2)
    return Window(end - SPAN, end)


def consent_service(url: str, data_dir: Path, keys_file: Path, signing_key: Path) -> ConsentService:
    """The consent service's composition root, in this process, for its application only
    (the server is never started, NATS never connected)."""
    config = ServiceConfig(
        service="consent",
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        nats_url="nats://127.0.0.1:1",
        database_url=url,
        data_dir=data_dir,
        api_keys_file=keys_file,
        log_level="warning",
        log_format="json",
        shutdown_grace_seconds=0.5,
        workers=4,
    )
    return build(config, {"KIZUNA_CONSENT_SIGNING_KEY_FILE": str(signing_key)})


def publish_statements(app: ConsentApplication) -> None:
    for statement in STATEMENTS:
        app.publish_statement(statement, "1.0", statement, statement.title(), f"{statement} v1")


class RecordMaker:
    def __init__(self, window: Window, seed: int) -> None:
        self._window = window
        self._rng = random.Random(seed)
        # Evidence sealed as the service would, under a key of our own: rows have their
        # usual size, and nothing here ever opens them.
        self._key = os.urandom(32)

    def __call__(self, subject: str, statement: str) -> NewConsent:
        record_id = str(uuid.uuid4())
        return NewConsent(
            record_id=record_id,
            subject_id=subject,
            statement_id=statement,
            version=V1,
            decision=Decision.GRANTED if self._rng.random() < 0.7 else Decision.WITHDRAWN,
            effective_at=self._window.random(self._rng),
            channel="store",
            site_id="site-a",
            evidence=seal(EVIDENCE, self._key, record_id.encode()),
            idempotency_key=None,
        )

    def statement(self) -> str:
        return self._rng.choice(STATEMENTS)


def chunks(items: Iterator[NewConsent], size: int) -> Iterator[list[NewConsent]]:
    batch: list[NewConsent] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def seed_subject(
    app: ConsentApplication, make: RecordMaker, subject: str, records: int, batch: int
) -> None:
    """One subject with `records` records spread over every statement."""
    for chunk in chunks((make(subject, make.statement()) for _ in range(records)), batch):
        app.append(chunk)


def subject_id(n: int) -> str:
    # Customer ids are UUIDs in identity; deterministic ones keep runs comparable.
    return str(uuid.UUID(int=0xB_E4C4 << 64 | n))


def seed_subjects(app: ConsentApplication, make: RecordMaker, subjects: int, batch: int) -> float:
    """`subjects` subjects with one record each; returns records/s."""
    start = time.monotonic()
    records = (make(subject_id(n), make.statement()) for n in range(subjects))
    for chunk in chunks(records, batch):
        app.append(chunk)
    return subjects / (time.monotonic() - start)


def utcnow() -> datetime:
    return datetime.now(UTC)
