"""Rebuilding profile-sync's projection from position 0: `ProfileSyncApplication.rebuild()`
(read the whole inbox, fold every event into profiles, replace the stored profiles) in a
profile-sync process of its own, over an inbox seeded in bulk."""

from __future__ import annotations

import asyncio
import json
import sys

from bench.harness import COMMANDS, REPO, Stack
from bench.procfs import ProcessMemory
from bench.report import Figure, at_least
from bench.seed_inbox import seed_inbox
from bench.sizes import Sizes

FULL_REBUILD = 1_000_000


async def run(stack: Stack, sizes: Sizes) -> list[Figure]:
    url = stack.database("bench_profilesync_rebuild")
    data_dir = stack.root / "profilesync-rebuild"
    data_dir.mkdir(parents=True, exist_ok=True)
    seed_rate = await asyncio.to_thread(
        seed_inbox, url, data_dir, sizes.rebuild_customers, sizes.rebuild_events
    )
    _, prefix = COMMANDS["profilesync"]
    env = {
        **stack.service_env(),
        prefix + "DATABASE_URL": url,
        "KIZUNA_DATA_DIR": str(data_dir),
        "KIZUNA_NATS_URL": "nats://127.0.0.1:1",
    }
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.rebuild_worker",
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await worker.communicate()
    if worker.returncode != 0:
        raise RuntimeError(f"rebuild worker failed:\n{err.decode(errors='replace')[-3000:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    stack.memory.append(
        ProcessMemory(
            "profilesync", "profile-sync (rebuild)", result["rest_mib"], result["peak_mib"]
        )
    )
    events = int(result["events"])
    if events != sizes.rebuild_events:
        raise RuntimeError(f"rebuild folded {events} events, seeded {sizes.rebuild_events}")
    rate = events / result["seconds"]
    note = ""
    if events < FULL_REBUILD:
        note = f"measured over {events:,} events, not the goal's 1,000,000"
    return [
        Figure(
            "rebuild_events_per_s",
            rate,
            at_least(50_000),
            "events/s",
            reference=f"{events:,} events over {sizes.rebuild_customers:,} customers "
            f"in {result['seconds']:.1f} s",
            note="; ".join(
                part
                for part in (
                    note,
                    f"the inbox alone reads at {result['read_events_per_s']:,.0f} events/s",
                    f"rebuild process {result['cores']:.2f} cores busy",
                )
                if part
            ),
        ),
        Figure("rebuild_events_per_s_size", events, unit="events"),
        Figure("rebuild_read_only_events_per_s", result["read_events_per_s"], unit="events/s"),
        Figure("rebuild_cpu_worker_cores", result["cores"], unit="cores"),
        Figure("rebuild_seed_events_per_s", seed_rate, unit="events/s"),
    ]
