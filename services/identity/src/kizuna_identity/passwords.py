"""argon2id password hashing (OWASP: m=19 MiB, t=2, p=1 or stronger)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


@dataclass(frozen=True)
class Argon2Params:
    memory_kib: int = 19 * 1024
    time_cost: int = 2
    parallelism: int = 1


class PasswordHasher:
    """Hashes and checks passwords on `concurrency` threads of its own (default: one per
    core); callers block until theirs is done.

    argon2id releases the GIL and is memory-hard: more hashes in flight than cores only
    thrash the caches (each wants `memory_kib` to itself), and every thread that ever
    hashed keeps a malloc arena sized for it. Few, dedicated threads bound both."""

    def __init__(
        self, params: Argon2Params = Argon2Params(), *, concurrency: int | None = None
    ) -> None:
        self._threads = ThreadPoolExecutor(concurrency or os.cpu_count() or 1, "argon2")
        self._hasher = Argon2Hasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            type=Type.ID,
        )
        # Checked when a login id is unknown, so that case costs the same time.
        self._decoy = self._hasher.hash("kizuna-decoy-password")

    def hash(self, password: str) -> str:
        return str(self._threads.submit(self._hasher.hash, password).result())

    def verify(self, password_hash: str | None, password: str) -> bool:
        try:
            matches = self._threads.submit(
                self._hasher.verify, password_hash or self._decoy, password
            ).result()
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return bool(matches) and password_hash is not None
