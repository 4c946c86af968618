"""How big each benchmark is: the full run (the reported figures) and --quick."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    quick: bool
    settle_seconds: float  # idle after a service starts, before its memory at rest is read
    # Closed-loop throughput runs (echo, RecordConsent, RegisterCustomer, raw argon2).
    warmup_seconds: float
    throughput_seconds: float
    concurrency: int  # calls in flight from the one client process
    consent_subjects: int  # RecordConsent picks subjects from this many
    consent_replicas: int  # consent processes sharing one ledger, behind one channel
    register_seconds: float
    register_concurrency: int
    # Point-in-time reads.
    state_records: int  # records of the one subject GetConsentState is asked about
    state_calls: int
    export_subjects: int
    seed_batch: int  # records per append transaction while seeding
    # Identity commit -> webhook.
    webhook_rate: int  # events/s, open loop
    webhook_low_rate: int  # a first phase at this rate: the path's lag without a backlog
    webhook_seconds: float
    webhook_customers: int  # registered first; UpdateProfile goes round-robin over them
    webhook_drain_seconds: float  # how long to wait for the last webhooks
    # Projection rebuild.
    rebuild_events: int
    rebuild_customers: int


FULL = Sizes(
    quick=False,
    settle_seconds=2.0,
    warmup_seconds=2.0,
    throughput_seconds=10.0,
    concurrency=64,
    consent_subjects=1_000,
    consent_replicas=2,
    register_seconds=15.0,
    register_concurrency=16,
    state_records=10_000,
    state_calls=2_000,
    export_subjects=1_000_000,
    seed_batch=10_000,
    webhook_rate=1_000,
    webhook_low_rate=100,
    webhook_seconds=10.0,
    webhook_customers=2_000,
    webhook_drain_seconds=60.0,
    rebuild_events=1_000_000,
    rebuild_customers=100_000,
)

# Everything small: for development and the smoke test (the figures mean little).
QUICK = Sizes(
    quick=True,
    settle_seconds=0.3,
    warmup_seconds=0.3,
    throughput_seconds=1.0,
    concurrency=16,
    consent_subjects=50,
    consent_replicas=2,
    register_seconds=1.0,
    register_concurrency=4,
    state_records=1_000,
    state_calls=100,
    export_subjects=5_000,
    seed_batch=1_000,
    webhook_rate=100,
    webhook_low_rate=20,
    webhook_seconds=1.0,
    webhook_customers=50,
    webhook_drain_seconds=20.0,
    rebuild_events=5_000,
    rebuild_customers=500,
)
