"""Evidence as stored: the proof reference in clear, the personal part sealed with
the subject's key (AES-256-GCM). Destroying the key (erasure) makes the personal part
unreadable while the stored bytes, and so the hash chain, stay as they were."""

from __future__ import annotations

import json
import os
from base64 import b64decode, b64encode
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_SIZE = 12
MAX_FIELD = 1000


@dataclass(frozen=True)
class Evidence:
    ip: str = ""
    user_agent: str = ""
    collected_by: str = ""
    proof_ref: str = ""


@dataclass(frozen=True)
class OpenedEvidence:
    evidence: Evidence
    shredded: bool


def seal(evidence: Evidence, key: bytes, associated: bytes) -> bytes:
    """The stored bytes; `associated` (the record id) binds the ciphertext to its record."""
    personal = json.dumps(
        {
            "ip": evidence.ip,
            "user_agent": evidence.user_agent,
            "collected_by": evidence.collected_by,
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    nonce = os.urandom(NONCE_SIZE)
    sealed = nonce + AESGCM(key).encrypt(nonce, personal, associated)
    document = {"v": 1, "proof_ref": evidence.proof_ref, "sealed": b64encode(sealed).decode()}
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def open_sealed(stored: bytes, key: bytes | None, associated: bytes) -> OpenedEvidence:
    document = json.loads(stored)
    proof_ref = str(document.get("proof_ref", ""))
    if key is None:
        return OpenedEvidence(Evidence(proof_ref=proof_ref), shredded=True)
    sealed = b64decode(document["sealed"])
    try:
        personal = json.loads(
            AESGCM(key).decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], associated)
        )
    except InvalidTag:
        return OpenedEvidence(Evidence(proof_ref=proof_ref), shredded=True)
    return OpenedEvidence(
        Evidence(
            ip=personal["ip"],
            user_agent=personal["user_agent"],
            collected_by=personal["collected_by"],
            proof_ref=proof_ref,
        ),
        shredded=False,
    )


def check_evidence(evidence: Evidence) -> list[str]:
    """Names of fields that are too long."""
    return [name for name, value in vars(evidence).items() if len(value) > MAX_FIELD]
