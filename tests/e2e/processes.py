"""Service processes under test: waiting until they serve, and what they logged as errors
for a failing test's message (their logs live in the test's tmp_path, which CI does not
keep)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kizuna_kit.testing.waiting import eventually


async def serving(address: str) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=1
        )
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def all_serving(addresses: Iterable[str], logs: Path, within: float = 60) -> None:
    """Returns once every address reports SERVING; fails with the logged errors if not."""
    try:
        for address in addresses:
            await eventually(lambda a=address: serving(a), within=within)  # type: ignore[misc]
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logged_errors(logs)}") from exc


def logged_errors(directory: Path, limit: int = 4000) -> str:
    """The error lines (JSON level error, or anything that is not JSON) of every *.log."""
    shown = []
    for path in sorted(directory.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                level = json.loads(line).get("level")
            except (ValueError, AttributeError):
                level = "raw"
            if level in {"error", "critical", "raw"}:
                shown.append(f"{path.name}: {line}")
    text = "\n".join(shown)
    return text[-limit:] if text else "(no errors logged)"
