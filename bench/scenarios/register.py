"""RegisterCustomer throughput (identity on PostgreSQL, the default OWASP argon2id) against
the raw argon2id hash rate with the same parameters on every core."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from bench.harness import Stack
from bench.load import closed_loop
from bench.report import Figure, at_least, cores_note, cpu_figures
from bench.sizes import Sizes
from kizuna.identity.v1 import identity_pb2 as pb
from kizuna.identity.v1.identity_pb2_grpc import IdentityServiceStub
from kizuna_identity.main import argon2_params
from kizuna_identity.passwords import Argon2Params, PasswordHasher
from kizuna_kit.natsd import NatsServer

SITE = "site-a"


def raw_hash_rate(params: Argon2Params, seconds: float) -> float:
    """Hashes/s with the service's own hasher, one thread per core (argon2-cffi releases
    the GIL while hashing, so threads use every core)."""
    hasher = PasswordHasher(params)
    threads = os.cpu_count() or 1
    deadline = time.monotonic() + seconds

    def hash_until_deadline(n: int) -> int:
        count = 0
        while time.monotonic() < deadline:
            hasher.hash(f"correct horse battery {n}-{count}")
            count += 1
        return count

    start = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(hash_until_deadline, range(threads)))
    return total / (time.monotonic() - start)


def register_request(i: int) -> pb.RegisterCustomerRequest:
    return pb.RegisterCustomerRequest(
        site_id=SITE,
        login_id=f"customer-{i}@bench.example.jp",
        password=f"Quiet-lantern-{i}-meadow",
        profile=pb.Profile(given_name="Taro", family_name="Tanaka", locale="ja-JP"),
        channel="ec",
    )


async def run(stack: Stack, sizes: Sizes) -> list[Figure]:
    with stack.nats("register") as nats:
        return await measure(stack, sizes, nats)


async def measure(stack: Stack, sizes: Sizes, nats: NatsServer) -> list[Figure]:
    params = argon2_params({})  # the service default: no environment overrides
    db = stack.database("bench_identity_owasp")
    identity = await stack.start(
        "identity", "identity (OWASP argon2id)", database_url=db, nats=nats
    )
    try:
        async with grpc.aio.insecure_channel(identity.address) as channel:
            stub = IdentityServiceStub(channel)
            await stub.CreateSite(
                pb.CreateSiteRequest(site_id=SITE, display_name="EC A", site_group="brand-1"),
                metadata=stack.metadata,
            )
            registered = await closed_loop(
                lambda i: stub.RegisterCustomer(register_request(i), metadata=stack.metadata),
                concurrency=sizes.register_concurrency,
                seconds=sizes.register_seconds,
                warmup=sizes.warmup_seconds,
                meter=stack.cpu_meter(identity=identity),
            )
        # The service is idle now, so the raw rate gets the same cores to itself.
        raw = await asyncio.to_thread(raw_hash_rate, params, sizes.register_seconds)
    finally:
        stack.stop(identity)
    return [
        Figure(
            "register_vs_argon2",
            registered.per_second / raw,
            at_least(0.8),
            "x",
            reference=f"{registered.per_second:.1f} vs argon2id {raw:.1f} hashes/s",
            note=cores_note(registered.cpu, f"{sizes.register_concurrency} in flight"),
        ),
        Figure("register_rps", registered.per_second, unit="calls/s"),
        Figure("argon2_hashes_per_s", raw, unit="hashes/s"),
        Figure("argon2_memory_kib", params.memory_kib, unit="KiB"),
        Figure("argon2_time_cost", params.time_cost),
        Figure("cpu_count", os.cpu_count() or 1),
        *cpu_figures("register", registered.cpu),
    ]
