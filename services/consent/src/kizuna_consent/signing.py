"""The ledger's Ed25519 checkpoint key, from a PEM file named by configuration."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from kizuna_kit.config import ConfigError


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ConfigError(f"signing key file {path} does not exist") from None
    except ValueError:
        raise ConfigError(f"signing key file {path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"signing key file {path} must hold an Ed25519 key")
    return key


def write_new_signing_key(path: Path) -> None:
    """A fresh key (for development: `kizuna up` makes one on first start)."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    path.write_bytes(pem)
    path.chmod(0o600)
