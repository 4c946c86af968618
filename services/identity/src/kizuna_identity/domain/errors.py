"""Domain errors shared by the identity aggregates; the gRPC layer maps each to a status."""

from __future__ import annotations


class IdentityError(Exception):
    """Base of the identity domain's errors; `metadata` is safe to show the caller."""

    def __init__(self, message: str, **metadata: str) -> None:
        super().__init__(message)
        self.metadata = metadata


class NotFound(IdentityError):
    pass


class CustomerNotFound(NotFound):
    pass


class SiteNotFound(NotFound):
    pass


class IdentityNotLinked(NotFound):
    pass


class AlreadyExists(IdentityError):
    pass


class SiteExists(AlreadyExists):
    pass


class LoginIdTaken(AlreadyExists):
    pass


class ExternalIdTaken(AlreadyExists):
    pass


class NotActive(IdentityError):
    """The customer was merged or erased; the change does not apply to it."""


class InvalidMerge(IdentityError):
    pass


class MissingRequiredFields(IdentityError):
    def __init__(self, fields: list[str]) -> None:
        super().__init__(
            f"site requires fields that are missing: {', '.join(fields)}", fields=",".join(fields)
        )
        self.fields = fields


class InvalidValue(IdentityError):
    pass


class VersionConflict(IdentityError):
    pass


class LoginFailed(IdentityError):
    """Wrong password and unknown login are this one error, with one message."""

    def __init__(self) -> None:
        super().__init__("login id or password is wrong")


class LoginLocked(IdentityError):
    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            "too many failed logins; try again later", retry_after_seconds=str(retry_after_seconds)
        )


class SessionInvalid(IdentityError):
    """Unknown, expired or revoked session token."""


class SessionWrongGroup(IdentityError):
    """The session belongs to another site group."""
