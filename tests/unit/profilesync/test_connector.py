"""The event-sourced connector: validation errors, commands, and what events carry."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import replace

import pytest

from kizuna_profilesync.domain.connector import (
    Connector,
    ConnectorDeleted,
    ConnectorExists,
    ConnectorKind,
    InvalidConnector,
    Settings,
    check_secret,
)

HOOK = Settings(
    webhook_url="https://crm.example.com/hooks/kizuna",
    secret_ref="vault:connectors/crm#1",
    event_types=("customer.upserted", "customer.deleted"),
    required_statements=("marketing-email",),
    fields=("given_name", "postal_address.country", "attributes.tier"),
)
EXPORT = Settings(directory="/var/lib/kizuna/exports/", export_format="CSV")


def webhook(**changes: object) -> Connector:
    return Connector.create("crm", "WEBHOOK", replace(HOOK, **changes))  # type: ignore[arg-type]


def test_create_webhook_connector() -> None:
    connector = webhook()
    assert connector.id == Connector.create_id("crm")
    assert connector.kind == ConnectorKind.WEBHOOK
    assert connector.settings == HOOK
    assert not connector.paused
    (created,) = connector.collect_events()
    assert type(created).__name__ == "Created"


def test_create_file_export_normalises_the_directory() -> None:
    connector = Connector.create("dwh", "FILE_EXPORT", EXPORT)
    assert connector.directory == "/var/lib/kizuna/exports"
    assert connector.export_format == "CSV"


@pytest.mark.parametrize(
    ("connector_id", "kind", "settings", "field"),
    [
        ("CRM", "WEBHOOK", HOOK, "connector_id"),
        ("", "WEBHOOK", HOOK, "connector_id"),
        ("-crm", "WEBHOOK", HOOK, "connector_id"),
        ("crm", "SMTP", HOOK, "kind"),
        ("crm", "WEBHOOK", replace(HOOK, webhook_url="ftp://example.com/x"), "webhook.url"),
        ("crm", "WEBHOOK", replace(HOOK, webhook_url="example.com/hook"), "webhook.url"),
        ("crm", "WEBHOOK", replace(HOOK, webhook_url="https:///nohost"), "webhook.url"),
        ("crm", "WEBHOOK", replace(HOOK, webhook_url=""), "webhook.url"),
        ("crm", "WEBHOOK", replace(HOOK, webhook_url="https://a b.com/"), "webhook.url"),
        ("crm", "WEBHOOK", replace(HOOK, webhook_url="https://u:p@x.com/"), "webhook.url"),
        ("crm", "WEBHOOK", replace(HOOK, webhook_url="https://x.com:99999/"), "webhook.url"),
        ("crm", "WEBHOOK", replace(HOOK, webhook_url="https://x.com/#frag"), "webhook.url"),
        ("crm", "WEBHOOK", replace(HOOK, webhook_url="https://例え.jp/hook"), "webhook.url"),
        ("crm", "WEBHOOK", replace(HOOK, webhook_url="https://x.com/フック"), "webhook.url"),
        ("crm", "WEBHOOK", replace(HOOK, secret_ref=""), "webhook.secret"),
        ("crm", "WEBHOOK", replace(HOOK, directory="/tmp"), "file_export"),
        ("crm", "WEBHOOK", replace(HOOK, event_types=("customer.created",)), "event_types"),
        ("crm", "WEBHOOK", replace(HOOK, event_types=("customer.upserted",)), "event_types"),
        (
            "crm",
            "WEBHOOK",
            replace(HOOK, required_statements=("Marketing",)),
            "required_statements",
        ),
        ("crm", "WEBHOOK", replace(HOOK, fields=("password",)), "fields"),
        ("crm", "WEBHOOK", replace(HOOK, fields=("postal_address.city",)), "fields"),
        ("crm", "WEBHOOK", replace(HOOK, fields=("attributes.",)), "fields"),
        (
            "crm",
            "WEBHOOK",
            replace(HOOK, fields=tuple(f"attributes.k{i}" for i in range(101))),
            "fields",
        ),
        ("dwh", "FILE_EXPORT", replace(EXPORT, directory="exports"), "file_export.directory"),
        ("dwh", "FILE_EXPORT", replace(EXPORT, directory="/a/../etc"), "file_export.directory"),
        ("dwh", "FILE_EXPORT", replace(EXPORT, directory=""), "file_export.directory"),
        ("dwh", "FILE_EXPORT", replace(EXPORT, export_format="XML"), "file_export.format"),
        ("dwh", "FILE_EXPORT", replace(EXPORT, export_format=""), "file_export.format"),
        ("dwh", "FILE_EXPORT", replace(EXPORT, webhook_url="https://x.com"), "webhook"),
    ],
)
def test_invalid_settings(connector_id: str, kind: str, settings: Settings, field: str) -> None:
    with pytest.raises(InvalidConnector) as caught:
        Connector.create(connector_id, kind, settings)
    assert caught.value.metadata == {"field": field}


@pytest.mark.parametrize(
    "url", ["http://localhost:8080/hook", "https://x.example.com/a?b=c", "HTTPS://X.COM/"]
)
def test_valid_urls(url: str) -> None:
    assert webhook(webhook_url=url).webhook_url == url


@pytest.mark.parametrize(
    ("secret", "ok"),
    [
        ("whsec_" + base64.b64encode(b"x" * 24).decode(), True),
        ("whsec_" + base64.b64encode(b"x" * 23).decode(), False),
        ("whsec_" + base64.b64encode(b"x" * 64).decode(), True),
        ("whsec_!!notbase64!!", False),
        ("r" * 24, True),
        ("r" * 23, False),
        ("r" * 257, False),
        ("", False),
    ],
)
def test_check_secret(secret: str, ok: bool) -> None:
    if ok:
        assert len(check_secret(secret)) >= 24
    else:
        with pytest.raises(InvalidConnector) as caught:
            check_secret(secret)
        assert caught.value.metadata == {"field": "webhook.secret"}


def test_no_event_holds_a_plaintext_secret() -> None:
    connector = webhook()
    connector.update(replace(HOOK, secret_ref="vault:connectors/crm#2"))
    for event in connector.collect_events():
        assert "whsec_" not in repr(event.__dict__)
        assert not hasattr(event, "secret")


def test_update_replaces_settings_and_keeps_secret_when_empty() -> None:
    connector = webhook()
    connector.update(replace(HOOK, secret_ref="", fields=("family_name",)))
    assert connector.fields == ["family_name"]
    assert connector.secret_ref == HOOK.secret_ref
    assert [type(e).__name__ for e in connector.collect_events()] == ["Created", "Updated"]


def test_update_without_change_records_nothing() -> None:
    connector = webhook()
    connector.update(replace(HOOK, secret_ref=""))
    assert [type(e).__name__ for e in connector.collect_events()] == ["Created"]


def test_update_validates() -> None:
    connector = webhook()
    with pytest.raises(InvalidConnector):
        connector.update(replace(HOOK, webhook_url="mailto:x@example.com"))
    assert connector.webhook_url == HOOK.webhook_url


def test_pause_and_resume_are_idempotent() -> None:
    connector = webhook()
    connector.pause("receiver answered 410")
    connector.pause("again")
    assert (connector.paused, connector.paused_reason) == (True, "receiver answered 410")
    connector.resume()
    connector.resume()
    assert (connector.paused, connector.paused_reason) == (False, "")
    names = [type(e).__name__ for e in connector.collect_events()]
    assert names == ["Created", "Paused", "Resumed"]


def test_deleted_connector_refuses_every_command() -> None:
    connector = webhook()
    connector.delete()
    assert connector.deleted
    commands: list[Callable[[], None]] = [
        lambda: connector.update(HOOK),
        lambda: connector.pause("x"),
        connector.resume,
        connector.delete,
    ]
    for command in commands:
        with pytest.raises(ConnectorDeleted):
            command()


def test_event_types_and_fields_are_deduplicated() -> None:
    connector = webhook(
        event_types=("customer.deleted", "customer.deleted"), fields=("given_name", "given_name")
    )
    assert connector.event_types == ["customer.deleted"]
    assert connector.fields == ["given_name"]


def test_a_deleted_connectors_id_can_be_taken_again() -> None:
    connector = webhook()
    with pytest.raises(ConnectorExists):
        connector.recreate("FILE_EXPORT", EXPORT)  # not while it lives
    connector.pause("maintenance")
    connector.delete()

    connector.recreate("FILE_EXPORT", EXPORT)

    assert (connector.kind, connector.deleted, connector.paused) == (
        ConnectorKind.FILE_EXPORT,
        False,
        False,
    )
    assert connector.settings == replace(EXPORT, directory="/var/lib/kizuna/exports")
    assert [type(e).__name__ for e in connector.collect_events()][-2:] == ["Recreated", "Updated"]
