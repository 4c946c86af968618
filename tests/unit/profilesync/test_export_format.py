"""FILE_EXPORT rendering: content, and byte-for-byte determinism on replay."""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna_profilesync.domain.export_format import (
    ExportFormat,
    columns,
    file_name,
    render,
    rows,
)
from kizuna_profilesync.domain.profile import Profile
from kizuna_profilesync.domain.projection import project, run

from .builders import ALICE, BOB, CAROL, consent, later, registered


@dataclass(frozen=True)
class Audience:
    required_statements: Sequence[str] = ("marketing-email",)
    fields: Sequence[str] = ("given_name", "postal_address.country", "attributes", "login_ids")
    event_types: Sequence[str] = ()


def events() -> list[Envelope]:
    return [
        registered(CAROL, position=1, login="c@example.com", given_name='Carol, "C"\nJr.'),
        registered(ALICE, position=2, given_name="花子", addr_country="JP", attr_tier="gold"),
        registered(BOB, position=3, login="b@example.com", given_name="Bob"),
        consent(ALICE, granted=True, sequence=1),
        consent(CAROL, granted=True, sequence=2),
        consent(BOB, granted=True, sequence=3),
        consent(BOB, granted=False, sequence=4, effective=later(1)),
    ]


def replay(evs: list[Envelope]) -> list[Profile]:
    profiles: dict[str, Profile] = {}
    for event in evs:
        for customer_id, change in run(profiles, project(event)).items():
            assert change.after is not None
            profiles[customer_id] = change.after
    # Dict order follows arrival; rendering must not depend on it.
    items = list(profiles.values())
    random.Random(len(items)).shuffle(items)
    return items


def test_jsonl_content() -> None:
    out = render(ExportFormat.JSONL, Audience.fields, rows(Audience(), replay(events())))
    lines = out.decode().split("\n")
    assert lines[-1] == ""
    assert [json.loads(line)["customer_id"] for line in lines[:-1]] == [ALICE, CAROL]
    assert lines[0] == (
        '{"attributes":{"tier":"gold"},"customer_id":"' + ALICE + '",'
        '"given_name":"花子","login_ids":["a@example.com"],"postal_address":{"country":"JP"}}'
    )


def test_csv_content() -> None:
    out = render(ExportFormat.CSV, Audience.fields, rows(Audience(), replay(events())))
    # Header and two rows end in CRLF; the newline inside Carol's quoted name stays as given.
    assert out.count(b"\r\n") == 3
    assert b'"Carol, ""C""\nJr."' in out
    parsed = list(csv.reader(io.StringIO(out.decode(), newline="")))
    assert parsed[0] == columns(Audience.fields)
    assert parsed[0] == [
        "customer_id",
        "given_name",
        "postal_address.country",
        "attributes",
        "login_ids",
    ]
    assert parsed[1] == [ALICE, "花子", "JP", '{"tier":"gold"}', '["a@example.com"]']
    assert parsed[2] == [CAROL, 'Carol, "C"\nJr.', "", "{}", '["c@example.com"]']


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_replay_from_zero_gives_the_same_bytes(fmt: ExportFormat) -> None:
    first = render(fmt, Audience.fields, rows(Audience(), replay(events())))
    second = render(fmt, Audience.fields, rows(Audience(), replay(events())))
    assert first == second
    # Another arrival order of independent customers gives the same file too.
    evs = events()
    reordered = [evs[2], evs[0], evs[1], evs[5], evs[3], evs[4], evs[6]]
    assert render(fmt, Audience.fields, rows(Audience(), replay(reordered))) == first


def test_all_fields_when_none_selected() -> None:
    assert columns(()) == [
        "customer_id",
        "given_name",
        "family_name",
        "phone",
        "birthdate",
        "locale",
        "postal_address",
        "attributes",
        "login_ids",
        "linked_identities",
        "sites",
        "consents",
    ]


def test_csv_header_only_when_nobody_is_visible() -> None:
    out = render(ExportFormat.CSV, ("given_name",), [])
    assert out == b"customer_id,given_name\r\n"
    assert render(ExportFormat.JSONL, ("given_name",), []) == b""


def test_file_name_is_stable() -> None:
    assert file_name("dwh", 1234, ExportFormat.CSV) == "dwh-00000000000000001234.csv"
    assert file_name("dwh", 7, ExportFormat.JSONL) == "dwh-00000000000000000007.jsonl"
