"""Webhook secrets at rest: sealed with the service's key (AES-256-GCM) before they
enter a connector's events, so neither the event store nor a log ever holds one."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kizuna_kit.config import ConfigError

PREFIX = "sealed:v1:"
NONCE = 12


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigError("the secrets key must be 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_file(cls, path: Path) -> SecretBox:
        try:
            return cls(base64.b64decode(path.read_text().strip(), validate=True))
        except FileNotFoundError:
            raise ConfigError(f"secrets key file {path} does not exist") from None
        except ValueError:
            raise ConfigError(f"secrets key file {path} must hold 32 bytes in base64") from None

    def seal(self, secret: str, connector_id: str) -> str:
        nonce = os.urandom(NONCE)
        sealed = nonce + self._aead.encrypt(nonce, secret.encode(), connector_id.encode())
        return PREFIX + base64.b64encode(sealed).decode()

    def open(self, sealed: str, connector_id: str) -> str:
        if not sealed.startswith(PREFIX):
            raise ValueError("not a sealed secret")
        raw = base64.b64decode(sealed[len(PREFIX) :])
        try:
            return self._aead.decrypt(raw[:NONCE], raw[NONCE:], connector_id.encode()).decode()
        except InvalidTag:
            raise ValueError("sealed secret does not open with this key") from None


def write_new_key(path: Path) -> None:
    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    path.chmod(0o600)
