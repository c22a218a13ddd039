"""A local test CA and a server certificate for ``127.0.0.1`` / ``localhost`` (TLS in tests and demos).

``fedad server --certificates DIR`` expects three PEM files in ``DIR``: ``ca.crt`` (the CA
certificate), ``server.pem`` (the server certificate, signed by the CA) and ``server.key`` (its
private key). Clients get only the CA certificate: ``fedad client --root-certificates DIR/ca.crt``.
The same files with openssl::

    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=fedad test CA" \\
        -keyout ca.key -out ca.crt
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
    printf "subjectAltName=IP:127.0.0.1,DNS:localhost\\n" > san.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \\
        -extfile san.ext -out server.pem

For anything but local tests, use certificates from your organisation's CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CA_CERT, SERVER_CERT, SERVER_KEY = "ca.crt", "server.pem", "server.key"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def generate_test_certificates(directory: str | Path, days: int = 7) -> Path:
    """Write ``ca.crt``, ``ca.key``, ``server.pem`` and ``server.key`` to ``directory``; return it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("fedad test CA")).issuer_name(_name("fedad test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    plain = dict(encoding=pem, format=serialization.PrivateFormat.PKCS8,
                 encryption_algorithm=serialization.NoEncryption())
    (directory / CA_CERT).write_bytes(ca.public_bytes(pem))
    (directory / "ca.key").write_bytes(ca_key.private_bytes(**plain))
    (directory / SERVER_CERT).write_bytes(cert.public_bytes(pem))
    (directory / SERVER_KEY).write_bytes(key.private_bytes(**plain))
    (directory / SERVER_KEY).chmod(0o600)
    (directory / "ca.key").chmod(0o600)
    return directory
