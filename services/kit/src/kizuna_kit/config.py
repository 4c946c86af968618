"""Service configuration from the environment, with one clear error per bad value."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


def env_int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, *, low: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < low:
        raise ConfigError(f"{name} must be at least {low}, got {value}")
    return value


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_database_url(name: str, url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("postgresql", "postgres") or not parsed.path.strip("/"):
        raise ConfigError(f"{name} must look like postgresql://user@host:port/dbname")
    return url


def check_nats_url(name: str, url: str) -> str:
    for part in url.split(","):
        if urlparse(part.strip()).scheme not in ("nats", "tls", "ws", "wss"):
            raise ConfigError(f"{name} must be nats://host:port (comma-separated for a cluster)")
    return url


@dataclass(frozen=True)
class TlsFiles:
    """Server certificate and key; with `client_ca`, clients must present certificates
    signed by it (mTLS), whose common name can stand for a bearer key (kizuna_kit.auth)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TlsFiles | None:
        cert, key = env.get("KIZUNA_TLS_CERT_FILE"), env.get("KIZUNA_TLS_KEY_FILE")
        if not cert and not key:
            return None
        if not cert or not key:
            raise ConfigError("KIZUNA_TLS_CERT_FILE and KIZUNA_TLS_KEY_FILE go together")
        paths = [Path(cert), Path(key)]
        ca = env.get("KIZUNA_TLS_CLIENT_CA_FILE")
        if ca:
            paths.append(Path(ca))
        for path in paths:
            if not path.is_file():
                raise ConfigError(f"TLS file {path} does not exist")
        return cls(Path(cert), Path(key), Path(ca) if ca else None)


@dataclass(frozen=True)
class ServiceConfig:
    """What every service needs; services add their own settings beside it."""

    service: str
    host: str
    port: int
    metrics_port: int
    nats_url: str
    database_url: str | None
    data_dir: Path
    api_keys_file: Path | None
    log_level: str
    log_format: str
    shutdown_grace_seconds: float
    workers: int
    shutdown_drain_seconds: float = 0.0
    tls: TlsFiles | None = None
    nats_replicas: int = 1

    @property
    def required_api_keys_file(self) -> Path:
        if self.api_keys_file is None:
            raise ConfigError("KIZUNA_API_KEYS_FILE must name the API keys file")
        return self.api_keys_file

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / f"{self.service}.sqlite"

    @classmethod
    def from_env(
        cls,
        service: str,
        *,
        default_port: int,
        default_metrics_port: int,
        env: Mapping[str, str] | None = None,
    ) -> ServiceConfig:
        env = os.environ if env is None else env
        prefix = f"KIZUNA_{service.upper().replace('-', '')}_"
        database_url = env.get(prefix + "DATABASE_URL") or None
        if database_url is not None:
            check_database_url(prefix + "DATABASE_URL", database_url)
        keys = env.get("KIZUNA_API_KEYS_FILE") or None
        return cls(
            service=service,
            host=env.get(prefix + "HOST") or "0.0.0.0",  # noqa: S104 - a server listens on all interfaces
            port=env_int(env, prefix + "PORT", default_port, low=0, high=65535),
            metrics_port=env_int(
                env, prefix + "METRICS_PORT", default_metrics_port, low=0, high=65535
            ),
            nats_url=check_nats_url(
                "KIZUNA_NATS_URL", env.get("KIZUNA_NATS_URL") or "nats://127.0.0.1:4222"
            ),
            database_url=database_url,
            data_dir=Path(env.get("KIZUNA_DATA_DIR") or ".kizuna"),
            api_keys_file=Path(keys) if keys else None,
            log_level=env_choice(
                env, "KIZUNA_LOG_LEVEL", "info", ("debug", "info", "warning", "error")
            ),
            log_format=env_choice(env, "KIZUNA_LOG_FORMAT", "auto", ("auto", "json", "console")),
            shutdown_grace_seconds=env_float(env, "KIZUNA_SHUTDOWN_GRACE_SECONDS", 10.0, low=0.0),
            workers=env_int(env, prefix + "WORKERS", 16, low=1, high=256),
            shutdown_drain_seconds=env_float(env, "KIZUNA_SHUTDOWN_DRAIN_SECONDS", 0.0, low=0.0),
            tls=TlsFiles.from_env(env),
            nats_replicas=env_int(env, "KIZUNA_NATS_REPLICAS", 1, low=1, high=5),
        )
