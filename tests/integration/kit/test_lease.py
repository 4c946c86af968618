"""Two replicas, one lease: only one works at a time, and the other takes over."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from kizuna_kit.cancellation import cancel_and_wait
from kizuna_kit.lease import Lease
from kizuna_kit.nats_link import NatsLink
from kizuna_kit.natsd import NatsServer
from kizuna_kit.testing.waiting import eventually

pytestmark = pytest.mark.integration


async def test_one_holder_at_a_time_and_takeover(nats_server: NatsServer) -> None:
    links = [NatsLink(nats_server.url, name=f"replica-{i}") for i in range(2)]
    leases = [Lease(link, "relay-identity", ttl=1.5) for link in links]
    working: list[int] = []
    overlap = False

    def worker(i: int) -> Callable[[], Coroutine[Any, Any, None]]:
        async def work() -> None:
            nonlocal overlap
            working.append(i)
            if len([w for w in working if w != i]) > 0:
                overlap = True
            try:
                await asyncio.Event().wait()
            finally:
                working.remove(i)

        return work

    tasks = [asyncio.create_task(lease.run(worker(i))) for i, lease in enumerate(leases)]
    try:
        await eventually(lambda: len(working) == 1, within=10)
        first = working[0]
        await asyncio.sleep(2)  # renewals keep it; the standby waits
        assert working == [first]
        await cancel_and_wait([tasks[first]])  # the holder goes away cleanly
        await eventually(lambda: working == [1 - first], within=10)

        # Someone else takes the key (as after a long pause of the holder): the holder
        # fails to renew and must stop working; once the key expires a replica resumes.
        tasks[first] = asyncio.create_task(leases[first].run(worker(first)))
        js = await links[0].jetstream()
        kv = await js.key_value("kizuna_leases")
        await kv.put("relay-identity", b"intruder")
        await eventually(lambda: working == [], within=10)
        await eventually(lambda: len(working) == 1, within=10)
        assert not overlap
    finally:
        await cancel_and_wait(tasks)
        for link in links:
            await link.close()
