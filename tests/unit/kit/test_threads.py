import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from kizuna_kit.threads import OwnThreads


async def test_runs_while_the_shared_pool_is_blocked() -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(1))
    started, hold = threading.Event(), threading.Event()

    def occupy() -> None:
        started.set()
        hold.wait(10)

    busy = loop.run_in_executor(None, occupy)
    assert started.wait(5)
    own = OwnThreads("worker")
    try:
        name = await asyncio.wait_for(own.run(lambda: threading.current_thread().name), 5)
        assert name.startswith("worker")
        assert await own.run(divmod, 7, 2) == (3, 1)
    finally:
        hold.set()
        await busy
