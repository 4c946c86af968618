from __future__ import annotations

import pytest

from kizuna_kit.config import ConfigError, ServiceConfig


def load(**env: str) -> ServiceConfig:
    return ServiceConfig.from_env(
        "identity", default_port=50051, default_metrics_port=9101, env=env
    )


def test_defaults() -> None:
    config = load()
    assert (config.port, config.metrics_port) == (50051, 9101)
    assert config.nats_url == "nats://127.0.0.1:4222"
    assert config.database_url is None
    assert config.sqlite_path.name == "identity.sqlite"


def test_overrides() -> None:
    config = load(
        KIZUNA_IDENTITY_PORT="6000",
        KIZUNA_NATS_URL="nats://a:1,nats://b:2",
        KIZUNA_IDENTITY_DATABASE_URL="postgresql://u:p@db:5432/identity",
    )
    assert config.port == 6000
    assert config.database_url == "postgresql://u:p@db:5432/identity"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KIZUNA_IDENTITY_PORT": "http"}, "KIZUNA_IDENTITY_PORT must be an integer"),
        ({"KIZUNA_IDENTITY_PORT": "70000"}, "between 0 and 65535"),
        ({"KIZUNA_NATS_URL": "http://x"}, "KIZUNA_NATS_URL"),
        ({"KIZUNA_IDENTITY_DATABASE_URL": "mysql://x/y"}, "KIZUNA_IDENTITY_DATABASE_URL"),
        ({"KIZUNA_LOG_LEVEL": "loud"}, "KIZUNA_LOG_LEVEL must be one of"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(**env)


def test_a_service_without_a_keys_file_says_so() -> None:
    with pytest.raises(ConfigError, match="KIZUNA_API_KEYS_FILE"):
        _ = load().required_api_keys_file
    assert load(KIZUNA_API_KEYS_FILE="/etc/k.json").required_api_keys_file.name == "k.json"
