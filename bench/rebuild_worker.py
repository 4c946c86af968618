"""A profile-sync process that rebuilds its projection and exits: `python -m
bench.rebuild_worker`, configured by the service's own environment variables. It prints
one JSON line: events folded, seconds, CPU, its memory at rest and at peak (over the
rebuild), and how fast the inbox alone reads."""

from __future__ import annotations

import asyncio
import json
import os
import time

from bench.procfs import cpu_seconds, read_memory
from kizuna_kit.config import ServiceConfig
from kizuna_profilesync.main import build


async def rebuild() -> dict[str, float]:
    config = ServiceConfig.from_env("profilesync", default_port=0, default_metrics_port=0)
    service = build(config, os.environ)  # the composition root; its server never starts
    try:
        rest = read_memory().rss_mib
        begin, cpu = time.monotonic(), cpu_seconds()
        events = await asyncio.to_thread(service.app.rebuild)
        seconds = time.monotonic() - begin
        cores = (cpu_seconds() - cpu) / seconds
        peak = read_memory().peak_mib
        # Where the time goes: the same inbox read and decoded, with no folding at all.
        begin = time.monotonic()
        read = await asyncio.to_thread(lambda: sum(1 for _ in service.store.inbox(1)))
        read_seconds = time.monotonic() - begin
    finally:
        await service.close()
    return {
        "events": events,
        "seconds": seconds,
        "cores": cores,
        "read_events_per_s": read / read_seconds,
        "rest_mib": rest,
        "peak_mib": peak,
    }


def main() -> None:
    print(json.dumps(asyncio.run(rebuild())), flush=True)


if __name__ == "__main__":
    main()
