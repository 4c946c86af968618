"""Filling profile-sync's inbox with synthetic IDENTITY events in bulk (binary COPY), the
way the consumers would have left it: one row per event, seq = stream position, and
each event's customer in inbox_customers.

Each customer registers, then updates its profile round after round, customers
interleaved, so a rebuild folds many events into each profile."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from kizuna.identity.v1 import events_pb2 as ev
from kizuna.identity.v1 import identity_pb2 as ipb
from kizuna_kit.wire import OutgoingEvent, envelope
from kizuna_profilesync.storage.factory import open_store

STREAM = "IDENTITY"
COPY = "COPY inbox (seq, stream, position, envelope) FROM STDIN (FORMAT BINARY)"
COPY_CUSTOMERS = "COPY inbox_customers (customer_id, seq) FROM STDIN (FORMAT BINARY)"
ADDRESS = ipb.PostalAddress(
    postal_code="100-0001", region="Tokyo", locality="Chiyoda-ku", street="1-1", country="JP"
)


def customer_id(n: int) -> str:
    return str(uuid.UUID(int=0xC_0570 << 64 | n))


def events(customers: int, total: int) -> Iterator[tuple[int, str, bytes]]:
    """(position, customer id, serialized Envelope) for `total` events over `customers`
    customers."""
    ids = [customer_id(n) for n in range(customers)]
    start = datetime(2025, 1, 1, tzinfo=UTC)
    position = 0
    round_ = 0
    while position < total:
        for n, customer in enumerate(ids):
            position += 1
            if position > total:
                return
            at = start + timedelta(seconds=position)
            profile = ipb.Profile(
                given_name=f"Taro-{round_}",
                family_name="Tanaka",
                phone="+81-3-0000-0000",
                locale="ja-JP",
                postal_address=ADDRESS,
                attributes={"tier": "gold" if n % 3 else "silver"},
            )
            payload: ev.CustomerRegistered | ev.CustomerProfileUpdated
            if round_ == 0:
                payload = ev.CustomerRegistered(
                    customer_id=customer,
                    site_id="site-a",
                    login_id=f"c{n}@bench.example.jp",
                    profile=profile,
                    channel="ec",
                )
            else:
                payload = ev.CustomerProfileUpdated(
                    customer_id=customer, profile=profile, changed_fields=["given_name"]
                )
            event = OutgoingEvent(
                subject=f"identity.customer.{customer}",
                aggregate_id=customer,
                aggregate_version=round_ + 1,
                occurred_at=at,
                recorded_at=at,
                payload=payload,
            )
            yield (
                position,
                customer,
                envelope("identity", STREAM, position, event).SerializeToString(),
            )
        round_ += 1


def seed_inbox(url: str, data_dir: Path, customers: int, total: int) -> float:
    """Creates profile-sync's schema (its own store does), then COPYs the events in;
    returns events/s."""
    open_store(url, data_dir / "unused.sqlite").close()
    begin = time.monotonic()
    # Two connections: one connection runs one COPY at a time.
    with psycopg.connect(url) as conn, psycopg.connect(url) as owners_conn:
        with conn.cursor().copy(COPY) as copy, owners_conn.cursor().copy(COPY_CUSTOMERS) as owners:
            copy.set_types(["bigint", "text", "bigint", "bytea"])
            owners.set_types(["text", "bigint"])
            for position, customer, data in events(customers, total):
                copy.write_row((position, STREAM, position, data))
                owners.write_row((customer, position))
        conn.execute("ANALYZE inbox")
        owners_conn.execute("ANALYZE inbox_customers")
    return total / (time.monotonic() - begin)
