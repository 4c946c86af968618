"""TLS, and client certificates (mTLS) as credentials instead of a bearer key."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kizuna.identity.v1 import identity_pb2 as pb
from kizuna.identity.v1.identity_pb2_grpc import IdentityServiceStub
from kizuna_identity.main import build
from kizuna_kit.config import TlsFiles
from tests.conftest import Keys
from tests.integration.identity.conftest import CHEAP_HASH, identity_config

pytestmark = pytest.mark.integration


def pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def issue(
    name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, server: bool = False
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    return cert, key


async def test_client_certificates_are_credentials(tmp_path: Path, keys: Keys) -> None:
    ca_cert, ca_key = issue("kizuna-test-ca", None)
    ca = (ca_cert.subject, ca_key)
    server_cert, server_key = issue("identity", ca, server=True)
    client_cert, client_key = issue("crm-service", ca)
    stranger_ca_cert, stranger_ca_key = issue("elsewhere", None)
    stranger_cert, stranger_key = issue("crm-service", (stranger_ca_cert.subject, stranger_ca_key))
    files = {
        "ca.pem": ca_cert.public_bytes(serialization.Encoding.PEM),
        "server.pem": server_cert.public_bytes(serialization.Encoding.PEM),
        "server.key": pem(server_key),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    document = json.loads(keys.path.read_text())
    document["keys"].append(
        {"id": "crm", "client_cert_cn": "crm-service", "scopes": ["identity:read"]}
    )
    keys.path.write_text(json.dumps(document))

    config = identity_config(tmp_path, keys.path, None, "nats://127.0.0.1:1")
    tls = TlsFiles(tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem")
    service = build(config.__class__(**{**config.__dict__, "tls": tls}), CHEAP_HASH)
    await service.server.start()
    address = f"127.0.0.1:{service.server.port}"
    root = files["ca.pem"]

    def channel(
        cert: x509.Certificate | None, key: ec.EllipticCurvePrivateKey | None
    ) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=root,
            private_key=pem(key) if key else None,
            certificate_chain=cert.public_bytes(serialization.Encoding.PEM) if cert else None,
        )
        return grpc.aio.secure_channel(address, credentials)

    try:
        async with channel(client_cert, client_key) as mutual:
            reply = await IdentityServiceStub(mutual).ListSites(pb.ListSitesRequest())
            assert list(reply.sites) == []
            with pytest.raises(grpc.aio.AioRpcError) as denied:  # read-only certificate
                await IdentityServiceStub(mutual).CreateSite(
                    pb.CreateSiteRequest(site_id="x", display_name="X", site_group="g")
                )
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        other_cert, other_key = issue("batch-job", ca)  # signed by our CA, but no key entry
        async with channel(other_cert, other_key) as unnamed:
            stub = IdentityServiceStub(unnamed)
            with pytest.raises(grpc.aio.AioRpcError) as anonymous:
                await stub.ListSites(pb.ListSitesRequest())
            assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # A bearer key still works over mTLS.
            await stub.ListSites(pb.ListSitesRequest(), metadata=Keys.auth(keys.auditor))
        async with channel(None, None) as no_certificate:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await IdentityServiceStub(no_certificate).ListSites(
                    pb.ListSitesRequest(), metadata=Keys.auth(keys.admin), timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        async with channel(stranger_cert, stranger_key) as forged:
            with pytest.raises(grpc.aio.AioRpcError) as refused:  # same name, wrong CA
                await IdentityServiceStub(forged).ListSites(pb.ListSitesRequest(), timeout=5)
            assert refused.value.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.UNAUTHENTICATED,
            )
    finally:
        await service.server.stop(0)
        await service.close()
