"""`kizuna up` as a person runs it: processes, generated tokens, grpcurl, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kizuna_kit.ports import free_port

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
IDENTITY = "kizuna.identity.v1.IdentityService"
CONSENT = "kizuna.consent.v1.ConsentService"
PASSWORD = "correct horse battery"


@dataclass
class Stack:
    process: subprocess.Popen[str]
    data_dir: Path
    identity: str
    consent: str
    metrics: int
    log: Path
    env: dict[str, str]

    def grpcurl(
        self,
        method: str,
        body: dict[str, object],
        token: str | None = None,
        service: str = IDENTITY,
    ) -> dict[str, object]:
        token = token or (self.data_dir / "admin.token").read_text().strip()
        address = self.consent if service == CONSENT else self.identity
        result = subprocess.run(
            [
                str(BIN / "grpcurl"),
                "-plaintext",
                "-H",
                f"authorization: Bearer {token}",
                "-d",
                json.dumps(body),
                address,
                f"{service}/{method}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise GrpcurlError(result.stderr)
        return dict(json.loads(result.stdout or "{}"))


class GrpcurlError(Exception):
    pass


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    data_dir = tmp_path / "kizuna"
    port, metrics, nats = free_port(), free_port(), free_port()
    consent = free_port()
    env = {
        **os.environ,
        "KIZUNA_DATA_DIR": str(data_dir),
        "KIZUNA_IDENTITY_PORT": str(port),
        "KIZUNA_IDENTITY_METRICS_PORT": str(metrics),
        "KIZUNA_CONSENT_PORT": str(consent),
        "KIZUNA_CONSENT_METRICS_PORT": str(free_port()),
        "KIZUNA_PROFILESYNC_PORT": str(free_port()),
        "KIZUNA_PROFILESYNC_METRICS_PORT": str(free_port()),
        "KIZUNA_NATS_URL": f"nats://127.0.0.1:{nats}",
        "KIZUNA_IDENTITY_ARGON2_MEMORY_KIB": "1024",
        "KIZUNA_IDENTITY_ARGON2_TIME_COST": "1",
    }
    log = tmp_path / "up.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(BIN / "kizuna"), "up"], env=env, stdout=out, stderr=subprocess.STDOUT, text=True
        )
    deadline = time.monotonic() + 60
    while "Kizuna is up." not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    stack = Stack(process, data_dir, f"127.0.0.1:{port}", f"127.0.0.1:{consent}", metrics, log, env)
    yield stack
    # The test may have started a new `kizuna up`: stop whichever runs now.
    if stack.process.poll() is None:
        stack.process.send_signal(signal.SIGINT)  # stops the services too
        try:
            stack.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stack.process.kill()
            stack.process.wait()


def test_the_tanaka_story_through_grpcurl(stack: Stack) -> None:
    assert (stack.data_dir / "admin.token").stat().st_mode & 0o077 == 0
    stack.grpcurl(
        "CreateSite",
        {
            "site_id": "site-a",
            "display_name": "EC A",
            "site_group": "brand-1",
            "required_fields": ["given_name", "family_name"],
        },
    )
    stack.grpcurl(
        "CreateSite",
        {
            "site_id": "site-b",
            "display_name": "App B",
            "site_group": "brand-1",
            "required_fields": ["given_name", "family_name", "postal_address"],
        },
    )
    registered = stack.grpcurl(
        "RegisterCustomer",
        {
            "site_id": "site-a",
            "login_id": "tanaka@example.jp",
            "password": PASSWORD,
            "profile": {"given_name": "Taro", "family_name": "Tanaka"},
            "channel": "ec",
        },
    )
    login = stack.grpcurl(
        "Login", {"site_id": "site-a", "login_id": "tanaka@example.jp", "password": PASSWORD}
    )
    assert login["customer_id"] == registered["customer_id"]
    at_b = stack.grpcurl(
        "ValidateSession", {"session_token": login["session_token"], "site_id": "site-b"}
    )
    assert at_b["customer_id"] == registered["customer_id"]
    assert at_b["missing_fields"] == ["postal_address"]
    stack.grpcurl(
        "UpdateProfile",
        {
            "customer_id": registered["customer_id"],
            "profile": {
                "postal_address": {
                    "postal_code": "100-0001",
                    "locality": "Chiyoda-ku",
                    "street": "1-1",
                    "country": "JP",
                }
            },
        },
    )
    at_b = stack.grpcurl(
        "ValidateSession", {"session_token": login["session_token"], "site_id": "site-b"}
    )
    assert "missing_fields" not in at_b  # proto3 JSON leaves out an empty list

    auditor = (stack.data_dir / "auditor.token").read_text().strip()
    with pytest.raises(GrpcurlError, match="PermissionDenied"):
        stack.grpcurl(
            "UpdateProfile",
            {"customer_id": registered["customer_id"], "profile": {"given_name": "X"}},
            token=auditor,
        )

    # Metrics are served, and neither the password nor a token reached the logs.
    metrics = (
        urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics}/metrics", timeout=5)
        .read()
        .decode()
    )
    assert 'kizuna_rpc_total{code="OK",method="Login",service="identity"} 1.0' in metrics
    assert "kizuna_relay_lag" in metrics

    stack.process.send_signal(signal.SIGINT)
    assert stack.process.wait(timeout=30) == 0
    log = stack.log.read_text()
    assert PASSWORD not in log
    assert str(login["session_token"]) not in log
    assert (stack.data_dir / "admin.token").read_text().strip() not in log
    assert "service.stopped" in log


def test_the_auditors_questions_through_grpcurl(stack: Stack) -> None:
    auditor = (stack.data_dir / "auditor.token").read_text().strip()
    subject = "5f0c6a8e-0000-4000-8000-0000000000aa"

    def consent(
        method: str, body: dict[str, object], token: str | None = None
    ) -> dict[str, object]:
        return stack.grpcurl(method, body, token, service=CONSENT)

    consent(
        "PublishStatement",
        {
            "statement_id": "marketing-email",
            "version": "1.0",
            "title": "Mail",
            "text": "We may e-mail you offers.",
        },
    )
    consent(
        "RecordConsent",
        {
            "subject_id": subject,
            "statement_id": "marketing-email",
            "version": "1.0",
            "decision": "DECISION_GRANTED",
            "effective_at": "2025-01-10T00:00:00Z",
        },
    )
    consent(
        "RecordConsent",
        {
            "subject_id": subject,
            "statement_id": "marketing-email",
            "version": "1.0",
            "decision": "DECISION_WITHDRAWN",
            "effective_at": "2025-03-01T00:00:00Z",
        },
    )

    def status(at: str, known: str | None = None, statement: str = "marketing-email") -> str:
        body: dict[str, object] = {"subject_id": subject, "at": at}
        if known:
            body["as_known_at"] = known
        entries = consent("GetConsentState", body, auditor)["entries"]
        return str(next(e for e in entries if e["statement_id"] == statement)["status"])  # type: ignore[attr-defined]

    assert status("2025-02-01T00:00:00Z") == "CONSENT_STATUS_GRANTED"
    assert status("2025-04-01T00:00:00Z") == "CONSENT_STATUS_WITHDRAWN"
    assert (
        status("2025-02-01T00:00:00Z", known="2024-12-31T00:00:00Z") == "CONSENT_STATUS_NOT_GIVEN"
    )

    consent(
        "PublishStatement",
        {"statement_id": "terms", "version": "1.0", "title": "Terms", "text": "v1"},
    )
    consent(
        "RecordConsent",
        {
            "subject_id": subject,
            "statement_id": "terms",
            "version": "1.0",
            "decision": "DECISION_GRANTED",
        },
    )
    consent(
        "PublishStatement",
        {"statement_id": "terms", "version": "1.1", "title": "Terms", "text": "v1.1"},
    )
    assert status("2100-01-01T00:00:00Z", statement="terms") == "CONSENT_STATUS_GRANTED"
    consent(
        "PublishStatement",
        {"statement_id": "terms", "version": "2.0", "title": "Terms", "text": "v2"},
    )
    assert status("2100-01-01T00:00:00Z", statement="terms") == "CONSENT_STATUS_OUTDATED"

    with pytest.raises(GrpcurlError, match="PermissionDenied"):
        consent(
            "RecordConsent",
            {
                "subject_id": subject,
                "statement_id": "terms",
                "version": "2.0",
                "decision": "DECISION_GRANTED",
            },
            auditor,
        )
    verified = consent("VerifyLedger", {}, auditor)
    assert verified["ok"] is True
    assert verified["records_checked"] == "3"  # uint64 is a string in proto3 JSON


def test_a_second_up_reuses_the_data(stack: Stack) -> None:
    stack.grpcurl("CreateSite", {"site_id": "kept", "display_name": "Kept", "site_group": "g"})
    token = (stack.data_dir / "admin.token").read_text()
    stack.process.send_signal(signal.SIGINT)
    assert stack.process.wait(timeout=30) == 0
    with stack.log.open("a") as out:
        stack.process = subprocess.Popen(
            [str(BIN / "kizuna"), "up"],
            env=stack.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    deadline = time.monotonic() + 60
    while stack.log.read_text().count("Kizuna is up.") < 2:
        assert stack.process.poll() is None, stack.log.read_text()
        assert time.monotonic() < deadline, stack.log.read_text()
        time.sleep(0.1)
    assert (stack.data_dir / "admin.token").read_text() == token  # same keys
    site = stack.grpcurl("GetSite", {"site_id": "kept"})
    assert site["site"]["display_name"] == "Kept"  # type: ignore[index]
