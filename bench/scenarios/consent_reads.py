"""Point-in-time reads on a seeded ledger: GetConsentState for a subject with many records
(latency, one call at a time), then ExportConsentState over every subject (throughput)."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime, timedelta

import grpc

from bench.harness import Stack
from bench.load import percentile
from bench.report import Figure, at_least, at_most, cores_note, cpu_figures
from bench.seed_consent import (
    RecordMaker,
    consent_service,
    publish_statements,
    seed_subject,
    seed_subjects,
    seeding_window,
    utcnow,
)
from bench.sizes import Sizes
from kizuna.consent.v1 import consent_pb2 as pb
from kizuna.consent.v1.consent_pb2_grpc import ConsentServiceStub
from kizuna_kit.wire import timestamp

HOT_SUBJECT = "bench-subject-with-history"
FULL_EXPORT = 1_000_000


async def run(stack: Stack, sizes: Sizes) -> list[Figure]:
    url = stack.database("bench_consent_reads")
    window = seeding_window(utcnow())
    service = consent_service(
        url, stack.root / "consent-seeding", stack.keys_file, stack.signing_key
    )
    try:
        make = RecordMaker(window, seed=2)
        await asyncio.to_thread(publish_statements, service.app)
        await asyncio.to_thread(
            seed_subject, service.app, make, HOT_SUBJECT, sizes.state_records, sizes.seed_batch
        )
        seed_rate = await asyncio.to_thread(
            seed_subjects, service.app, make, sizes.export_subjects, sizes.seed_batch
        )
    finally:
        await service.close()

    # Without NATS: its relay would otherwise publish every seeded record meanwhile.
    consent = await stack.start("consent", "consent (reads)", database_url=url)
    try:
        async with grpc.aio.insecure_channel(consent.address) as channel:
            stub = ConsentServiceStub(channel)
            latencies = await state_latencies(
                stub, stack, window.start, window.end, sizes.state_calls
            )
            export_at = window.end + timedelta(days=1)
            meter = stack.cpu_meter(consent=consent)
            meter.start()
            subjects, rows, seconds = await export(stub, stack, export_at)
            export_cpu = meter.stop()
    finally:
        stack.stop(consent)

    expected = sizes.export_subjects + 1  # and the hot subject
    if subjects != expected:
        raise RuntimeError(f"export streamed {subjects} subjects, expected {expected}")
    p99 = percentile(latencies, 99) * 1000
    # Seeding went through the application, not RPCs; the reading service had no NATS, so
    # its relay was not publishing the seeded records meanwhile.
    note = "rows batched into messages; reads ran with the relay idle"
    if sizes.export_subjects < FULL_EXPORT:
        note = f"measured over {sizes.export_subjects:,} subjects, not the goal's 1,000,000; {note}"
    return [
        Figure(
            "consent_state_at_p99_ms",
            p99,
            at_most(10),
            "ms",
            reference=f"p50 {percentile(latencies, 50) * 1000:.2f} ms, "
            f"{sizes.state_records:,} records, {len(latencies):,} calls",
        ),
        Figure("consent_state_at_p50_ms", percentile(latencies, 50) * 1000, unit="ms"),
        Figure("consent_state_at_records", sizes.state_records, unit="records"),
        Figure(
            "export_subjects_per_s",
            subjects / seconds,
            at_least(100_000),
            "subjects/s",
            reference=f"{subjects:,} subjects ({rows:,} rows) in {seconds:.1f} s",
            note=cores_note(export_cpu, note),
        ),
        Figure("export_subjects_per_s_size", subjects, unit="subjects"),
        Figure("consent_seed_records_per_s", seed_rate, unit="records/s"),
        *cpu_figures("export", export_cpu),
    ]


async def state_latencies(
    stub: ConsentServiceStub, stack: Stack, start: datetime, end: datetime, calls: int
) -> list[float]:
    """Sequential calls at random effective times across the subject's history."""
    rng = random.Random(3)
    latencies: list[float] = []
    for n in range(calls + calls // 10):  # the first tenth warms up and is not counted
        request = pb.GetConsentStateRequest(
            subject_id=HOT_SUBJECT, at=timestamp(start + (end - start) * rng.random())
        )
        begin = time.perf_counter()
        await stub.GetConsentState(request, metadata=stack.metadata)
        if n >= calls // 10:
            latencies.append(time.perf_counter() - begin)
    return latencies


async def export(stub: ConsentServiceStub, stack: Stack, at: datetime) -> tuple[int, int, float]:
    """(subjects, rows, seconds) of one ExportConsentState streamed to the end."""
    subjects = rows = 0
    last = ""
    begin = time.perf_counter()
    stream = stub.ExportConsentState(
        pb.ExportConsentStateRequest(at=timestamp(at)), metadata=stack.metadata
    )
    async for message in stream:
        for row in message.states:
            rows += 1
            if row.subject_id != last:  # rows come ordered by subject
                subjects += 1
                last = row.subject_id
    return subjects, rows, time.perf_counter() - begin
