"""`python -m bench --quick` end to end: it starts what it needs, measures, and writes every
figure as a number. No timing is asserted: a quick run's figures mean little."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KEYS = [
    "record_consent_vs_echo",
    "register_vs_argon2",
    "consent_state_at_p99_ms",
    "export_subjects_per_s",
    "webhook_lag_p99_ms",
    "webhook_lag_p50_ms",
    "rebuild_events_per_s",
    "rss_peak_mib_identity",
    "rss_peak_mib_consent",
    "rss_peak_mib_profilesync",
    # the raw figures the ratios are taken against, and the sizes actually measured
    "echo_rps",
    "argon2_hashes_per_s",
    "export_subjects_per_s_size",
    "rebuild_events_per_s_size",
    # where the webhook lag is spent: identity's relay, commit -> stored in JetStream
    "webhook_published_p99_ms",
]


def test_quick_bench_writes_every_figure_as_a_number(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    results = json.loads(out.read_text())
    for key in KEYS:
        assert key in results, key
    for key, value in results.items():
        assert type(value) in (int, float), (key, value)
        assert value >= 0, (key, value)
    for key in KEYS[:7]:
        assert key in run.stdout  # a row of the printed table
