"""What erasure leaves of a customer's earlier events: their shape, not their content.

When a customer is erased, every earlier event of theirs is rewritten without personal
data: profiles become empty, password hashes blank. Login ids and external ids get
stand-ins instead ("erased-1", ...), the same stand-in for the same value across
everyone erased together, because later events refer to them (an unlink names the
linked id; a merge carries the merged customer's logins to the survivor). Replaying
the rewritten history therefore applies every event as before and ends in the same
erased state; only the values are gone.

The uniqueness keys the erasure frees forget their holder too: a key's id is derived
from the login id or external id, so its history must not lead to the customer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


class StandIns:
    """One stand-in per distinct value, for everyone erased in one erasure."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}

    def __call__(self, value: str) -> str:
        return self._names.setdefault(value, f"erased-{len(self._names) + 1}")


Redact = Callable[[Any, StandIns], dict[str, Any]]

# Every event a customer or a uniqueness key records, with what erasure blanks in it;
# None: nothing personal (site ids, field names, customer ids, the operator's reason).
REDACTIONS: dict[str, Redact | None] = {
    "Customer.Registered": lambda e, names: {
        "login_id": names(e.login_id),
        "password_hash": "",
        "profile": {},
    },
    "Customer.ProfileUpdated": lambda e, names: {"profile": {}},
    "Customer.SiteJoined": None,
    "Customer.IdentityLinked": lambda e, names: {"external_id": names(e.external_id)},
    "Customer.IdentityUnlinked": lambda e, names: {"external_id": names(e.external_id)},
    "Customer.Absorbed": lambda e, names: {
        "profile": {},
        "credentials": {names(login): "" for login in e.credentials},
        "linked": [[provider, names(external)] for provider, external in e.linked],
    },
    "Customer.Merged": None,
    "Customer.Erased": None,
    "UniqueKey.Created": lambda e, names: {"owner_id": None},
    "UniqueKey.Claimed": lambda e, names: {"owner_id": None},
    "UniqueKey.Released": None,
}


def redacted(event: Any, names: StandIns) -> Any | None:
    """The event without personal data, or None when it holds none."""
    try:
        redact = REDACTIONS[type(event).__qualname__]
    except KeyError:
        # A new kind of event must say what it holds before anyone can be erased.
        raise TypeError(f"no redaction for {type(event).__qualname__}") from None
    return None if redact is None else dataclasses.replace(event, **redact(event, names))
