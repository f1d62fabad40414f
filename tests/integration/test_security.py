"""TLS and mTLS with certificates generated here (a CA, a server cert for 127.0.0.1, client
certs from that CA and from a stranger's CA), against real servers over loopback."""

from __future__ import annotations

import datetime
import ipaddress
import uuid
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kiln.common.v1 import common_pb2
from services.common.clients import KilnClient
from services.common.settings import Settings

TOKEN = "tls-token"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


class Authority:
    """A throwaway CA that issues server and client certificates (ECDSA P-256)."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.key = folder, ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.ca = _write_cert(self.cert, folder / f"{name}.crt")

    def issue(self, name: str, server: bool) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return (
            _write_cert(cert, self.folder / f"{name}.crt"),
            _write_key(key, self.folder / f"{name}.key"),
        )


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca, stranger = Authority(tmp_path, "kiln-ca"), Authority(tmp_path, "stranger-ca")
    server_cert, server_key = ca.issue("server", server=True)
    client_cert, client_key = ca.issue("client", server=False)
    rogue_cert, rogue_key = stranger.issue("rogue", server=False)
    return {
        "ca": ca.ca,
        "stranger_ca": stranger.ca,
        "server_cert": server_cert,
        "server_key": server_key,
        "client_cert": client_cert,
        "client_key": client_key,
        "rogue_cert": rogue_cert,
        "rogue_key": rogue_key,
    }


def _round_trip(target: str, settings: Settings) -> str:
    """Submits a canary job (no worker runs) and reads it back; returns its state's name."""
    with KilnClient("judge", target=target, settings=settings, deadline_s=3) as client:
        job = client.jobs.SubmitCanary(
            common_pb2.SubmitCanaryRequest(request_id=uuid.uuid4().hex, shards=1), timeout=3
        )
        again = client.jobs.GetJob(common_pb2.GetJobRequest(job_id=job.id), timeout=3)
        assert again.id == job.id
        return common_pb2.JobState.Name(again.state)


def _refused(target: str, settings: Settings) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        _round_trip(target, settings)
    return err.value.code()


def test_tls_server_serves_verified_clients_only(grpc_server, redis_url: str, pki) -> None:
    server_settings = Settings(
        redis_url=redis_url,
        auth_token=TOKEN,
        tls_cert=pki["server_cert"],
        tls_key=pki["server_key"],
    )
    server = grpc_server("judge", server_settings)
    client = Settings(redis_url=redis_url, auth_token=TOKEN, tls_ca=pki["ca"])
    assert _round_trip(server.target, client) == "JOB_STATE_QUEUED"
    # plaintext to a TLS port, and a client that trusts another CA: no connection
    plaintext = Settings(redis_url=redis_url, auth_token=TOKEN)
    assert _refused(server.target, plaintext) == grpc.StatusCode.UNAVAILABLE
    wrong_ca = client.model_copy(update={"tls_ca": pki["stranger_ca"]})
    assert _refused(server.target, wrong_ca) == grpc.StatusCode.UNAVAILABLE
    # TLS does not replace the token
    no_token = client.model_copy(update={"auth_token": ""})
    assert _refused(server.target, no_token) == grpc.StatusCode.UNAUTHENTICATED


def test_mtls_requires_a_client_certificate_from_the_ca(grpc_server, redis_url, pki) -> None:
    server_settings = Settings(
        redis_url=redis_url,
        auth_token=TOKEN,
        tls_cert=pki["server_cert"],
        tls_key=pki["server_key"],
        tls_ca=pki["ca"],
    )
    server = grpc_server("judge", server_settings)
    client = Settings(
        redis_url=redis_url,
        auth_token=TOKEN,
        tls_ca=pki["ca"],
        tls_client_cert=pki["client_cert"],
        tls_client_key=pki["client_key"],
    )
    assert _round_trip(server.target, client) == "JOB_STATE_QUEUED"
    anonymous = client.model_copy(update={"tls_client_cert": None, "tls_client_key": None})
    assert _refused(server.target, anonymous) == grpc.StatusCode.UNAVAILABLE
    rogue = client.model_copy(
        update={"tls_client_cert": pki["rogue_cert"], "tls_client_key": pki["rogue_key"]}
    )
    assert _refused(server.target, rogue) == grpc.StatusCode.UNAVAILABLE
    with KilnClient("judge", target=server.target, settings=anonymous) as health_only:
        assert health_only.health_status() == "UNREACHABLE"  # health is not exempt from mTLS
