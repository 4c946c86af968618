"""Figures, the printed table, and bench/results.json."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Goal:
    op: str  # ">=" or "<="
    limit: float

    def met(self, value: float) -> bool:
        return value >= self.limit if self.op == ">=" else value <= self.limit

    def __str__(self) -> str:
        return f"{self.op} {fmt(self.limit)}"


@dataclass(frozen=True)
class Figure:
    """One number in results.json; a goal makes it a row of the table."""

    key: str
    value: float
    goal: Goal | None = None
    unit: str = ""
    reference: str = ""  # the raw figure it is compared with, measured in the same run
    note: str = ""


def at_least(limit: float) -> Goal:
    return Goal(">=", limit)


def at_most(limit: float) -> Goal:
    return Goal("<=", limit)


def cpu_figures(prefix: str, shares: dict[str, float]) -> list[Figure]:
    """`<prefix>_cpu_<process>_cores`: the cores each process kept busy while measured."""
    return [
        Figure(f"{prefix}_cpu_{name}_cores", used, unit="cores") for name, used in shares.items()
    ]


def cores_note(shares: dict[str, float], extra: str = "") -> str:
    """`cores busy: consent 0.95, postgres 0.31, ...`, busiest first: where the time went."""
    ranked = sorted(shares.items(), key=lambda kv: -kv[1])
    busy = ", ".join(f"{name} {used:.2f}" for name, used in ranked if used >= 0.005)
    return "; ".join(part for part in (extra, f"cores busy: {busy}" if busy else "") if part)


def fmt(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def table(figures: Sequence[Figure]) -> str:
    """The goals first (figure, value, goal, met, reference), then every raw number."""
    rows = [("figure", "value", "goal", "met", "measured beside it")]
    for f in figures:
        if f.goal is not None:
            met = "yes" if f.goal.met(f.value) else "NO"
            rows.append((f.key, f"{fmt(f.value)} {f.unit}".strip(), str(f.goal), met, f.reference))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 20)
    raw = [f for f in figures if f.goal is None]
    if raw:
        lines += ["", "raw numbers:"]
        width = max(len(f.key) for f in raw)
        lines += [f"  {f.key.ljust(width)}  {fmt(f.value)} {f.unit}".rstrip() for f in raw]
    notes = [f"  {f.key}: {f.note}" for f in figures if f.note]
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines)


def write_results(path: Path, figures: Sequence[Figure]) -> None:
    """Numbers only, keyed by figure; NaN/inf (a figure that could not be taken) become -1
    so the file stays valid JSON, and the note in the table says why."""
    numbers = {f.key: (f.value if math.isfinite(f.value) else -1.0) for f in figures}
    path.write_text(json.dumps(numbers, indent=2, sort_keys=True) + "\n")
