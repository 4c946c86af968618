"""The base of the consent domain's errors; each module defines its own at its bottom."""

from __future__ import annotations


class ConsentError(Exception):
    """A rule of the consent domain was broken; `metadata` is safe to show the caller."""

    def __init__(self, message: str, **metadata: str) -> None:
        super().__init__(message)
        self.metadata = metadata
