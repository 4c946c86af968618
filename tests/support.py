"""Calling a service under test, and asserting on its errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from kizuna_kit.errors import error_info
from tests.conftest import Keys


@dataclass
class Caller:
    stub: Any
    keys: Keys
    # Something that moves whenever the service writes (the log's last position).
    position: Callable[[], object]

    async def call(self, method: str, request: Any, token: str | None = None) -> Any:
        return await getattr(self.stub, method)(
            request, metadata=Keys.auth(token or self.keys.admin)
        )

    async def stream(self, method: str, request: Any, token: str | None = None) -> list[Any]:
        call = getattr(self.stub, method)(request, metadata=Keys.auth(token or self.keys.admin))
        return [item async for item in call]

    async def fails(
        self,
        method: str,
        request: Any,
        code: grpc.StatusCode,
        reason: str,
        token: str | None = None,
        *,
        streaming: bool = False,
    ) -> grpc.aio.AioRpcError:
        """Asserts the call fails with `code` and `reason`, and that it wrote nothing."""
        before = self.position()
        invoke = self.stream if streaming else self.call
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await invoke(method, request, token)
        error = caught.value
        assert error.code() == code, error.details()
        info = error_info(error.trailing_metadata())
        assert info is not None
        assert info.reason == reason, info
        assert "Traceback" not in (error.details() or "")
        assert self.position() == before, "a failed call must change nothing"
        return error
