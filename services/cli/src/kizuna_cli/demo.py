"""`kizuna demo`: the Tanaka-san story across the three services of a running stack."""

from __future__ import annotations

import base64
import csv
import json
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from kizuna.consent.v1 import consent_pb2 as cpb
from kizuna.consent.v1.consent_pb2_grpc import ConsentServiceStub
from kizuna.identity.v1 import identity_pb2 as ipb
from kizuna.identity.v1.identity_pb2_grpc import IdentityServiceStub
from kizuna.profilesync.v1 import profilesync_pb2 as spb
from kizuna.profilesync.v1.profilesync_pb2_grpc import ProfileSyncServiceStub
from kizuna_cli.client import CliError, Target
from kizuna_profilesync.domain.webhooks import verify

PASSWORD = "sakura-mochi-2025"  # noqa: S105 - the demo customer's, shown on purpose
WAIT_SECONDS = 30.0


class Inbox:
    """The demo's webhook receiver: checks every signature, keeps what arrived."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    verify(
                        inbox.secret,
                        self.headers.get("webhook-id", ""),
                        self.headers.get("webhook-timestamp", ""),
                        body,
                        self.headers.get("webhook-signature", ""),
                        now=datetime.now(UTC),
                    )
                except Exception:
                    self.send_response(401)
                else:
                    with inbox.lock:
                        inbox.events.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/kizuna"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, what: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            with self.lock:
                for event in self.events:
                    if what(event):
                        return event
            time.sleep(0.05)
        raise CliError("the webhook did not arrive in time: is profile-sync running?")


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


class Story:
    def __init__(self, identity: Target, consent: Target, sync: Target, out: TextIO) -> None:
        self.out = out
        self.meta = identity.metadata
        self.ids = IdentityServiceStub(grpc.insecure_channel(identity.address))
        self.consent = ConsentServiceStub(grpc.insecure_channel(consent.address))
        self.sync = ProfileSyncServiceStub(grpc.insecure_channel(sync.address))
        self.run_id = secrets.token_hex(3)
        self.step_no = 0

    def step(self, text: str) -> None:
        self.step_no += 1
        self.out.write(f"\n{self.step_no:>2}. {text}\n")

    def say(self, text: str) -> None:
        self.out.write(f"    {text}\n")

    def call(self, method: Any, request: Any) -> Any:
        return method(request, metadata=self.meta, timeout=30)

    def play(self) -> int:
        run, say = self.run_id, self.say
        ec, app, cc, group = f"ec-{run}", f"app-{run}", f"callcenter-{run}", f"brand-{run}"
        email, phone_email = f"tanaka.{run}@example.jp", f"t.tanaka.{run}@example.com"

        self.step("A brand opens three channels in one site group")
        self.call(
            self.ids.CreateSite,
            ipb.CreateSiteRequest(
                site_id=ec,
                display_name="EC site",
                site_group=group,
                required_fields=["given_name", "family_name"],
            ),
        )
        self.call(
            self.ids.CreateSite,
            ipb.CreateSiteRequest(
                site_id=app,
                display_name="Member app",
                site_group=group,
                required_fields=["given_name", "family_name", "postal_address"],
            ),
        )
        self.call(
            self.ids.CreateSite,
            ipb.CreateSiteRequest(site_id=cc, display_name="Call centre", site_group=group),
        )
        say(f"{ec} needs a name; {app} also needs a postal address; {cc} needs nothing")

        self.step("Legal publishes the terms and the marketing-email statement")
        for statement, title in (
            ("terms", "Terms of use"),
            ("marketing-email", "Offers by e-mail"),
        ):
            with_run = f"{statement}-{run}"
            reply = self.call(
                self.consent.PublishStatement,
                cpb.PublishStatementRequest(
                    statement_id=with_run,
                    version="1.0",
                    purpose=statement,
                    title=title,
                    text=f"{title}, version 1.0.",
                ),
            )
            say(f"{with_run} 1.0  sha256 {reply.text_sha256[:16]}...")
        terms, marketing = f"terms-{run}", f"marketing-email-{run}"

        inbox = Inbox("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
        self.step("Marketing connects its mail tool: only customers who said yes to e-mail")
        self.call(
            self.sync.CreateConnector,
            spb.CreateConnectorRequest(
                connector_id=f"mail-{run}",
                kind=spb.CONNECTOR_KIND_WEBHOOK,
                webhook=spb.WebhookConfig(url=inbox.url, secret=inbox.secret),
                required_statements=[marketing],
                fields=["given_name", "family_name", "login_ids"],
            ),
        )
        say(f"webhook connector mail-{run} -> {inbox.url}")

        self.step("Tanaka-san registers on the EC site and accepts the terms")
        tanaka = self.call(
            self.ids.RegisterCustomer,
            ipb.RegisterCustomerRequest(
                site_id=ec,
                login_id=email,
                password=PASSWORD,
                channel="ec",
                profile=ipb.Profile(given_name="Hanako", family_name="Tanaka"),
            ),
        ).customer_id
        self.call(
            self.consent.RecordConsent,
            cpb.RecordConsentRequest(
                subject_id=tanaka,
                statement_id=terms,
                version="1.0",
                decision=cpb.DECISION_GRANTED,
                channel="ec",
                site_id=ec,
                evidence=cpb.Evidence(ip="203.0.113.10", user_agent="Safari"),
            ),
        )
        say(f"one customer id for every channel: {tanaka}")

        self.step("She opens the member app: single sign-on, and the app asks for her address")
        login = self.call(
            self.ids.Login, ipb.LoginRequest(site_id=ec, login_id=email, password=PASSWORD)
        )
        at_app = self.call(
            self.ids.ValidateSession,
            ipb.ValidateSessionRequest(session_token=login.session_token, site_id=app),
        )
        say(f"the EC session is valid in the app; missing there: {list(at_app.missing_fields)}")
        self.call(
            self.ids.UpdateProfile,
            ipb.UpdateProfileRequest(
                customer_id=tanaka,
                profile=ipb.Profile(
                    postal_address=ipb.PostalAddress(
                        postal_code="150-0001",
                        region="Tokyo",
                        locality="Shibuya-ku",
                        street="Jingumae 1-2-3",
                        country="JP",
                    )
                ),
            ),
        )
        at_app = self.call(
            self.ids.ValidateSession,
            ipb.ValidateSessionRequest(session_token=login.session_token, site_id=app),
        )
        say(f"after she adds it, missing: {list(at_app.missing_fields) or 'nothing'}")

        self.step("She phones the call centre, where an old record of hers lives")
        old = self.call(
            self.ids.RegisterCustomer,
            ipb.RegisterCustomerRequest(
                site_id=cc,
                login_id=phone_email,
                password=PASSWORD,
                channel="callcenter",
                profile=ipb.Profile(phone="+81 3 1234 5678"),
            ),
        ).customer_id
        self.call(
            self.ids.LinkIdentity,
            ipb.LinkIdentityRequest(
                customer_id=old, provider="callcenter", external_id=f"CC-{run}"
            ),
        )
        say(f"call-centre record {old} (CC-{run}) is a stranger so far")
        merged = self.call(
            self.ids.MergeCustomers,
            ipb.MergeCustomersRequest(
                survivor_id=tanaka, merged_id=old, reason="same person, confirmed by phone"
            ),
        ).survivor
        resolved = self.call(
            self.ids.ResolveIdentity,
            ipb.ResolveIdentityRequest(provider="callcenter", external_id=f"CC-{run}"),
        ).customer_id
        say(
            f"merged: CC-{run} now resolves to {resolved}; "
            f"phone {merged.profile.phone} joined her profile"
        )

        self.step("She signed a paper form in the shop last week: yes to offers by e-mail")
        signed = datetime.now(UTC) - timedelta(days=7)
        self.call(
            self.consent.RecordConsent,
            cpb.RecordConsentRequest(
                subject_id=old,
                statement_id=marketing,
                version="1.0",
                decision=cpb.DECISION_GRANTED,
                effective_at=stamp(signed),
                channel="store",
                site_id=cc,
                evidence=cpb.Evidence(collected_by="staff-042", proof_ref=f"form-{run}"),
                idempotency_key=f"form-{run}",
            ),
        )
        say("recorded for the merged id; the ledger files it under the survivor")
        event = inbox.wait_for(
            lambda e: e["customer_id"] == tanaka and e["type"] == "customer.upserted"
        )
        say(
            f"the mail tool received {event['type']}: "
            f"{event['data']['given_name']} {event['data']['family_name']}"
        )

        self.step("An auditor asks what we held, and when we knew it")
        for label, at, known in (
            ("two weeks ago", datetime.now(UTC) - timedelta(days=14), None),
            ("yesterday", datetime.now(UTC) - timedelta(days=1), None),
            (
                "yesterday, as known an hour ago",
                datetime.now(UTC) - timedelta(days=1),
                datetime.now(UTC) - timedelta(hours=1),
            ),
        ):
            request = cpb.GetConsentStateRequest(subject_id=old, at=stamp(at))
            if known is not None:
                request.as_known_at.CopyFrom(stamp(known))
            entries = self.call(self.consent.GetConsentState, request).entries
            status = next(
                cpb.ConsentStatus.Name(e.status) for e in entries if e.statement_id == marketing
            )
            say(f"{label:<32} {status.removeprefix('CONSENT_STATUS_')}")

        self.step("She changes her mind: no more e-mails")
        self.call(
            self.consent.RecordConsent,
            cpb.RecordConsentRequest(
                subject_id=tanaka,
                statement_id=marketing,
                version="1.0",
                decision=cpb.DECISION_WITHDRAWN,
                channel="app",
                site_id=app,
            ),
        )
        gone = inbox.wait_for(
            lambda e: e["customer_id"] == tanaka and e["type"] == "customer.deleted"
        )
        say(f"the mail tool received {gone['type']} (reason: {gone['data']['reason']})")

        self.step("The ledger proves itself, and exports the state for the auditor")
        verified = self.call(self.consent.VerifyLedger, cpb.VerifyLedgerRequest())
        say(
            f"VerifyLedger: ok={verified.ok}, {verified.records_checked} records, "
            f"root {verified.root_hash.hex()[:16]}..."
        )
        out = Path(tempfile.gettempdir()) / f"kizuna-demo-{run}.csv"
        rows = 0
        with out.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["subject_id", "statement_id", "status", "version"])
            for row in (
                row
                for message in self.consent.ExportConsentState(
                    cpb.ExportConsentStateRequest(at=stamp(datetime.now(UTC))), metadata=self.meta
                )
                for row in message.states
            ):
                if row.statement_id in (terms, marketing):
                    writer.writerow(
                        [
                            row.subject_id,
                            row.statement_id,
                            cpb.ConsentStatus.Name(row.status),
                            row.version,
                        ]
                    )
                    rows += 1
        say(f"consent export: {rows} rows for this story in {out}")
        profile = self.call(self.sync.GetProfile, spb.GetProfileRequest(customer_id=tanaka)).profile
        say(
            f"unified profile: {profile.given_name} {profile.family_name}, "
            f"sites {list(profile.sites)}, "
            f"logins {list(profile.login_ids)}"
        )
        inbox.server.shutdown()
        self.out.write("\nOne customer, every channel, every consent on record.\n")
        return 0


def demo(identity: Target, consent: Target, sync: Target, out: TextIO) -> int:
    return Story(identity, consent, sync, out).play()
