import threading
import time
from concurrent.futures import ThreadPoolExecutor

from kizuna_identity.passwords import Argon2Params, PasswordHasher

CHEAP = Argon2Params(memory_kib=64, time_cost=1)


class OverlapMeter:
    """Stands in for argon2's hasher and records how many calls ran at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.most = 0

    def _enter(self) -> None:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.01)
        with self._lock:
            self.running -= 1

    def hash(self, password: str) -> str:
        self._enter()
        return "hash"

    def verify(self, password_hash: str, password: str) -> bool:
        self._enter()
        return True


def test_hashes_and_checks_a_password() -> None:
    hasher = PasswordHasher(CHEAP)
    stored = hasher.hash("Quiet-lantern-meadow")
    assert stored.startswith("$argon2id$")
    assert hasher.verify(stored, "Quiet-lantern-meadow")
    assert not hasher.verify(stored, "quiet-lantern-meadow")
    assert not hasher.verify(None, "Quiet-lantern-meadow")  # the decoy never matches
    assert not hasher.verify("not a hash", "Quiet-lantern-meadow")


def test_no_more_hashes_in_flight_than_slots() -> None:
    hasher = PasswordHasher(CHEAP, concurrency=2)
    meter = OverlapMeter()
    hasher._hasher = meter  # type: ignore[assignment]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(hasher.hash, ["pw"] * 12))
        list(pool.map(lambda _: hasher.verify("h", "pw"), range(12)))
    assert meter.most == 2
