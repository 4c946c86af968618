"""Signed checkpoints: the documented signed bytes, Ed25519 round trip, tamper rejection,
and the text form the offline verifier reads."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kizuna_consent.domain.checkpoint import (
    Checkpoint,
    InvalidCheckpoint,
    checkpoint_body,
    decode_checkpoint,
    encode_checkpoint,
    key_id,
    sign_checkpoint,
    verify_checkpoint,
)
from kizuna_consent.domain.instants import NaiveDatetime

# RFC 8032 §7.1 TEST 1 key, so the golden values below are reproducible anywhere.
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
ROOT8 = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
WHEN = datetime(2025, 4, 1, tzinfo=UTC)
KEY = Ed25519PrivateKey.from_private_bytes(SEED)
GOLDEN_TEXT = (
    "kizuna.consent.checkpoint/v1\n"
    "8\n"
    "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"
    "2025-04-01T00:00:00.000000Z\n"
    "\n"
    "\u2014 21fe31dfa154a261 QLkofswZVydXQVGo1rpRcHDZ95eoInJKih6hdKg1bbXuug9EQljsHB8xUd81WU8Zb1Yt"
    "pMYK8JgOcGsHlNYQBQ==\n"
)


def test_key_id_is_the_first_8_bytes_of_sha256_of_the_raw_public_key() -> None:
    assert KEY.public_key().public_bytes_raw().hex() == PUBLIC
    assert key_id(KEY.public_key()) == hashlib.sha256(bytes.fromhex(PUBLIC)).hexdigest()[:16]


def test_signed_bytes_are_the_documented_body() -> None:
    body = checkpoint_body(8, ROOT8, WHEN.astimezone(timezone(timedelta(hours=9))))
    assert body == (
        b"kizuna.consent.checkpoint/v1\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"
        b"2025-04-01T00:00:00.000000Z\n"
    )


def test_golden_checkpoint() -> None:
    # Ed25519 is deterministic: the same key and body give these exact bytes forever.
    cp = sign_checkpoint(KEY, 8, ROOT8, WHEN)
    assert encode_checkpoint(cp) == GOLDEN_TEXT
    assert decode_checkpoint(GOLDEN_TEXT) == cp
    assert verify_checkpoint(KEY.public_key(), cp)


def test_round_trip_with_a_fresh_key() -> None:
    key = Ed25519PrivateKey.generate()
    cp = sign_checkpoint(key, 0, hashlib.sha256(b"").digest(), WHEN)
    assert cp.key_id == key_id(key.public_key())
    assert verify_checkpoint(key.public_key(), cp)
    assert verify_checkpoint(key.public_key(), decode_checkpoint(encode_checkpoint(cp)))


@pytest.mark.parametrize(
    "change",
    [
        {"size": 9},
        {"size": 7},
        {"root_hash": bytes([ROOT8[0] ^ 1]) + ROOT8[1:]},
        {"timestamp": WHEN + timedelta(microseconds=1)},
        {"signature": bytes(64)},
        {"key_id": "0000000000000000"},
        {"root_hash": ROOT8[:31]},  # malformed: refused, not raised
        {"signature": b"\x01" * 63},
        {"size": -1},
    ],
)
def test_any_change_fails_verification(change: dict[str, object]) -> None:
    cp = replace(sign_checkpoint(KEY, 8, ROOT8, WHEN), **change)  # type: ignore[arg-type]
    assert not verify_checkpoint(KEY.public_key(), cp)


def test_another_key_does_not_verify() -> None:
    cp = sign_checkpoint(KEY, 8, ROOT8, WHEN)
    other = Ed25519PrivateKey.generate().public_key()
    assert not verify_checkpoint(other, cp)
    # Even claiming the other key's id does not help: the signature is still KEY's.
    assert not verify_checkpoint(other, replace(cp, key_id=key_id(other)))


@pytest.mark.parametrize(
    ("size", "root", "when", "error"),
    [
        (-1, ROOT8, WHEN, InvalidCheckpoint),
        (8, ROOT8[:31], WHEN, InvalidCheckpoint),
        (8, ROOT8, datetime(2025, 4, 1), NaiveDatetime),
    ],
)
def test_signing_refuses_malformed_input(
    size: int, root: bytes, when: datetime, error: type[Exception]
) -> None:
    with pytest.raises(error):
        sign_checkpoint(KEY, size, root, when)


def _mangle(old: str, new: str) -> str:
    assert old in GOLDEN_TEXT
    return GOLDEN_TEXT.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "not a kizuna consent checkpoint"),
        (GOLDEN_TEXT.rstrip("\n"), "not a kizuna consent checkpoint"),
        (GOLDEN_TEXT + "\n", "not a kizuna consent checkpoint"),
        (_mangle("checkpoint/v1", "checkpoint/v2"), "not a kizuna consent checkpoint"),
        (_mangle("\n8\n", "\n08\n"), "size"),
        (_mangle("\n8\n", "\n-8\n"), "size"),
        (_mangle("\n8\n", "\n\uff18\n"), "size"),
        (_mangle("Qyg=", "Qyg"), "root_hash"),
        (_mangle("XcnaeacG", "Xcnaeac!"), "root_hash"),
        (_mangle(".000000Z", "Z"), "timestamp"),
        (_mangle("\u2014 ", "- "), "signature line"),
        (_mangle("21fe31dfa154a261 ", "21FE31DFA154A261 "), "key_id"),
        (_mangle("21fe31dfa154a261 ", "21fe31dfa154a261  "), "signature line"),
        (_mangle("BQ==", "BQ="), "signature"),
        (_mangle("BQ==", "BR=="), "signature"),  # non-canonical trailing bits
    ],
)
def test_decode_is_strict(text: str, match: str) -> None:
    with pytest.raises(InvalidCheckpoint, match=match):
        decode_checkpoint(text)


def test_decoded_fields() -> None:
    cp = decode_checkpoint(GOLDEN_TEXT)
    assert cp == Checkpoint(8, ROOT8, WHEN, "21fe31dfa154a261", cp.signature)
    assert len(cp.signature) == 64
