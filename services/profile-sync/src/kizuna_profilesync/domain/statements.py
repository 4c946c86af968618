"""Statement versions as profile-sync sees them: the latest MAJOR of each statement.

A grant of an older MAJOR than the latest one published is OUTDATED (the consent
service's rule): the customer must consent again, and until then a connector that
requires the statement does not see them. Profiles keep the ledger's decision (GRANTED);
`resolve` reads it against the catalogue, as the consent service does at read time, so a
new version changes no stored profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TypeAlias

from kizuna_profilesync.domain.profile import ConsentEntry, ConsentStatus, Profile

# statement id -> the latest MAJOR published
Catalogue: TypeAlias = Mapping[str, int]
EMPTY: Catalogue = {}


def major_of(version: str) -> int | None:
    """The MAJOR of a "MAJOR.MINOR" version; None when it is not one."""
    head, dot, tail = version.partition(".")
    if not dot or not head.isdigit() or not tail.isdigit():
        return None
    return int(head)


def with_version(catalogue: Catalogue, statement_id: str, major: int) -> Catalogue:
    """The catalogue once `major` of the statement is published; the same object when it
    changes nothing (an older MAJOR, or a MINOR of the latest)."""
    if catalogue.get(statement_id, -1) >= major:
        return catalogue
    return {**catalogue, statement_id: major}


def is_outdated(statement_id: str, entry: ConsentEntry, catalogue: Catalogue) -> bool:
    latest = catalogue.get(statement_id)
    if latest is None or entry.status != ConsentStatus.GRANTED:
        return False
    major = major_of(entry.version)
    # A version that does not parse cannot show it is current: not a grant to rely on.
    return major is None or major < latest


def resolve(profile: Profile, catalogue: Catalogue) -> Profile:
    """The profile with its outdated grants read as OUTDATED; the same object when none is."""
    if not catalogue:
        return profile
    outdated = [
        sid for sid, entry in profile.consents.items() if is_outdated(sid, entry, catalogue)
    ]
    if not outdated:
        return profile
    consents = dict(profile.consents)
    for sid in outdated:
        consents[sid] = replace(consents[sid], status=ConsentStatus.OUTDATED)
    return replace(profile, consents=consents)


def resolved(profile: Profile | None, catalogue: Catalogue) -> Profile | None:
    return None if profile is None else resolve(profile, catalogue)


def statements_changed(before: Catalogue, after: Catalogue) -> set[str]:
    """The statements whose latest MAJOR differs between two catalogues."""
    return {s for s in before.keys() | after.keys() if before.get(s) != after.get(s)}
