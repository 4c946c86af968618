"""RecordConsent throughput (durable on PostgreSQL) against a bare gRPC echo, with the same
client: one grpc.aio channel, the same request messages, the same number in flight.

Consent runs as `consent_replicas` processes on one ledger, the channel balancing calls
round-robin over them, as a client of a scaled deployment would: one consent process is
bound by its interpreter, not by the machine. The echo stays one process, the fastest
bare echo here (two behind the same balancing were slower)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import grpc

from bench.echo import METHOD
from bench.harness import Stack, balanced_channel
from bench.load import Throughput, bounded_gather, closed_loop
from bench.procfs import CpuMeter
from bench.report import Figure, at_least, cores_note, cpu_figures
from bench.sizes import Sizes
from kizuna.consent.v1 import consent_pb2 as pb
from kizuna.consent.v1.consent_pb2_grpc import ConsentServiceStub
from kizuna_kit.natsd import NatsServer

STATEMENT = "marketing-email"


def consent_request(subjects: list[str], i: int) -> pb.RecordConsentRequest:
    return pb.RecordConsentRequest(
        subject_id=subjects[i % len(subjects)],
        statement_id=STATEMENT,
        version="1.0",
        decision=pb.DECISION_GRANTED if i % 3 else pb.DECISION_WITHDRAWN,
        channel="ec",
        site_id="site-a",
        evidence=pb.Evidence(
            ip="203.0.113.7", user_agent="Mozilla/5.0 (bench)", collected_by="web-form"
        ),
    )


async def run(stack: Stack, sizes: Sizes) -> list[Figure]:
    with stack.nats("record-consent") as nats:
        return await measure(stack, sizes, nats)


async def measure(stack: Stack, sizes: Sizes, nats: NatsServer) -> list[Figure]:
    rng = random.Random(1)
    subjects = [f"bench-subject-{n:06d}" for n in range(sizes.consent_subjects)]
    rng.shuffle(subjects)
    md = stack.metadata

    async def load(call: Callable[[int], Awaitable[object]], meter: CpuMeter) -> Throughput:
        return await closed_loop(
            call,
            concurrency=sizes.concurrency,
            seconds=sizes.throughput_seconds,
            warmup=sizes.warmup_seconds,
            meter=meter,
        )

    echo = await stack.start("echo", "echo")
    try:
        async with grpc.aio.insecure_channel(echo.address) as channel:
            call = channel.unary_unary(
                METHOD,
                request_serializer=pb.RecordConsentRequest.SerializeToString,
                response_deserializer=pb.RecordConsentRequest.FromString,
            )
            echoed = await load(
                lambda i: call(consent_request(subjects, i), metadata=md),
                stack.cpu_meter(echo=echo),
            )
    finally:
        stack.stop(echo)

    db = stack.database("bench_consent_writes")
    replicas = [
        await stack.start("consent", f"consent (writes) {n}", database_url=db, nats=nats)
        for n in range(1, sizes.consent_replicas + 1)
    ]
    try:
        async with balanced_channel(replicas) as channel:
            stub = ConsentServiceStub(channel)
            await stub.PublishStatement(
                pb.PublishStatementRequest(
                    statement_id=STATEMENT,
                    version="1.0",
                    purpose="marketing",
                    title="E-mail offers",
                    text="We may send you offers by e-mail.",
                ),
                metadata=md,
            )
            # Every subject once first: a subject's first consent also creates its
            # evidence key (an extra transaction) that steady traffic would not pay.
            await bounded_gather(
                lambda i: stub.RecordConsent(consent_request(subjects, i), metadata=md),
                len(subjects),
                sizes.concurrency,
            )
            recorded = await load(
                lambda i: stub.RecordConsent(consent_request(subjects, i), metadata=md),
                stack.cpu_meter(nats=nats, **{f"consent{n}": r for n, r in enumerate(replicas, 1)}),
            )
    finally:
        for replica in replicas:
            stack.stop(replica)

    return [
        Figure(
            "record_consent_vs_echo",
            recorded.per_second / echoed.per_second,
            at_least(0.5),
            "x",
            reference=(
                f"{recorded.per_second:,.0f} vs echo {echoed.per_second:,.0f} calls/s"
                f" ({len(replicas)} consent processes)"
            ),
            note=f"RecordConsent {cores_note(recorded.cpu)}; echo {cores_note(echoed.cpu)}",
        ),
        Figure("record_consent_rps", recorded.per_second, unit="calls/s"),
        Figure("echo_rps", echoed.per_second, unit="calls/s"),
        Figure("record_consent_concurrency", sizes.concurrency, unit="in flight"),
        Figure("record_consent_replicas", len(replicas), unit="processes"),
        *cpu_figures("record_consent", recorded.cpu),
        *cpu_figures("echo", echoed.cpu),
    ]
