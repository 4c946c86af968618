"""Connector configuration, event-sourced: who changed what and when stays auditable."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import get_topic

from kizuna_profilesync.domain.connector import (
    Connector,
    ConnectorExists,
    ConnectorNotFound,
    Settings,
    check_secret,
)
from kizuna_profilesync.secret_box import SecretBox
from kizuna_profilesync.storage.interface import Target


class ConnectorsApplication(Application[UUID]):
    name = "connectors"

    def __init__(self, env: Mapping[str, str], box: SecretBox) -> None:
        super().__init__(env)
        self._box = box
        self._lock = threading.Lock()
        self._cache: dict[str, Connector] | None = None
        self._cache_at: int | None = None  # the log's last notification when cached

    def create(self, connector_id: str, kind: str, settings: Settings, secret: str) -> Connector:
        if secret:
            check_secret(secret)
            settings = _with_secret(settings, self._box.seal(secret, connector_id))
        connector = Connector.create(connector_id, kind, settings)
        existing = self._load(connector.id)
        if existing is not None:
            existing.recreate(kind, settings)  # ConnectorExists unless it was deleted
            connector = existing
        try:
            self.save(connector)
        except IntegrityError:
            raise ConnectorExists(connector_id) from None
        return connector

    def update(self, connector_id: str, settings: Settings, secret: str) -> Connector:
        connector = self.get(connector_id)
        if secret:
            check_secret(secret)
            settings = _with_secret(settings, self._box.seal(secret, connector_id))
        connector.update(settings)
        return self._saved(connector)

    def pause(self, connector_id: str, reason: str) -> Connector:
        connector = self.get(connector_id)
        connector.pause(reason)
        return self._saved(connector)

    def resume(self, connector_id: str) -> Connector:
        connector = self.get(connector_id)
        connector.resume()
        return self._saved(connector)

    def delete(self, connector_id: str) -> None:
        connector = self.get(connector_id)
        connector.delete()
        self._saved(connector)

    def get(self, connector_id: str) -> Connector:
        connector = self._load(Connector.create_id(connector_id))
        if connector is None or connector.deleted:
            raise ConnectorNotFound(connector_id)
        return connector

    def secret(self, connector: Connector) -> str:
        return self._box.open(connector.settings.secret_ref, connector.connector_id)

    def live(self) -> dict[str, Connector]:
        """Every connector not deleted, by id. Cached while the connectors' log stands
        still: a change made here or on another replica is seen at the next call."""
        last = self.recorder.max_notification_id()
        with self._lock:
            if self._cache is None or self._cache_at != last:
                topic = get_topic(Connector.Created)
                found: dict[str, Connector] = {}
                for notification in self.recorder.select_notifications(
                    1, 1_000_000, topics=[topic]
                ):
                    connector = self._load(UUID(str(notification.originator_id)))
                    if connector is not None and not connector.deleted:
                        found[connector.connector_id] = connector
                self._cache, self._cache_at = found, last
            return dict(self._cache)

    def targets(self) -> list[Target]:
        return [target_of(c) for c in self.live().values()]

    def _saved(self, connector: Connector) -> Connector:
        self.save(connector)
        return connector

    def _load(self, connector_uuid: UUID) -> Connector | None:
        try:
            connector: object = self.repository.get(connector_uuid)
        except AggregateNotFoundError:
            return None
        return connector if isinstance(connector, Connector) else None


def target_of(connector: Connector) -> Target:
    """The connector as the projection and exports see it."""
    return Target(
        connector.connector_id,
        tuple(connector.event_types),
        tuple(connector.required_statements),
        tuple(connector.fields),
    )


def _with_secret(settings: Settings, secret_ref: str) -> Settings:
    return replace(settings, secret_ref=secret_ref)
