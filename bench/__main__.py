"""`python -m bench [--quick]`: start everything, measure, print the table, write
bench/results.json."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.harness import Stack, open_stack
from bench.procfs import ProcessMemory
from bench.report import Figure, at_most, table, write_results
from bench.scenarios import consent_reads, rebuild, record_consent, register, webhook_lag
from bench.sizes import FULL, QUICK, Sizes

Scenario = Callable[[Stack, Sizes], Awaitable[list[Figure]]]
SCENARIOS: dict[str, Scenario] = {
    "record_consent": record_consent.run,
    "register": register.run,
    "consent_reads": consent_reads.run,
    "webhook_lag": webhook_lag.run,
    "rebuild": rebuild.run,
}
SERVICES = ("identity", "consent", "profilesync")


def memory_figures(memory: list[ProcessMemory]) -> list[Figure]:
    """Per service, the highest of its processes: peak over its benchmarks, and at rest."""
    figures = []
    for service in SERVICES:
        mine = [m for m in memory if m.service == service]
        if not mine:
            continue
        peak = max(mine, key=lambda m: m.peak_mib)
        rest = max(mine, key=lambda m: m.rest_mib)
        figures += [
            Figure(
                f"rss_peak_mib_{service}",
                peak.peak_mib,
                at_most(500),
                "MiB",
                reference=f"highest: {peak.label}",
            ),
            Figure(
                f"rss_rest_mib_{service}",
                rest.rest_mib,
                at_most(200),
                "MiB",
                reference=f"highest: {rest.label}",
            ),
        ]
    return figures


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} x {model}, {memory:.0f} GiB RAM, Python {platform.python_version()}"


async def measure(stack: Stack, sizes: Sizes, names: list[str]) -> list[Figure]:
    figures: list[Figure] = []
    for name in names:
        begin = time.monotonic()
        print(f"bench: {name} ...", flush=True)
        figures += await SCENARIOS[name](stack, sizes)
        print(f"bench: {name} done in {time.monotonic() - begin:.0f} s", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for development")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results.json", help="results file"
    )
    parser.add_argument("--only", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    root = Path(tempfile.mkdtemp(prefix="kizuna-bench-"))
    begin = time.monotonic()
    print(f"bench: {'quick' if sizes.quick else 'full'} run on {machine()}; work dir {root}")
    try:
        with open_stack(root) as stack:
            stack.settle_seconds = sizes.settle_seconds
            figures = asyncio.run(measure(stack, sizes, args.only))
            stack.stop_all()
            memory = stack.memory
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    figures += memory_figures(memory)
    figures.append(Figure("bench_seconds", time.monotonic() - begin, unit="s"))
    print()
    print(table(figures))
    print()
    print("processes (MiB):")
    for m in memory:
        print(f"  {m.label:<36} rest {m.rest_mib:6.1f}  peak {m.peak_mib:6.1f}")
    write_results(args.out, figures)
    print(f"\nbench: wrote {args.out}")


if __name__ == "__main__":
    main()
