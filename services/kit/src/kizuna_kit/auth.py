"""Bearer API keys with scopes. Keys are stored as salted SHA-256 digests, never in plaintext.

A token reads `kz.<key id>.<secret>`: the id finds the stored digest, the secret is
checked against it in constant time. Keys are random 256-bit values, so a fast
salted hash is as strong as a slow one and keeps every RPC cheap.

Keys loaded from a file follow it: a service notices a changed file (checked at most
every few seconds, on the next call) and re-reads it, so adding or revoking a key needs
no restart. A file that cannot be read leaves the keys as they were.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger("kizuna.auth")

KEY_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class KeyFileError(ValueError):
    """The API keys file is missing or malformed."""


@dataclass(frozen=True)
class Principal:
    key_id: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class StoredKey:
    key_id: str
    salt: bytes
    digest: bytes
    scopes: frozenset[str]

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.key_id,
            "salt": self.salt.hex(),
            "sha256": self.digest.hex(),
            "scopes": sorted(self.scopes),
        }


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


def new_key(key_id: str, scopes: Iterable[str]) -> tuple[str, StoredKey]:
    """A fresh token (shown once) and the record to store for it."""
    if not KEY_ID.match(key_id):
        raise KeyFileError(f"key id {key_id!r} must be lower-case letters, digits and '-'")
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    stored = StoredKey(key_id, salt, _digest(salt, secret), frozenset(scopes))
    return f"kz.{key_id}.{secret}", stored


def write_key_file(path: Path, keys: Iterable[StoredKey]) -> None:
    path.write_text(json.dumps({"keys": [k.to_json() for k in keys]}, indent=2) + "\n")
    path.chmod(0o600)


# How often a service looks at its key file for changes.
RECHECK_SECONDS = 5.0

Certificates = Mapping[str, Principal]


class ApiKeys:
    def __init__(
        self,
        keys: Iterable[StoredKey],
        certificates: Certificates | None = None,
        *,
        source: Path | None = None,
        recheck_seconds: float = RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`source`: the file the keys came from, re-read when it changes."""
        self._use(keys, certificates or {})
        self._source = source
        self._recheck_seconds = recheck_seconds
        self._clock = clock
        self._checked_at = clock()
        self._stamp = _stamp(source) if source is not None else None

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        recheck_seconds: float = RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> ApiKeys:
        keys, certificates = _read(path)
        return cls(keys, certificates, source=path, recheck_seconds=recheck_seconds, clock=clock)

    def _use(self, keys: Iterable[StoredKey], certificates: Certificates) -> None:
        self._keys: Mapping[str, StoredKey] = {k.key_id: k for k in keys}
        # Client certificate common name -> principal (mTLS instead of a bearer key).
        self._certificates: Mapping[str, Principal] = dict(certificates)

    def _follow_source(self) -> None:
        """Re-reads the key file if it changed; looks at most every recheck_seconds."""
        if self._source is None:
            return
        now = self._clock()
        if now - self._checked_at < self._recheck_seconds:
            return
        self._checked_at = now
        stamp = _stamp(self._source)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            if stamp is None:
                raise KeyFileError(f"API keys file {self._source} cannot be read")
            keys, certificates = _parse(stamp, self._source)
        except KeyFileError as exc:
            log.error("auth.keys_reload_failed", error=str(exc))
            return
        self._use(keys, certificates)
        log.info("auth.keys_reloaded", keys=len(keys) + len(certificates))

    def by_certificate(self, common_names: Iterable[str]) -> Principal | None:
        """The principal of a verified client certificate (the TLS layer checked it)."""
        self._follow_source()
        for name in common_names:
            principal = self._certificates.get(name)
            if principal is not None:
                return principal
        return None

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal for an `authorization` header value, or None."""
        self._follow_source()
        if not authorization or not authorization.startswith("Bearer "):
            return None
        parts = authorization[len("Bearer ") :].strip().split(".", 2)
        if len(parts) != 3 or parts[0] != "kz":
            return None
        stored = self._keys.get(parts[1])
        if stored is None:
            # Same work as a known key, so timing does not tell which ids exist.
            hmac.compare_digest(_digest(b"\0" * 16, parts[2]), b"\0" * 32)
            return None
        if not hmac.compare_digest(_digest(stored.salt, parts[2]), stored.digest):
            return None
        return Principal(stored.key_id, stored.scopes)


def _read(path: Path) -> tuple[list[StoredKey], dict[str, Principal]]:
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"API keys file {path} does not exist") from None
    return _parse(content, path)


def _parse(content: bytes, path: Path) -> tuple[list[StoredKey], dict[str, Principal]]:
    """The keys in `content`, read from the key file at `path`."""
    try:
        document = json.loads(content)
        keys = [
            StoredKey(
                key_id=str(item["id"]),
                salt=bytes.fromhex(item["salt"]),
                digest=bytes.fromhex(item["sha256"]),
                scopes=frozenset(str(s) for s in item["scopes"]),
            )
            for item in document["keys"]
            if "client_cert_cn" not in item
        ]
        certificates = {
            str(item["client_cert_cn"]): Principal(
                str(item["id"]), frozenset(str(s) for s in item["scopes"])
            )
            for item in document["keys"]
            if "client_cert_cn" in item
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"API keys file {path} is malformed: {type(exc).__name__}") from None
    return keys, certificates


def _stamp(path: Path) -> bytes | None:
    """The file's content (a few kilobytes), None while it cannot be read. Compared
    whole, not by its mtime: two writes within one clock tick, of the same size, would
    look alike. Reading through the path follows a Kubernetes Secret's symlink swap."""
    try:
        return path.read_bytes()
    except OSError:
        return None


# The scopes of the public contract, and the two keys `kizuna up` issues.
ALL_SCOPES = frozenset(
    {
        "identity:read",
        "identity:write",
        "identity:admin",
        "consent:read",
        "consent:write",
        "consent:audit",
        "profilesync:read",
        "profilesync:admin",
    }
)
AUDITOR_SCOPES = frozenset({"identity:read", "consent:read", "consent:audit"})


def issue_keys(path: Path, wanted: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """Writes a key file holding `wanted` (key id -> scopes); returns key id -> token."""
    tokens: dict[str, str] = {}
    stored: list[StoredKey] = []
    for key_id, scopes in wanted.items():
        token, record = new_key(key_id, scopes)
        tokens[key_id] = token
        stored.append(record)
    write_key_file(path, stored)
    return tokens
