"""A connector's configuration, event-sourced so who changed what and when is auditable.

The webhook secret never enters an event: the application checks it (`check_secret`),
stores it encrypted or in a secret store, and passes the aggregate an opaque `secret_ref`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import PurePosixPath
from urllib.parse import urlsplit
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from kizuna_profilesync.domain.export_format import ExportFormat
from kizuna_profilesync.domain.gating import EventType
from kizuna_profilesync.domain.profile import UnknownField, check_field_path
from kizuna_profilesync.domain.webhooks import InvalidSecret, secret_key


class ConnectorKind(StrEnum):
    WEBHOOK = "WEBHOOK"
    FILE_EXPORT = "FILE_EXPORT"


NAMESPACE = UUID("0c7d3f6e-8a41-5b2e-9d6f-6b697a756e61")
CONNECTOR_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
# Same rule as the consent service's statement ids.
STATEMENT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MAX_URL = 2048
MAX_DIRECTORY = 4096
MIN_SECRET_BYTES = 24  # Standard Webhooks: 24 to 64 bytes; we allow longer raw secrets
MAX_SECRET_BYTES = 256
MAX_REASON = 500
MAX_LIST = 100


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything an update may replace (the kind and id never change)."""

    webhook_url: str = ""
    secret_ref: str = ""
    directory: str = ""
    export_format: str = ""
    event_types: tuple[str, ...] = ()
    required_statements: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()


class Connector(Aggregate):
    @staticmethod
    def create_id(connector_id: str) -> UUID:
        return uuid5(NAMESPACE, f"connector:{connector_id}")

    @event("Created")
    def __init__(
        self,
        connector_id: str,
        kind: str,
        webhook_url: str,
        secret_ref: str,
        directory: str,
        export_format: str,
        event_types: list[str],
        required_statements: list[str],
        fields: list[str],
    ) -> None:
        self.connector_id = connector_id
        self.kind = ConnectorKind(kind)
        self._set(
            webhook_url, secret_ref, directory, export_format, event_types, required_statements
        )
        self.fields = fields
        self.paused = False
        self.paused_reason = ""
        self.deleted = False

    @classmethod
    def create(cls, connector_id: str, kind: str, settings: Settings) -> Connector:
        connector_kind = check_kind(kind)
        checked = check_settings(connector_kind, settings)
        return cls(
            check_connector_id(connector_id),
            connector_kind.value,
            checked.webhook_url,
            checked.secret_ref,
            checked.directory,
            checked.export_format,
            list(checked.event_types),
            list(checked.required_statements),
            list(checked.fields),
        )

    def recreate(self, kind: str, settings: Settings) -> None:
        """A deleted connector's id taken again: a new connector under the old id (its
        deliveries and holdings went with the deletion), its history kept."""
        if not self.deleted:
            raise ConnectorExists(self.connector_id)
        connector_kind = check_kind(kind)
        checked = check_settings(connector_kind, settings)
        self._recreated(connector_kind.value)
        self._update_to(checked)

    @event("Recreated")
    def _recreated(self, kind: str) -> None:
        self.kind = ConnectorKind(kind)
        self.paused = False
        self.paused_reason = ""
        self.deleted = False

    @property
    def settings(self) -> Settings:
        return Settings(
            webhook_url=self.webhook_url,
            secret_ref=self.secret_ref,
            directory=self.directory,
            export_format=self.export_format,
            event_types=tuple(self.event_types),
            required_statements=tuple(self.required_statements),
            fields=tuple(self.fields),
        )

    def update(self, settings: Settings) -> None:
        """Replaces the settings; an empty secret_ref keeps the current one. No event when
        nothing changes, so a repeated request leaves no noise in the audit trail."""
        self.check_not_deleted()
        if self.kind == ConnectorKind.WEBHOOK and not settings.secret_ref:
            settings = replace(settings, secret_ref=self.secret_ref)
        checked = check_settings(self.kind, settings)
        if checked != self.settings:
            self._update_to(checked)

    def _update_to(self, checked: Settings) -> None:
        self._updated(
            checked.webhook_url,
            checked.secret_ref,
            checked.directory,
            checked.export_format,
            list(checked.event_types),
            list(checked.required_statements),
            list(checked.fields),
        )

    @event("Updated")
    def _updated(
        self,
        webhook_url: str,
        secret_ref: str,
        directory: str,
        export_format: str,
        event_types: list[str],
        required_statements: list[str],
        fields: list[str],
    ) -> None:
        self._set(
            webhook_url, secret_ref, directory, export_format, event_types, required_statements
        )
        self.fields = fields

    def pause(self, reason: str) -> None:
        """Idempotent: pausing a paused connector (a second 410) records nothing."""
        self.check_not_deleted()
        if not self.paused:
            self._paused(reason.strip()[:MAX_REASON])

    @event("Paused")
    def _paused(self, reason: str) -> None:
        self.paused = True
        self.paused_reason = reason

    def resume(self) -> None:
        self.check_not_deleted()
        if self.paused:
            self._resumed()

    @event("Resumed")
    def _resumed(self) -> None:
        self.paused = False
        self.paused_reason = ""

    def delete(self) -> None:
        self.check_not_deleted()
        self._deleted()

    @event("Deleted")
    def _deleted(self) -> None:
        self.deleted = True

    def check_not_deleted(self) -> None:
        if self.deleted:
            raise ConnectorDeleted(self.connector_id)

    def _set(
        self,
        webhook_url: str,
        secret_ref: str,
        directory: str,
        export_format: str,
        event_types: list[str],
        required_statements: list[str],
    ) -> None:
        self.webhook_url = webhook_url
        self.secret_ref = secret_ref
        self.directory = directory
        self.export_format = export_format
        self.event_types = event_types
        self.required_statements = required_statements


# --- Rules ------------------------------------------------------------------------------


def check_connector_id(value: str) -> str:
    if not CONNECTOR_ID.match(value):
        raise InvalidConnector(
            "connector_id must be 1 to 63 lower-case letters, digits, '.', '_' or '-'",
            field="connector_id",
        )
    return value


def check_kind(value: str) -> ConnectorKind:
    try:
        return ConnectorKind(value)
    except ValueError:
        raise InvalidConnector("kind must be WEBHOOK or FILE_EXPORT", field="kind") from None


def check_settings(kind: ConnectorKind, settings: Settings) -> Settings:
    """The settings checked and normalised for this kind of connector."""
    common = Settings(
        event_types=check_event_types(settings.event_types),
        required_statements=check_required_statements(settings.required_statements),
        fields=check_fields(settings.fields),
    )
    if kind == ConnectorKind.WEBHOOK:
        if settings.directory or settings.export_format:
            raise InvalidConnector(
                "file_export settings are only for FILE_EXPORT connectors", field="file_export"
            )
        if not settings.secret_ref:
            raise InvalidConnector("a webhook connector needs a secret", field="webhook.secret")
        return replace(
            common,
            webhook_url=check_webhook_url(settings.webhook_url),
            secret_ref=settings.secret_ref,
        )
    if settings.webhook_url or settings.secret_ref:
        raise InvalidConnector("webhook settings are only for WEBHOOK connectors", field="webhook")
    return replace(
        common,
        directory=check_directory(settings.directory),
        export_format=check_export_format(settings.export_format).value,
    )


def check_webhook_url(url: str) -> str:
    if not url or len(url) > MAX_URL or any(c.isspace() or ord(c) < 32 for c in url):
        raise InvalidConnector("webhook.url must be an http(s) URL", field="webhook.url")
    if not url.isascii():
        # An HTTP request line and host header are ASCII: an international host goes in
        # its punycode form (xn--...), other characters percent-encoded.
        raise InvalidConnector(
            "webhook.url must be ASCII: punycode for the host, percent-encoding elsewhere",
            field="webhook.url",
        )
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise InvalidConnector("webhook.url has an invalid port", field="webhook.url") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidConnector(
            "webhook.url must be an http(s) URL with a host", field="webhook.url"
        )
    if parts.username is not None or parts.password is not None:
        # Credentials in the URL would be stored in events and shown by ListConnectors.
        raise InvalidConnector("webhook.url must not carry credentials", field="webhook.url")
    if parts.fragment:
        raise InvalidConnector("webhook.url must not have a fragment", field="webhook.url")
    return url


def check_secret(secret: str) -> bytes:
    """The HMAC key of a secret the caller gave: "whsec_<base64>" or raw text, decoding to
    24 to 256 bytes. The application calls this before storing the secret elsewhere."""
    try:
        key = secret_key(secret)
    except InvalidSecret as error:
        raise InvalidConnector(str(error), field="webhook.secret") from None
    if len(key) < MIN_SECRET_BYTES:
        raise InvalidConnector(
            f"webhook.secret must be at least {MIN_SECRET_BYTES} bytes", field="webhook.secret"
        )
    if len(key) > MAX_SECRET_BYTES:
        raise InvalidConnector(
            f"webhook.secret must be at most {MAX_SECRET_BYTES} bytes", field="webhook.secret"
        )
    return key


def check_directory(directory: str) -> str:
    path = PurePosixPath(directory)
    if (
        not directory.startswith("/")
        or len(directory) > MAX_DIRECTORY
        or "\x00" in directory
        or ".." in path.parts
    ):
        raise InvalidConnector(
            "file_export.directory must be an absolute path without '..'",
            field="file_export.directory",
        )
    return str(path)


def check_export_format(value: str) -> ExportFormat:
    try:
        return ExportFormat(value)
    except ValueError:
        raise InvalidConnector(
            "file_export.format must be JSONL or CSV", field="file_export.format"
        ) from None


def check_event_types(values: Iterable[str]) -> tuple[str, ...]:
    """Known names only. A connector that filters must keep deletions: withdrawals and
    erasures have to reach every connector that holds the customer."""
    chosen = _unique(values, "event_types")
    known = {t.value for t in EventType}
    unknown = [v for v in chosen if v not in known]
    if unknown:
        raise InvalidConnector(
            f"unknown event_types: {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            field="event_types",
        )
    if chosen and EventType.DELETED.value not in chosen:
        raise InvalidConnector(
            f"event_types must include {EventType.DELETED.value}", field="event_types"
        )
    return chosen


def check_required_statements(values: Iterable[str]) -> tuple[str, ...]:
    chosen = _unique(values, "required_statements")
    bad = [v for v in chosen if not STATEMENT_ID.match(v)]
    if bad:
        raise InvalidConnector(
            f"invalid statement ids: {', '.join(bad)}", field="required_statements"
        )
    return chosen


def check_fields(values: Iterable[str]) -> tuple[str, ...]:
    chosen = _unique(values, "fields")
    for path in chosen:
        try:
            check_field_path(path)
        except UnknownField as error:
            raise InvalidConnector(str(error), field="fields") from None
    return chosen


def _unique(values: Iterable[str], field: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(v.strip() for v in values))
    if len(chosen) > MAX_LIST:
        raise InvalidConnector(f"{field} may hold at most {MAX_LIST} entries", field=field)
    return chosen


# --- Errors -----------------------------------------------------------------------------


class ConnectorError(Exception):
    """Base of profile-sync's connector errors; `metadata` is safe to show the caller."""

    def __init__(self, message: str, **metadata: str) -> None:
        super().__init__(message)
        self.metadata = metadata


class InvalidConnector(ConnectorError):
    """INVALID_ARGUMENT; metadata["field"] names the offending request field."""


class ConnectorNotFound(ConnectorError):
    def __init__(self, connector_id: str) -> None:
        super().__init__("no connector with this id", connector_id=connector_id)


class ConnectorDeleted(ConnectorNotFound):
    """A deleted connector answers like a missing one (NOT_FOUND)."""


class ConnectorExists(ConnectorError):
    def __init__(self, connector_id: str) -> None:
        super().__init__("a connector with this id exists", connector_id=connector_id)
