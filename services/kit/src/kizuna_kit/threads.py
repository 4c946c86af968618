"""Threads of a background worker's own for its blocking calls.

asyncio.to_thread shares one pool with the RPC handlers; under load a relay, consumer or
delivery worker would queue behind every request in flight and fall seconds behind.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class OwnThreads:
    def __init__(self, name: str, count: int = 1) -> None:
        # Threads start on first use, so an idle worker costs nothing.
        self._executor = ThreadPoolExecutor(count, thread_name_prefix=name)

    async def run(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(call, *args, **kwargs)
        )
