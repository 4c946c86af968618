"""`kizuna consent ...` and `kizuna ledger ...`: the auditor's commands."""

from __future__ import annotations

import base64
import csv
import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any, TextIO

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from kizuna.consent.v1 import consent_pb2 as pb
from kizuna.consent.v1.consent_pb2_grpc import ConsentServiceStub
from kizuna_cli.client import CliError, Target, parse_when
from kizuna_consent.domain.chain import verify_chain
from kizuna_consent.domain.checkpoint import decode_checkpoint, verify_checkpoint
from kizuna_consent.domain.instants import parse_instant
from kizuna_consent.domain.records import ConsentRecord, Decision
from kizuna_consent.domain.statements import Version

STATUS = {v: k.removeprefix("CONSENT_STATUS_") for k, v in pb.ConsentStatus.items()}


def stub(target: Target) -> tuple[grpc.Channel, ConsentServiceStub]:
    channel = grpc.insecure_channel(target.address)
    return channel, ConsentServiceStub(channel)


def state(target: Target, subject: str, at: str, as_known_at: str | None, out: TextIO) -> int:
    request = pb.GetConsentStateRequest(subject_id=subject, at=parse_when(at, "--at"))
    if as_known_at:
        request.as_known_at.CopyFrom(parse_when(as_known_at, "--as-known-at"))
    channel, consent = stub(target)
    with channel:
        reply = consent.GetConsentState(request, metadata=target.metadata, timeout=30)
    out.write(
        f"subject {reply.subject_id} at {at}"
        + (f" as known at {as_known_at}" if as_known_at else "")
        + "\n"
    )
    for entry in reply.entries:
        since = entry.effective_at.ToDatetime(tzinfo=UTC).isoformat() if entry.record_id else ""
        out.write(
            f"  {entry.statement_id:<24} {STATUS[entry.status]:<10} {entry.version:<6} {since}\n"
        )
    return 0


class Progress:
    """One status line on stderr, refreshed a few times a second."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self.started = time.monotonic()
        self._shown = 0.0

    def tick(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if now - self._shown > 0.2:
            self._shown = now
            self._show()

    def done(self) -> None:
        self._show()
        sys.stderr.write("\n")

    def _show(self) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        sys.stderr.write(f"\r{self.what}: {self.count:,} rows ({self.count / elapsed:,.0f} rows/s)")
        sys.stderr.flush()


def export(
    target: Target, at: str, as_known_at: str | None, statement: str | None, path: Path
) -> int:
    request = pb.ExportConsentStateRequest(at=parse_when(at, "--at"), statement_id=statement or "")
    if as_known_at:
        request.as_known_at.CopyFrom(parse_when(as_known_at, "--as-known-at"))
    partial = path.with_name(path.name + ".partial")
    progress = Progress(f"exporting to {path}")
    channel, consent = stub(target)
    with channel, partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject_id", "statement_id", "status", "version", "effective_at"])
        for message in consent.ExportConsentState(request, metadata=target.metadata):
            writer.writerows(
                [
                    row.subject_id,
                    row.statement_id,
                    STATUS[row.status],
                    row.version,
                    row.effective_at.ToDatetime(tzinfo=UTC).isoformat(),
                ]
                for row in message.states
            )
            progress.tick(len(message.states))
    partial.replace(path)  # never leave a half file under the real name
    progress.done()
    return 0


def verify_online(target: Target, out: TextIO) -> int:
    channel, consent = stub(target)
    with channel:
        reply = consent.VerifyLedger(pb.VerifyLedgerRequest(), metadata=target.metadata)
    return report(
        reply.ok,
        reply.records_checked,
        reply.root_hash,
        reply.first_bad_sequence,
        reply.reason,
        out,
    )


def report(
    ok: bool, checked: int, root: bytes, first_bad: int | None, reason: str, out: TextIO
) -> int:
    if ok:
        out.write(f"ledger OK: {checked:,} records, root {root.hex()}\n")
        return 0
    out.write(
        f"ledger TAMPERED: first bad sequence {first_bad} ({reason}); {checked:,} records checked\n"
    )
    return 3


def export_ledger(target: Target, path: Path, checkpoint_path: Path | None) -> int:
    channel, consent = stub(target)
    progress = Progress(f"exporting ledger to {path}")
    partial = path.with_name(path.name + ".partial")
    with channel, partial.open("w") as handle:
        # The checkpoint first: every record it covers is in the export that follows.
        reply = consent.GetCheckpoint(pb.GetCheckpointRequest(), metadata=target.metadata)
        for row in consent.ExportLedger(pb.ExportLedgerRequest(), metadata=target.metadata):
            handle.write(json.dumps(ledger_json(row)) + "\n")
            progress.tick()
    partial.replace(path)
    progress.done()
    if checkpoint_path is not None:
        checkpoint_path.write_text(reply.checkpoint.text)
        key_path = checkpoint_path.with_name(checkpoint_path.name + ".pub")
        key_path.write_text(base64.b64encode(reply.public_key).decode() + "\n")
        print(
            f"checkpoint of size {reply.checkpoint.size:,} in {checkpoint_path}, "
            f"public key in {key_path}"
        )
    return 0


def ledger_json(row: pb.ExportLedgerResponse) -> dict[str, Any]:
    return {
        "sequence": row.sequence,
        "record_id": row.record_id,
        "subject_id": row.subject_id,
        "statement_id": row.statement_id,
        "version": row.version,
        "decision": row.decision,
        "effective_at": row.effective_at,
        "recorded_at": row.recorded_at,
        "channel": row.channel,
        "site_id": row.site_id,
        "evidence": base64.b64encode(row.evidence).decode(),
        "idempotency_key": row.idempotency_key if row.has_idempotency_key else None,
        "prev_hash": row.prev_hash.hex(),
        "record_hash": row.record_hash.hex(),
    }


def record_from_json(document: dict[str, Any]) -> ConsentRecord:
    return ConsentRecord(
        sequence=int(document["sequence"]),
        record_id=document["record_id"],
        subject_id=document["subject_id"],
        statement_id=document["statement_id"],
        version=Version.parse(document["version"]),
        decision=Decision(document["decision"]),
        effective_at=parse_instant(document["effective_at"], "effective_at"),
        recorded_at=parse_instant(document["recorded_at"], "recorded_at"),
        channel=document["channel"],
        site_id=document["site_id"],
        evidence=base64.b64decode(document["evidence"]),
        idempotency_key=document["idempotency_key"],
        prev_hash=bytes.fromhex(document["prev_hash"]),
        record_hash=bytes.fromhex(document["record_hash"]),
    )


@dataclass(frozen=True)
class Head:
    size: int
    root_hash: bytes


def verify_offline(
    ledger: Path, checkpoint_path: Path, public_key: Path | None, out: TextIO
) -> int:
    """Checks an exported ledger against a checkpoint with no service running."""
    checkpoint = decode_checkpoint(checkpoint_path.read_text())
    key_path = public_key or checkpoint_path.with_name(checkpoint_path.name + ".pub")
    if key_path.exists():
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(key_path.read_text().strip()))
        if not verify_checkpoint(key, checkpoint):
            out.write("checkpoint signature INVALID\n")
            return 3
        out.write(f"checkpoint signature OK (key {checkpoint.key_id})\n")
    else:
        out.write(f"no public key at {key_path}: checkpoint signature not checked\n")

    def records() -> Any:
        with ledger.open() as handle:
            for line in handle:
                if line.strip():
                    try:
                        yield record_from_json(json.loads(line))
                    except (ValueError, KeyError) as exc:
                        raise CliError(
                            f"{ledger}: unreadable record ({type(exc).__name__})"
                        ) from None

    result = verify_chain(records(), checkpoint=Head(checkpoint.size, checkpoint.root_hash))
    return report(
        result.ok,
        result.records_checked,
        result.root_hash,
        result.first_bad_sequence,
        result.reason or "",
        out,
    )
