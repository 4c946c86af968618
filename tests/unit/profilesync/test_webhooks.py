"""Standard Webhooks signing and verification, and the JSON body."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from kizuna_profilesync.domain.webhooks import (
    InvalidSecret,
    InvalidSignature,
    TimestampOutOfTolerance,
    build_body,
    headers,
    secret_key,
    sign,
    verify,
    webhook_id,
)

KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()
MSG_ID = "identity:42"
STAMP = 1_743_498_000
BODY = b'{"type":"customer.upserted"}'
NOW = datetime.fromtimestamp(STAMP, tz=UTC)


def independent_signature(key: bytes, msg_id: str, stamp: int, body: bytes) -> str:
    mac = hmac.new(key, msg_id.encode() + b"." + str(stamp).encode() + b"." + body, "sha256")
    return "v1," + base64.b64encode(mac.digest()).decode()


def test_sign_matches_an_independent_hmac() -> None:
    assert sign(SECRET, MSG_ID, STAMP, BODY) == independent_signature(KEY, MSG_ID, STAMP, BODY)


def test_sign_matches_the_standard_webhooks_published_example() -> None:
    # The example of the Standard Webhooks reference libraries.
    signature = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_raw_secret_is_used_as_bytes() -> None:
    raw = "a-raw-secret-without-any-prefix"
    expected = independent_signature(raw.encode(), MSG_ID, STAMP, BODY)
    assert sign(raw, MSG_ID, STAMP, BODY) == expected
    assert secret_key(raw) == raw.encode()


def test_bad_base64_secret_is_refused() -> None:
    with pytest.raises(InvalidSecret):
        secret_key("whsec_not*base64")


def test_headers() -> None:
    got = headers(SECRET, MSG_ID, STAMP, BODY)
    assert got["webhook-id"] == MSG_ID
    assert got["webhook-timestamp"] == str(STAMP)
    assert got["webhook-signature"] == independent_signature(KEY, MSG_ID, STAMP, BODY)


def test_verify_accepts_a_good_signature_among_several() -> None:
    good = independent_signature(KEY, MSG_ID, STAMP, BODY)
    verify(SECRET, MSG_ID, str(STAMP), BODY, f"v1,bm90LWl0 v2,whatever {good}", NOW)


@pytest.mark.parametrize(
    ("msg_id", "stamp", "body", "header"),
    [
        pytest.param("identity:43", str(STAMP), BODY, None, id="other-id"),
        pytest.param(MSG_ID, str(STAMP + 1), BODY, None, id="other-timestamp"),
        pytest.param(MSG_ID, str(STAMP), BODY + b" ", None, id="other-body"),
        pytest.param(MSG_ID, str(STAMP), BODY, "v1,AAAA", id="wrong-signature"),
        pytest.param(MSG_ID, str(STAMP), BODY, "", id="no-signature"),
        pytest.param(MSG_ID, "soon", BODY, None, id="timestamp-not-a-number"),
    ],
)
def test_verify_refuses_tampering(msg_id: str, stamp: str, body: bytes, header: str | None) -> None:
    signature = header if header is not None else sign(SECRET, MSG_ID, STAMP, BODY)
    with pytest.raises(InvalidSignature):
        verify(SECRET, msg_id, stamp, body, signature, NOW)


@pytest.mark.parametrize(("offset", "ok"), [(-300, True), (300, True), (-301, False), (301, False)])
def test_verify_tolerance_window(offset: int, ok: bool) -> None:
    stamp = STAMP + offset
    signature = sign(SECRET, MSG_ID, stamp, BODY)
    if ok:
        verify(SECRET, MSG_ID, str(stamp), BODY, signature, NOW)
    else:
        with pytest.raises(TimestampOutOfTolerance):
            verify(SECRET, MSG_ID, str(stamp), BODY, signature, NOW)


def test_body_has_fixed_key_order_and_sorted_data() -> None:
    body = build_body(
        "customer.upserted",
        "cust-1",
        datetime(2025, 4, 1, 18, 0, tzinfo=UTC),
        42,
        {"given_name": "花子", "attributes": {"z": "1", "a": "2"}},
    )
    assert (
        body
        == (
            '{"type":"customer.upserted","customer_id":"cust-1",'
            '"occurred_at":"2025-04-01T18:00:00.000000Z","position":42,'
            '"data":{"attributes":{"a":"2","z":"1"},"given_name":"花子"}}'
        ).encode()
    )
    assert json.loads(body)["data"]["given_name"] == "花子"


def test_body_is_the_same_whatever_the_data_insertion_order() -> None:
    at = datetime(2025, 4, 1, tzinfo=UTC)
    one = build_body("t", "c", at, 1, {"b": [{"y": 1, "x": 2}], "a": "1"})
    two = build_body("t", "c", at, 1, {"a": "1", "b": [{"x": 2, "y": 1}]})
    assert one == two


def test_webhook_id_is_the_event_id_for_the_events_own_customer() -> None:
    assert webhook_id("identity:7", "cust-a", "cust-a") == "identity:7"
    assert webhook_id("identity:7", "cust-s", "cust-m") == "identity:7/cust-s"


def test_signature_is_not_a_plain_hash() -> None:
    # Guards against signing without the key.
    plain = base64.b64encode(hashlib.sha256(f"{MSG_ID}.{STAMP}.".encode() + BODY).digest())
    assert sign(SECRET, MSG_ID, STAMP, BODY) != "v1," + plain.decode()


def test_verify_tolerance_counts_fractions_of_a_second() -> None:
    signature = sign(SECRET, MSG_ID, STAMP, BODY)
    late = NOW + timedelta(seconds=300.5)
    with pytest.raises(TimestampOutOfTolerance):
        verify(SECRET, MSG_ID, str(STAMP), BODY, signature, late)
