"""The auditor's `kizuna` commands against a running consent service."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from kizuna.consent.v1 import consent_pb2 as pb
from kizuna_consent.domain.records import Decision
from kizuna_consent.domain.statements import Version
from kizuna_consent.storage.interface import NewConsent
from tests.conftest import Keys
from tests.integration.consent.service import Consent, running_consent

pytestmark = pytest.mark.e2e
KIZUNA = str(Path(sys.executable).parent / "kizuna")
SUBJECTS = 100_000


@pytest.fixture
async def consent(tmp_path: Path, keys: Keys) -> AsyncIterator[Consent]:
    async with running_consent(tmp_path / "consent", keys, None, None) as running:
        await running.call(
            "PublishStatement",
            pb.PublishStatementRequest(
                statement_id="marketing-email", version="1.0", title="Mail", text="Mail us."
            ),
        )
        yield running


async def kizuna(
    consent: Consent, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KIZUNA_CONSENT_ADDR": f"127.0.0.1:{consent.service.server.port}",
        "KIZUNA_TOKEN": token or consent.keys.auditor,
    }
    return await asyncio.to_thread(
        subprocess.run,
        [KIZUNA, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def offline(*args: str) -> subprocess.CompletedProcess[str]:
    """The command with no service address or token: nothing to reach."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIZUNA_")}
    return await asyncio.to_thread(
        subprocess.run,
        [KIZUNA, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def seed(consent: Consent, subjects: int) -> None:
    """Records straight through the application (real storage), in large groups."""
    app = consent.service.app
    effective = datetime(2025, 1, 10, tzinfo=UTC)
    for start in range(0, subjects, 5000):
        app.append(
            [
                NewConsent(
                    record_id=f"r-{i}",
                    subject_id=f"subject-{i:06d}",
                    statement_id="marketing-email",
                    version=Version(1, 0),
                    decision=Decision.GRANTED if i % 3 else Decision.WITHDRAWN,
                    effective_at=effective,
                    channel="ec",
                    site_id="shop",
                    evidence=b"{}",
                    idempotency_key=None,
                )
                for i in range(start, min(start + 5000, subjects))
            ]
        )


async def test_consent_state_command(consent: Consent) -> None:
    await consent.call(
        "RecordConsent",
        pb.RecordConsentRequest(
            subject_id="tanaka",
            statement_id="marketing-email",
            version="1.0",
            decision=pb.DECISION_GRANTED,
            effective_at=Timestamp(seconds=1736500000),
        ),
    )
    result = await kizuna(consent, "consent", "state", "--subject", "tanaka", "--at", "2025-02-01")
    assert result.returncode == 0, result.stderr
    assert "marketing-email" in result.stdout
    assert "GRANTED" in result.stdout
    before = await kizuna(consent, "consent", "state", "--subject", "tanaka", "--at", "2025-01-01")
    assert "NOT_GIVEN" in before.stdout
    bad = await kizuna(consent, "consent", "state", "--subject", "tanaka", "--at", "last tuesday")
    assert bad.returncode != 0
    assert bad.stderr.count("\n") == 1, "errors are one line"
    denied = await kizuna(
        consent,
        "consent",
        "state",
        "--subject",
        "tanaka",
        "--at",
        "2025-02-01",
        token="kz.nobody.secret",
    )
    assert denied.returncode != 0
    assert "UNAUTHENTICATED" in denied.stderr


async def test_consent_export_of_100k_subjects(consent: Consent, tmp_path: Path) -> None:
    await asyncio.to_thread(seed, consent, SUBJECTS)
    out = tmp_path / "state.csv"
    result = await kizuna(consent, "consent", "export", "--at", "2025-02-01", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"{SUBJECTS:,} rows" in result.stderr  # the progress line's last state
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == SUBJECTS
    assert rows[0]["subject_id"] == "subject-000000"
    for i in (0, 1, 2, 99_999):
        row = rows[i]
        assert row["subject_id"] == f"subject-{i:06d}"
        assert row["status"] == ("GRANTED" if i % 3 else "WITHDRAWN")
        assert row["version"] == "1.0"
    early = tmp_path / "early.csv"
    result = await kizuna(consent, "consent", "export", "--at", "2025-01-01", "--out", str(early))
    assert result.returncode == 0, result.stderr
    assert early.read_text().count("\n") == 1  # only the header: nothing was effective yet


async def test_offline_ledger_verification(consent: Consent, tmp_path: Path) -> None:
    await asyncio.to_thread(seed, consent, 300)
    ledger, checkpoint = tmp_path / "ledger.jsonl", tmp_path / "checkpoint.txt"
    result = await kizuna(
        consent, "ledger", "export", "--out", str(ledger), "--checkpoint", str(checkpoint)
    )
    assert result.returncode == 0, result.stderr
    online = await kizuna(consent, "ledger", "verify")
    assert online.returncode == 0
    assert "ledger OK: 300 records" in online.stdout

    # No service needed from here on.
    ok = await offline("ledger", "verify", "--file", str(ledger), "--checkpoint", str(checkpoint))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "checkpoint signature OK" in ok.stdout

    lines = ledger.read_text().splitlines()
    record = json.loads(lines[41])
    record["channel"] = "app"  # one changed field of sequence 42
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join([*lines[:41], json.dumps(record), *lines[42:]]) + "\n")
    bad = await offline(
        "ledger", "verify", "--file", str(tampered), "--checkpoint", str(checkpoint)
    )
    assert bad.returncode == 3
    assert "first bad sequence 42" in bad.stdout

    missing = tmp_path / "missing.jsonl"
    missing.write_text("\n".join(lines[:100] + lines[101:]) + "\n")
    gone = await offline(
        "ledger", "verify", "--file", str(missing), "--checkpoint", str(checkpoint)
    )
    assert gone.returncode == 3
    assert "first bad sequence 101" in gone.stdout
