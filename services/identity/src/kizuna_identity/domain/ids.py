"""Deterministic aggregate ids: uuid5 of a kind and a normalised value."""

from __future__ import annotations

from uuid import UUID, uuid5

NAMESPACE = UUID("6f1c0a52-4b0e-5d57-9a3c-4b697a756e61")


def derived_id(kind: str, value: str) -> UUID:
    return uuid5(NAMESPACE, f"{kind}:{value}")
