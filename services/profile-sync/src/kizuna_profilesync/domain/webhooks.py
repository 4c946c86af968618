"""Standard Webhooks (https://www.standardwebhooks.com/): signing, verification, bodies.

Signature: "v1," + base64(HMAC-SHA256(key, f"{msg_id}.{timestamp}.{body}")); the key is the
base64 part of a "whsec_" secret, or the secret's UTF-8 bytes when it has no prefix.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime

from kizuna_profilesync.domain.profile import JsonValue, rfc3339

SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's prefix, not a secret
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300  # the spec's suggested replay window


def secret_key(secret: str | bytes) -> bytes:
    """The HMAC key of a secret: "whsec_<base64>" decoded, raw bytes otherwise."""
    if isinstance(secret, bytes):
        return secret
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except binascii.Error:
            raise InvalidSecret("a whsec_ secret must be base64 after the prefix") from None
    return secret.encode()


def sign(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one message."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def headers(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def verify(
    secret: str | bytes,
    msg_id: str,
    timestamp: str,
    body: bytes,
    signature_header: str,
    now: datetime,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    """Raises unless one of the header's signatures matches and the timestamp is within
    `tolerance_seconds` of `now` (an aware datetime).

    The header may hold several space-separated signatures (secret rotation); unknown
    versions are skipped. Comparison is constant-time.
    """
    try:
        sent = int(timestamp)
    except ValueError:
        raise InvalidSignature("webhook-timestamp is not an integer") from None
    if abs(now.timestamp() - sent) > tolerance_seconds:
        raise TimestampOutOfTolerance("webhook-timestamp is outside the tolerance window")
    expected = sign(secret, msg_id, sent, body).partition(",")[2]
    for candidate in signature_header.split():
        version, _, value = candidate.partition(",")
        if version == SIGNATURE_VERSION and hmac.compare_digest(value, expected):
            return
    raise InvalidSignature("no matching webhook signature")


def webhook_id(event_id: str, customer_id: str, aggregate_id: str) -> str:
    """The `webhook-id`: the event id, so it is stable across retries and replays.

    One event can change a second customer (a merge moves the merged id's consents to the
    survivor); that delivery gets "<event_id>/<customer_id>" so ids stay unique per message.
    """
    return event_id if customer_id == aggregate_id else f"{event_id}/{customer_id}"


def build_body(
    event_type: str,
    customer_id: str,
    occurred_at: datetime,
    position: int,
    data: Mapping[str, JsonValue],
) -> bytes:
    """The JSON body: fixed top-level order, sorted keys inside `data`, compact, UTF-8."""
    document = {
        "type": event_type,
        "customer_id": customer_id,
        "occurred_at": rfc3339(occurred_at),
        "position": position,
        "data": _sorted(data),
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _sorted(value: JsonValue) -> JsonValue:
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sorted(v) for v in value]
    return value


class WebhookError(ValueError):
    pass


class InvalidSecret(WebhookError):
    pass


class InvalidSignature(WebhookError):
    pass


class TimestampOutOfTolerance(WebhookError):
    pass
