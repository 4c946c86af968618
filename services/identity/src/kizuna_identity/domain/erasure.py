"""What erasure leaves of a customer's earlier events: their shape, not their content.

When a customer is erased, every earlier event of theirs is rewritten without personal
data: profiles become empty, password hashes blank. Login ids and external ids get
stand-ins instead ("erased-1", ...), the same stand-in for the same value across
everyone erased together, because later events refer to them (an unlink names the
linked id; a merge carries the merged customer's logins to the survivor). Replaying
the rewritten history therefore applies every event as before and ends in the same
erased state; only the values are gone.

The uniqueness keys of every login id and external id the customer ever had forget
that the customer held them: a key's id derives from the value, so its history must
not lead to the customer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from kizuna_identity.domain.keys import external_key_id, login_key_id


class Erasure:
    """One erasure: who is erased, and a stand-in per distinct value their events name
    (per kind, so a login id and an external id that were equal do not show it)."""

    def __init__(self, customer_ids: Iterable[UUID]) -> None:
        self.customer_ids = frozenset(customer_ids)
        self._names: dict[tuple[str, str], str] = {}

    def login(self, value: str) -> str:
        return self._stand_in("login", value)

    def external(self, value: str) -> str:
        return self._stand_in("external", value)

    def _stand_in(self, kind: str, value: str) -> str:
        return self._names.setdefault((kind, value), f"erased-{len(self._names) + 1}")


Redact = Callable[[Any, Erasure], dict[str, Any]]


def _unowned(event: Any, erasure: Erasure) -> dict[str, Any]:
    return {"owner_id": None} if event.owner_id in erasure.customer_ids else {}


# Every event a customer or a uniqueness key records, with what erasure blanks in it;
# None: nothing personal (site ids, field names, customer ids, the operator's reason).
REDACTIONS: dict[str, Redact | None] = {
    "Customer.Registered": lambda e, x: {
        "login_id": x.login(e.login_id),
        "password_hash": "",
        "profile": {},
    },
    "Customer.ProfileUpdated": lambda e, x: {"profile": {}},
    "Customer.SiteJoined": None,
    "Customer.IdentityLinked": lambda e, x: {"external_id": x.external(e.external_id)},
    "Customer.IdentityUnlinked": lambda e, x: {"external_id": x.external(e.external_id)},
    "Customer.Absorbed": lambda e, x: {
        "profile": {},
        "credentials": {x.login(login): "" for login in e.credentials},
        "linked": [[provider, x.external(external)] for provider, external in e.linked],
    },
    "Customer.Merged": None,
    "Customer.Erased": None,
    # A key's later holder, after the erased customer let it go, stays.
    "UniqueKey.Created": _unowned,
    "UniqueKey.Claimed": _unowned,
    "UniqueKey.Released": None,
}


def redacted(event: Any, erasure: Erasure) -> Any | None:
    """The event without the erased customers' personal data, or None when it holds none."""
    try:
        redact = REDACTIONS[type(event).__qualname__]
    except KeyError:
        # A new kind of event must say what it holds before anyone can be erased.
        raise TypeError(f"no redaction for {type(event).__qualname__}") from None
    changes = redact(event, erasure) if redact is not None else {}
    return dataclasses.replace(event, **changes) if changes else None


def keys_named(events: Iterable[Any]) -> set[UUID]:
    """The uniqueness keys of every login id and external id the customer events name."""
    found: set[UUID] = set()
    for event in events:
        kind = type(event).__qualname__
        if kind == "Customer.Registered":
            found.add(login_key_id(event.login_id))
        elif kind in ("Customer.IdentityLinked", "Customer.IdentityUnlinked"):
            found.add(external_key_id(event.provider, event.external_id))
        elif kind == "Customer.Absorbed":
            found.update(login_key_id(login) for login in event.credentials)
            found.update(external_key_id(p, e) for p, e in event.linked)
    return found
