"""Identity commit -> webhook received, at a steady rate: UpdateProfile returning (the
commit) to the receiver getting the webhook, through identity's relay, JetStream, the
profile-sync consumer and its delivery worker. Both ends are timed in this process with
time.monotonic, keyed by the webhook-id, which is the identity event id
("identity:<position>", the position UpdateProfile returns).

A low-rate phase runs first: the lag of the path itself, without a backlog.

The lag is also split where the event enters JetStream (its stored timestamp): commit ->
published is identity's relay, published -> received is profile-sync's consumer,
projection and delivery."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from dataclasses import dataclass, field

import grpc
from nats import connect as connect_nats

from bench.harness import ServiceProcess, Stack
from bench.load import bounded_gather, percentile
from bench.receiver import WebhookReceiver
from bench.report import Figure, at_most, cores_note, cpu_figures
from bench.sizes import Sizes
from kizuna.identity.v1 import identity_pb2 as ipb
from kizuna.identity.v1.identity_pb2_grpc import IdentityServiceStub
from kizuna.profilesync.v1 import profilesync_pb2 as ppb
from kizuna.profilesync.v1.profilesync_pb2_grpc import ProfileSyncServiceStub
from kizuna_identity.wire import STREAM
from kizuna_kit.natsd import NatsServer
from kizuna_kit.wire import MSG_ID

# Password hashing is not what this measures; registrations only set the scene.
CHEAP_HASH = {
    "KIZUNA_TESTING": "1",
    "KIZUNA_IDENTITY_ARGON2_MEMORY_KIB": "64",
    "KIZUNA_IDENTITY_ARGON2_TIME_COST": "1",
}
SITE = "site-w"


@dataclass
class Phase:
    rate: int  # asked, events/s
    committed: dict[str, float] = field(default_factory=dict)  # event id -> RPC returned
    sending_seconds: float = 0.0
    errors: int = 0
    first_error: str = ""
    lags_ms: list[float] = field(default_factory=list)
    published_ms: list[float] = field(default_factory=list)  # commit -> stored in JetStream
    calls_ms: list[float] = field(default_factory=list)  # UpdateProfile sent -> returned
    missing: int = 0  # not arrived by the end of the drain
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def achieved(self) -> float:
        return len(self.committed) / self.sending_seconds

    def notes(self, drain: float) -> str:
        notes = []
        if self.missing:
            notes.append(f"{self.missing:,} webhooks had not arrived {drain:.0f} s later")
        if self.errors:
            notes.append(f"{self.errors:,} UpdateProfile calls failed ({self.first_error})")
        if self.achieved < 0.95 * self.rate:
            notes.append(f"identity committed {self.achieved:,.0f}/s of the {self.rate:,}/s asked")
        return "; ".join(notes)


@dataclass
class Setup:
    stack: Stack
    sizes: Sizes
    ids: IdentityServiceStub
    customers: list[str]
    receiver: WebhookReceiver
    identity: ServiceProcess
    profilesync: ServiceProcess
    nats: NatsServer


async def run(stack: Stack, sizes: Sizes) -> list[Figure]:
    with stack.nats("webhook") as nats:
        return await measure(stack, sizes, nats)


async def measure(stack: Stack, sizes: Sizes, nats: NatsServer) -> list[Figure]:
    receiver = WebhookReceiver()
    await receiver.start()
    identity = await stack.start(
        "identity",
        "identity (cheap argon2, webhooks)",
        database_url=stack.database("bench_identity_webhooks"),
        nats=nats,
        env=CHEAP_HASH,
    )
    profilesync = await stack.start(
        "profilesync", "profile-sync", database_url=stack.database("bench_profilesync"), nats=nats
    )
    try:
        async with (
            grpc.aio.insecure_channel(identity.address) as identity_channel,
            grpc.aio.insecure_channel(profilesync.address) as profilesync_channel,
        ):
            ids = IdentityServiceStub(identity_channel)
            await prepare(stack, ProfileSyncServiceStub(profilesync_channel), ids, receiver)
            customers = await register(stack, ids, sizes.webhook_customers)
            # The registrations' webhooks warm the whole path up; they are not measured.
            if not await receiver.wait_for(len(customers), sizes.webhook_drain_seconds):
                raise RuntimeError(
                    f"only {len(receiver.arrivals)} of {len(customers)} registration webhooks"
                )
            setup = Setup(stack, sizes, ids, customers, receiver, identity, profilesync, nats)
            low = await phase(setup, sizes.webhook_low_rate)
            full = await phase(setup, sizes.webhook_rate)
    finally:
        stack.stop(identity)
        stack.stop(profilesync)
        await receiver.close()

    p50, p99 = percentile(full.lags_ms, 50), percentile(full.lags_ms, 99)
    low_p50, low_p99 = percentile(low.lags_ms, 50), percentile(low.lags_ms, 99)
    relay_p50, relay_p99 = percentile(full.published_ms, 50), percentile(full.published_ms, 99)
    call_p50, call_p99 = percentile(full.calls_ms, 50), percentile(full.calls_ms, 99)
    return [
        Figure(
            "webhook_lag_p99_ms",
            p99,
            at_most(50),
            "ms",
            reference=f"p50 {p50:,.1f} ms; {len(full.lags_ms):,} events at {full.achieved:,.0f}/s"
            f"; at {low.rate:,}/s: p50 {low_p50:,.1f}, p99 {low_p99:,.1f} ms"
            f"; commit -> published p50 {relay_p50:,.1f}, p99 {relay_p99:,.1f} ms"
            f"; UpdateProfile itself p50 {call_p50:,.1f}, p99 {call_p99:,.1f} ms",
            note=cores_note(full.cpu, full.notes(sizes.webhook_drain_seconds)),
        ),
        Figure("webhook_lag_p50_ms", p50, unit="ms"),
        Figure("webhook_lag_max_ms", max(full.lags_ms), unit="ms"),
        Figure("webhook_published_p50_ms", relay_p50, unit="ms"),
        Figure("webhook_published_p99_ms", relay_p99, unit="ms"),
        Figure("webhook_update_call_p50_ms", call_p50, unit="ms"),
        Figure("webhook_update_call_p99_ms", call_p99, unit="ms"),
        Figure("webhook_rate_asked", full.rate, unit="events/s"),
        Figure("webhook_rate_committed", full.achieved, unit="events/s"),
        Figure("webhook_events", len(full.lags_ms), unit="events"),
        Figure("webhook_missing", full.missing, unit="events"),
        Figure("webhook_errors", full.errors, unit="calls"),
        *cpu_figures("webhook", full.cpu),
        Figure("webhook_low_rate", low.rate, unit="events/s"),
        Figure("webhook_lag_p99_ms_low_rate", low_p99, unit="ms"),
        Figure("webhook_lag_p50_ms_low_rate", low_p50, unit="ms"),
        Figure("webhook_missing_low_rate", low.missing, unit="events"),
    ]


async def phase(setup: Setup, rate: int) -> Phase:
    """UpdateProfile at `rate`/s for the configured time, then wait for the webhooks."""
    receiver, sizes = setup.receiver, setup.sizes
    meter = setup.stack.cpu_meter(
        identity=setup.identity, profilesync=setup.profilesync, nats=setup.nats
    )
    before = len(receiver.arrivals)
    meter.start()
    result = await open_loop(setup, rate, sizes.webhook_seconds)
    await receiver.wait_for(before + len(result.committed), sizes.webhook_drain_seconds)
    waited_until = time.monotonic()
    result.cpu = meter.stop()
    if not result.committed:
        raise RuntimeError(f"no UpdateProfile succeeded: {result.first_error}")
    for event_id, committed in result.committed.items():
        arrived = receiver.arrivals.get(event_id)
        if arrived is None:
            result.missing += 1
            arrived = waited_until  # counted as arriving at the end: a lower bound
        result.lags_ms.append((arrived - committed) * 1000)
    result.published_ms = await published_lags(setup.nats, result.committed)
    return result


async def published_lags(server: NatsServer, committed: dict[str, float]) -> list[float]:
    """Commit -> stored in JetStream, per event, from the timestamps the server stored.
    Read after the phase, so that reading adds no load to it; JetStream stamps messages
    with the wall clock, which this process shares (converted to time.monotonic)."""
    offset = time.time() - time.monotonic()
    client = await connect_nats(server.url)
    try:
        js = client.jetstream()
        last = (await js.stream_info(STREAM)).state.last_seq
        # The phase's events are the newest; a margin covers anything published around it.
        seqs = range(max(1, last - len(committed) - 100), last + 1)
        messages = await bounded_gather(lambda i: js.get_msg(STREAM, seq=seqs[i]), len(seqs), 64)
    finally:
        await client.close()
    lags = []
    for message in messages:
        event_id = (message.headers or {}).get(MSG_ID, "")
        if event_id in committed and message.time is not None:
            lags.append((message.time.timestamp() - offset - committed[event_id]) * 1000)
    return lags


async def prepare(
    stack: Stack,
    profilesync: ProfileSyncServiceStub,
    ids: IdentityServiceStub,
    receiver: WebhookReceiver,
) -> None:
    await ids.CreateSite(
        ipb.CreateSiteRequest(site_id=SITE, display_name="Web", site_group="brand-w"),
        metadata=stack.metadata,
    )
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    # No required statements, every field: each profile change is one webhook.
    await profilesync.CreateConnector(
        ppb.CreateConnectorRequest(
            connector_id="bench-webhook",
            kind=ppb.CONNECTOR_KIND_WEBHOOK,
            webhook=ppb.WebhookConfig(url=receiver.url, secret=secret),
        ),
        metadata=stack.metadata,
    )


async def register(stack: Stack, ids: IdentityServiceStub, count: int) -> list[str]:
    async def one(i: int) -> str:
        reply = await ids.RegisterCustomer(
            ipb.RegisterCustomerRequest(
                site_id=SITE,
                login_id=f"webhook-{i}@bench.example.jp",
                password=f"Quiet-lantern-{i}-meadow",
                profile=ipb.Profile(given_name="Hanako", family_name="Sato"),
                channel="app",
            ),
            metadata=stack.metadata,
        )
        return str(reply.customer_id)

    return await bounded_gather(one, count, 32)


async def open_loop(setup: Setup, rate: int, seconds: float) -> Phase:
    """UpdateProfile at `rate`/s on a fixed schedule, whatever the replies do (open loop:
    a slow service meets more calls, not fewer), round-robin over the customers."""
    result = Phase(rate)
    customers, metadata = setup.customers, setup.stack.metadata

    async def update(i: int) -> None:
        request = ipb.UpdateProfileRequest(
            customer_id=customers[i % len(customers)],
            profile=ipb.Profile(given_name=f"Hanako-{rate}-{i}"),
        )
        sent = time.monotonic()
        try:
            reply = await setup.ids.UpdateProfile(request, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            result.errors += 1
            result.first_error = result.first_error or f"{exc.code().name}: {exc.details()}"
            return
        returned = time.monotonic()
        result.committed[f"identity:{reply.position}"] = returned
        result.calls_ms.append((returned - sent) * 1000)

    total = int(rate * seconds)
    tasks: list[asyncio.Task[None]] = []
    start = time.monotonic()
    while len(tasks) < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while len(tasks) < due:
            tasks.append(asyncio.create_task(update(len(tasks))))
        await asyncio.sleep(max(0.0, start + due / rate - time.monotonic()))
    await asyncio.gather(*tasks)
    result.sending_seconds = time.monotonic() - start
    return result
