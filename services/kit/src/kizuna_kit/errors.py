"""Errors as callers see them: a gRPC status plus a stable reason in google.rpc.ErrorInfo."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class ErrorCode:
    """How one kind of failure is reported: the status and a reason that never changes."""

    status: grpc.StatusCode
    reason: str


class RequestError(Exception):
    """A request the API layer rejects before it reaches the domain (bad shape, bad value)."""

    def __init__(
        self,
        status: grpc.StatusCode,
        reason: str,
        message: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = ErrorCode(status, reason)
        self.message = message
        self.metadata = dict(metadata or {})


def invalid_argument(reason: str, message: str, **metadata: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, reason, message, metadata)


@dataclass(frozen=True)
class ErrorMap:
    """A service's table from domain exception types to what the caller sees."""

    domain: str
    codes: Mapping[type[Exception], ErrorCode] = field(default_factory=dict)

    def lookup(self, exc: BaseException) -> ErrorCode | None:
        for cls in type(exc).__mro__:
            code = self.codes.get(cls)
            if code is not None:
                return code
        return None


@dataclass(frozen=True)
class Failure:
    code: ErrorCode
    message: str
    metadata: Mapping[str, str]


def failure_for(exc: BaseException, errors: ErrorMap) -> Failure | None:
    """The caller-facing failure for a known exception, or None for an unexpected one."""
    if isinstance(exc, RequestError):
        return Failure(exc.code, exc.message, exc.metadata)
    code = errors.lookup(exc)
    if code is None:
        return None
    metadata = getattr(exc, "metadata", None)
    return Failure(code, str(exc), dict(metadata) if isinstance(metadata, Mapping) else {})


def status_details(failure: Failure, domain: str) -> bytes:
    """The serialized google.rpc.Status carrying the ErrorInfo (rich error model)."""
    info = error_details_pb2.ErrorInfo(
        reason=failure.code.reason, domain=domain, metadata=dict(failure.metadata)
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(
        code=failure.code.status.value[0], message=failure.message, details=[detail]
    )
    return bytes(status.SerializeToString())


def error_info(trailing_metadata: object) -> error_details_pb2.ErrorInfo | None:
    """Reads the ErrorInfo back from a call's trailing metadata (clients and tests)."""
    for key, value in trailing_metadata or ():  # type: ignore[attr-defined]
        if key == DETAILS_KEY:
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info
    return None
