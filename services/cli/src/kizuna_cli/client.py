"""How the CLI reaches a service: address, token, and one-line errors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from kizuna_kit.errors import error_info


class CliError(Exception):
    """Printed as one line, exit status 1."""


@dataclass(frozen=True)
class Target:
    address: str
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


def target(service: str, default_port: int, token_file: Path | None) -> Target:
    name = service.upper().replace("-", "")
    address = os.environ.get(f"KIZUNA_{name}_ADDR") or (
        f"127.0.0.1:{os.environ.get(f'KIZUNA_{name}_PORT') or default_port}"
    )
    token = os.environ.get("KIZUNA_TOKEN")
    if not token:
        path = token_file or Path(
            os.environ.get("KIZUNA_TOKEN_FILE")
            or Path(os.environ.get("KIZUNA_DATA_DIR") or ".kizuna") / "admin.token"
        )
        try:
            token = path.read_text().strip()
        except OSError:
            raise CliError(
                f"no API token: set KIZUNA_TOKEN or give --token-file ({path})"
            ) from None
    return Target(address, token)


def parse_when(text: str, name: str) -> Timestamp:
    """An ISO 8601 time; a bare date means the END of that day (UTC), so "as of
    2025-04-01" includes everything that happened on that day."""
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), time.max, tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        raise CliError(f"{name}: {text!r} is not a date (YYYY-MM-DD) or ISO 8601 time") from None
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def describe(error: grpc.RpcError) -> str:
    code = error.code().name if hasattr(error, "code") else "ERROR"
    details = error.details() if hasattr(error, "details") else str(error)
    info = error_info(error.trailing_metadata()) if hasattr(error, "trailing_metadata") else None
    reason = f" [{info.reason}]" if info is not None else ""
    return f"{code}{reason}: {details}"
