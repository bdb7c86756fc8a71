"""The relay serves TLS itself (--tls-cert/--tls-key): a node reaches it over wss:// and
checks the certificate like any HTTPS client (here against a test CA)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mycelium.relay.client import RelayUrl, connect
from mycelium.relay.handshake import HandshakeError
from simnet.backends.process import free_port
from tests.relay.conftest import community, running_relay


def _self_signed(tmp: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "relay.pem", tmp / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


async def test_node_reaches_a_tls_relay_and_checks_its_certificate(tmp_path: Path) -> None:
    com = community(tmp_path)
    cert, key = _self_signed(tmp_path)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    async with running_relay(tmp_path, port=port, public_urls=[url], tls=(cert, key)) as relay:
        trusted = ssl.create_default_context(cafile=cert)
        async with connect(RelayUrl.parse(url), com.a.identity, expected_did=relay.service.did,
                           ssl_context=trusted) as conn:
            assert conn.relay_did == relay.service.did
            assert await conn.list_spaces() == []
        with pytest.raises(HandshakeError) as err:  # the system's CAs do not know it
            async with connect(RelayUrl.parse(url), com.a.identity, expected_did=None):
                pass
        assert err.value.reason == "tls_failed"
        assert "certificate" in str(err.value)
