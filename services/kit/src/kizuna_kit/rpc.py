"""The one interceptor every RPC passes: request id, authentication, scope check,
error mapping, one log line and metrics. Servicers only translate proto <-> domain."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from kizuna_kit.auth import ApiKeys, Principal
from kizuna_kit.errors import DETAILS_KEY, ErrorCode, ErrorMap, Failure, failure_for, status_details
from kizuna_kit.metrics import RPC_SECONDS, RPC_TOTAL

log = structlog.get_logger("kizuna.rpc")

# Health and reflection answer without a credential (probes and grpcurl discovery).
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

UNAUTHENTICATED = ErrorCode(grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
PERMISSION_DENIED = ErrorCode(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
INTERNAL = ErrorCode(grpc.StatusCode.INTERNAL, "INTERNAL")


@dataclass(frozen=True)
class RpcPolicy:
    """Per service: the scope each method needs and how its domain errors are reported."""

    service: str
    scopes: Mapping[str, str]
    errors: ErrorMap


class Rejected(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _principal(keys: ApiKeys, policy: RpcPolicy, method: str, context: Any) -> Principal:
    metadata = dict(context.invocation_metadata() or ())
    principal = keys.authenticate(metadata.get("authorization"))
    if principal is None:
        # A client certificate verified against KIZUNA_TLS_CLIENT_CA_FILE.
        names = (context.auth_context() or {}).get("x509_common_name", [])
        principal = keys.by_certificate(n.decode() for n in names)
    if principal is None:
        raise Rejected(Failure(UNAUTHENTICATED, "a valid bearer API key is required", {}))
    scope = policy.scopes.get(method)
    # Deny by default: a method without a declared scope is not callable.
    if scope is None or scope not in principal.scopes:
        raise Rejected(
            Failure(PERMISSION_DENIED, f"this key lacks scope {scope}", {"scope": scope or ""})
        )
    return principal


class RpcInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, keys: ApiKeys, policy: RpcPolicy) -> None:
        self._keys = keys
        self._policy = policy
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        # A method's handler is the same object every call: wrap it once.
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: Any) -> Any:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        # Client-streaming kinds get the same checks: nothing passes unauthenticated.
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(method, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(method, handler.stream_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _begin(self, method: str, context: Any) -> None:
        metadata = dict(context.invocation_metadata() or ())
        request_id = str(metadata.get("x-request-id") or uuid.uuid4().hex)[:64]
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id, method=method)
        principal = _principal(self._keys, self._policy, method, context)
        structlog.contextvars.bind_contextvars(key_id=principal.key_id)

    def _failure(self, exc: BaseException) -> Failure:
        failure = (
            exc.failure if isinstance(exc, Rejected) else failure_for(exc, self._policy.errors)
        )
        if failure is None:
            # The stack trace stays in the server log; the caller gets only the request id.
            log.error("rpc.unexpected_error", exc_info=exc)
            request_id = structlog.contextvars.get_contextvars().get("request_id", "")
            failure = Failure(INTERNAL, f"internal error (request {request_id})", {})
        structlog.contextvars.bind_contextvars(reason=failure.code.reason)
        return failure

    async def _abort(self, context: Any, failure: Failure) -> None:
        details = status_details(failure, self._policy.errors.domain)
        await context.abort(
            failure.code.status, failure.message, trailing_metadata=((DETAILS_KEY, details),)
        )

    def _finish(self, method: str, code: grpc.StatusCode, started: float) -> None:
        elapsed = time.perf_counter() - started
        short = method.rsplit("/", 1)[-1]
        RPC_TOTAL.labels(self._policy.service, short, code.name).inc()
        RPC_SECONDS.labels(self._policy.service, short).observe(elapsed)
        log.info("rpc", code=code.name, ms=round(elapsed * 1000, 2))
        structlog.contextvars.clear_contextvars()

    def _wrap_unary(
        self, method: str, inner: Callable[[Any, Any], Awaitable[Any]]
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        async def handle(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                self._begin(method, context)
                return await inner(request, context)
            except Exception as exc:
                failure = self._failure(exc)
                code = failure.code.status
                await self._abort(context, failure)
                raise  # not reached: abort raises
            finally:
                self._finish(method, code, started)

        return handle

    def _wrap_stream(
        self, method: str, inner: Callable[[Any, Any], AsyncIterator[Any]]
    ) -> Callable[[Any, Any], AsyncIterator[Any]]:
        async def handle(request: Any, context: Any) -> AsyncIterator[Any]:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                self._begin(method, context)
                async for item in inner(request, context):
                    yield item
            except Exception as exc:
                failure = self._failure(exc)
                code = failure.code.status
                await self._abort(context, failure)
            finally:
                self._finish(method, code, started)

        return handle
