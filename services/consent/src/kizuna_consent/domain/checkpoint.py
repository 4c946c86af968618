"""Signed checkpoints: the service's Ed25519 signature over (size, Merkle root, time).

Signed bytes (version 1), modelled on the C2SP tlog-checkpoint note body, UTF-8, each line
ending in "\\n"::

    kizuna.consent.checkpoint/v1
    <size, decimal, no leading zeros>
    <root_hash, standard base64 with padding>
    <timestamp, YYYY-MM-DDTHH:MM:SS.ffffffZ in UTC>

The signature is pure Ed25519 (RFC 8032) over exactly those bytes. key_id is the first 8
bytes of SHA-256 of the raw 32-byte public key, in lower-case hex, so a verifier holding
several keys (rotation) knows which one to use. As a file (for the offline verifier) a
checkpoint is the body, an empty line and one signature line ``— <key_id> <base64 sig>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kizuna_consent.domain.errors import ConsentError
from kizuna_consent.domain.instants import InvalidInstant, canonical_instant, parse_instant, to_utc

ORIGIN = "kizuna.consent.checkpoint/v1"
HASH_SIZE = 32
SIGNATURE_SIZE = 64
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}", flags=re.ASCII)
_KEY_ID = re.compile(r"[0-9a-f]{16}", flags=re.ASCII)
_SIG_PREFIX = "\u2014 "  # "— ", as in a signed note


@dataclass(frozen=True, slots=True)
class Checkpoint:
    size: int
    root_hash: bytes
    timestamp: datetime
    key_id: str
    signature: bytes


def key_id(public_key: Ed25519PublicKey) -> str:
    return hashlib.sha256(public_key.public_bytes_raw()).digest()[:8].hex()


def checkpoint_body(size: int, root_hash: bytes, timestamp: datetime) -> bytes:
    """The exact bytes signed (see the module docstring)."""
    if size < 0:
        raise InvalidCheckpoint(f"size must not be negative, got {size}")
    if len(root_hash) != HASH_SIZE:
        raise InvalidCheckpoint(f"root_hash must be {HASH_SIZE} bytes, got {len(root_hash)}")
    root = base64.b64encode(root_hash).decode("ascii")
    return f"{ORIGIN}\n{size}\n{root}\n{canonical_instant(timestamp)}\n".encode()


def sign_checkpoint(
    private_key: Ed25519PrivateKey, size: int, root_hash: bytes, timestamp: datetime
) -> Checkpoint:
    utc = to_utc(timestamp)
    body = checkpoint_body(size, root_hash, utc)
    return Checkpoint(
        size=size,
        root_hash=bytes(root_hash),
        timestamp=utc,
        key_id=key_id(private_key.public_key()),
        signature=private_key.sign(body),
    )


def verify_checkpoint(public_key: Ed25519PublicKey, checkpoint: Checkpoint) -> bool:
    """True only if this key signed exactly this checkpoint; never raises on bad input."""
    if checkpoint.key_id != key_id(public_key) or len(checkpoint.signature) != SIGNATURE_SIZE:
        return False
    try:
        body = checkpoint_body(checkpoint.size, checkpoint.root_hash, checkpoint.timestamp)
        public_key.verify(checkpoint.signature, body)
    except (InvalidSignature, ConsentError):
        return False
    return True


def encode_checkpoint(checkpoint: Checkpoint) -> str:
    """The checkpoint as a text file: body, empty line, signature line."""
    body = checkpoint_body(checkpoint.size, checkpoint.root_hash, checkpoint.timestamp)
    signature = base64.b64encode(checkpoint.signature).decode("ascii")
    return f"{body.decode()}\n{_SIG_PREFIX}{checkpoint.key_id} {signature}\n"


def decode_checkpoint(text: str) -> Checkpoint:
    """Parse `encode_checkpoint`'s output strictly (the signature is checked separately)."""
    lines = text.split("\n")
    if len(lines) != 7 or lines[0] != ORIGIN or lines[4] != "" or lines[6] != "":
        raise InvalidCheckpoint(
            "not a kizuna consent checkpoint (expected 4 lines, a blank line and a signature line)"
        )
    size_text, root_text, time_text, sig_line = lines[1], lines[2], lines[3], lines[5]
    if _DECIMAL.fullmatch(size_text) is None:
        raise InvalidCheckpoint(f"size must be a decimal number, got {size_text[:30]!r}")
    root = _b64(root_text, HASH_SIZE, "root_hash")
    try:
        timestamp = parse_instant(time_text, "timestamp")
    except InvalidInstant as e:
        raise InvalidCheckpoint(str(e)) from None
    parts = sig_line.removeprefix(_SIG_PREFIX).split(" ")
    if not sig_line.startswith(_SIG_PREFIX) or len(parts) != 2:
        raise InvalidCheckpoint("signature line must be '\u2014 <key_id> <base64 signature>'")
    if _KEY_ID.fullmatch(parts[0]) is None:
        raise InvalidCheckpoint("key_id must be 16 lower-case hex digits")
    return Checkpoint(
        int(size_text), root, timestamp, parts[0], _b64(parts[1], SIGNATURE_SIZE, "signature")
    )


def _b64(text: str, size: int, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise InvalidCheckpoint(f"{what} is not valid base64") from None
    # Re-encoding refuses non-canonical spellings, so one checkpoint has one text form.
    if len(raw) != size or base64.b64encode(raw).decode("ascii") != text:
        raise InvalidCheckpoint(f"{what} must be {size} bytes in canonical base64")
    return raw


class InvalidCheckpoint(ConsentError):
    pass
