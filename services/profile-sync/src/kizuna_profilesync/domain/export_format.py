"""FILE_EXPORT rendering: one row per customer a connector may see, JSONL or CSV.

Deterministic by construction, so replaying from position 0 gives the same bytes: rows in
customer_id order, JSON with sorted keys and fixed separators, CSV columns in the
connector's field order (every path in `ALL_PATHS` order when it selects none), "\\r\\n"
line ends (RFC 4180), UTF-8 without BOM, and no export time or other clock value inside.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from enum import StrEnum

from kizuna_profilesync.domain.gating import Audience, visible
from kizuna_profilesync.domain.profile import JsonValue, Profile, effective_paths, select, value_at


class ExportFormat(StrEnum):
    JSONL = "JSONL"
    CSV = "CSV"


EXTENSIONS = {ExportFormat.JSONL: "jsonl", ExportFormat.CSV: "csv"}
CSV_LINE_END = "\r\n"


def rows(audience: Audience, profiles: Iterable[Profile]) -> list[Profile]:
    """The profiles this connector may see, in customer_id order."""
    return sorted((p for p in profiles if visible(audience, p)), key=lambda p: p.customer_id)


def columns(fields: Sequence[str]) -> list[str]:
    return ["customer_id", *effective_paths(fields)]


def lines(fmt: ExportFormat, fields: Sequence[str], profiles: Iterable[Profile]) -> Iterator[bytes]:
    """The file's lines (CSV: header first) for profiles already filtered and ordered
    (`rows`, or the same filter and ORDER BY in SQL), so big exports can stream."""
    if fmt == ExportFormat.JSONL:
        for profile in profiles:
            yield jsonl_line(fields, profile)
        return
    yield _csv_line(columns(fields))
    for profile in profiles:
        yield csv_line(fields, profile)


def render(fmt: ExportFormat, fields: Sequence[str], profiles: Iterable[Profile]) -> bytes:
    return b"".join(lines(fmt, fields, profiles))


def jsonl_line(fields: Sequence[str], profile: Profile) -> bytes:
    document = {"customer_id": profile.customer_id, **select(profile, fields)}
    text = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return (text + "\n").encode()


def csv_line(fields: Sequence[str], profile: Profile) -> bytes:
    cells = [profile.customer_id]
    cells += [_cell(value_at(profile, path)) for path in effective_paths(fields)]
    return _csv_line(cells)


def file_name(connector_id: str, position: int, fmt: ExportFormat) -> str:
    """Named by the projection position the export reflects: a replay to the same
    position names (and fills) the same file."""
    return f"{connector_id}-{position:020d}.{EXTENSIONS[fmt]}"


def file_pattern(connector_id: str, fmt: ExportFormat) -> str:
    """A glob matching every `file_name` of this connector and format, and no other
    connector's: exactly twenty digits follow the '-' (an id that starts with this one's
    and a '-' puts more characters there)."""
    return f"{connector_id}-{'[0-9]' * 20}.{EXTENSIONS[fmt]}"


def _cell(value: JsonValue) -> str:
    # Sections and lists go in one cell as compact JSON: unambiguous and stable.
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _csv_line(cells: Sequence[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=CSV_LINE_END).writerow(cells)
    return buffer.getvalue().encode()
