"""TLS for ``fedad server``: a CA and a server certificate for the names clients use (``fedad certs``).

``fedad server --certificates DIR`` expects three PEM files in ``DIR``: ``ca.crt`` (the CA
certificate), ``server.pem`` (the server certificate, signed by the CA) and ``server.key`` (its
private key). Clients get only the CA certificate: ``fedad client --root-certificates DIR/ca.crt``.
A client checks that the server's certificate names the host of its ``--server-address``, so the
certificate must list every name and address clients connect with: ``fedad certs --host NAME``,
once per name.

The CA's private key signs server certificates: whoever holds it can pose as the server to every
client. ``fedad certs`` therefore writes it apart from ``DIR`` (``DIR-ca.key`` unless told otherwise),
so that copying ``DIR`` to the server never copies it; it belongs on the machine that made it, or
offline. The same files with openssl::

    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=fedad CA" \\
        -keyout certs-ca.key -out certs/ca.crt
    openssl req -newkey rsa:2048 -nodes -subj "/CN=server.example.org" -keyout certs/server.key -out server.csr
    printf "subjectAltName=DNS:server.example.org,IP:192.0.2.10\\n" > san.ext
    openssl x509 -req -in server.csr -CA certs/ca.crt -CAkey certs-ca.key -CAcreateserial -days 365 \\
        -extfile san.ext -out certs/server.pem

Certificates from your organisation's CA work the same way.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fedad_tutorial.errors import UserError
from fedad_tutorial.flower.files import NewFiles, control_character, read_regular, refuse_existing, shown, write_new

if TYPE_CHECKING:
    from cryptography import x509

CA_CERT, SERVER_CERT, SERVER_KEY = "ca.crt", "server.pem", "server.key"
#: How long ``fedad certs`` makes certificates valid, by default and at most (days).
DEFAULT_DAYS, MAX_DAYS = 365, 3650
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# cryptography is imported where it is used: `fedad --help` builds this command's flags from the constants above


def _name(common_name: str) -> x509.Name:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def parse_host(text: str) -> x509.GeneralName:
    """One ``--host``: an IP address or a DNS name clients connect with; anything else is a one-line
    :class:`UserError` saying what is expected."""
    from cryptography import x509

    expected = "a DNS name (server.example.org) or an IP address (192.0.2.10), without a port"
    if not text or control_character(text) or any(c.isspace() for c in text):
        raise UserError(f"--host {shown(text) or repr(text)}: expected {expected}")
    try:
        address = ipaddress.ip_address(text.strip("[]") if text.startswith("[") else text)
    except ValueError:
        address = None
    if address is not None:
        if address.is_unspecified:
            raise UserError(f"--host {text}: that is where a server listens (every interface), not an address "
                            "clients connect to; give the server's address or name as clients reach it")
        return x509.IPAddress(address)
    name = text.lower().rstrip(".")
    if not name.isascii():
        try:
            ascii_form = name.encode("idna").decode()
        except UnicodeError:
            raise UserError(f"--host {text!r}: expected {expected}") from None
        raise UserError(f"--host {text}: give the name's ASCII form, {ascii_form}")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        hint = " (the port belongs in --address, not here)" if ":" in text else ""
        raise UserError(f"--host {text!r}: expected {expected}{hint}")
    return x509.DNSName(name)


def names(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a certificate is valid for (its subject alternative names)."""
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName), *(str(a) for a in san.get_values_for_type(x509.IPAddress))]


@dataclass(frozen=True)
class Written:
    """What :func:`generate_certificates` wrote."""

    folder: Path  # ca.crt, server.pem, server.key: for the server (clients get ca.crt only)
    ca_key: Path  # the CA's private key: never to a server or client
    names: list[str]
    not_after: dt.datetime


def default_ca_key(folder: Path) -> Path:
    """Where the CA key goes unless told otherwise: beside ``folder``, never in it."""
    return folder.with_name(folder.name + "-ca.key")


def _build(hosts: list[x509.GeneralName], days: int) -> tuple[dict[str, bytes], bytes, dt.datetime]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("fedad CA")).issuer_name(_name("fedad CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    first = hosts[0].value
    cert = (x509.CertificateBuilder().subject_name(_name(str(first))).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(hosts), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    private = {"encoding": pem, "format": serialization.PrivateFormat.PKCS8,
               "encryption_algorithm": serialization.NoEncryption()}
    files = {CA_CERT: ca.public_bytes(pem), SERVER_CERT: cert.public_bytes(pem),
             SERVER_KEY: key.private_bytes(**private)}
    return files, ca_key.private_bytes(**private), end


def generate_certificates(folder: str | os.PathLike, hosts: list[str], days: int = DEFAULT_DAYS,
                          ca_key: str | os.PathLike | None = None) -> Written:
    """Write a new CA and a server certificate valid for ``hosts`` to ``folder`` (``ca.crt``,
    ``server.pem``, ``server.key``) and the CA's private key to ``ca_key`` (default
    :func:`default_ca_key`, mode 600), all or nothing.

    ``folder`` must be new (or an empty folder) and ``ca_key`` must not exist: certificates and keys
    in use are never replaced, and nothing is written through a symlink.
    """
    text = os.fspath(folder)
    if not text.strip() or Path(text).name in ("", ".", ".."):
        raise UserError(f"--output {text!r}: name a new folder for the certificates, like certs")
    if control_character(text):
        raise UserError(f"--output {shown(text)}: the name holds a control character or bytes that are not UTF-8")
    if not 1 <= days <= MAX_DAYS:
        raise UserError(f"--days must be between 1 and {MAX_DAYS}, got {days}")
    if not hosts:
        raise UserError("give at least one --host: each DNS name and IP address clients use to reach the server")
    general = list(dict.fromkeys(parse_host(h) for h in hosts))
    folder = Path(text)
    ca_key = default_ca_key(folder) if ca_key is None else Path(ca_key)
    if control_character(os.fspath(ca_key)):
        raise UserError(f"--ca-key {shown(ca_key)}: the name holds a control character or bytes that are not UTF-8")
    if ca_key.resolve().is_relative_to(folder.resolve()):
        raise UserError(f"--ca-key {shown(ca_key)}: inside {shown(folder)}, which goes to the server; "
                        "the CA key must stay apart")
    hint = "certificates and keys are never replaced: choose another --output or --ca-key"
    if os.path.islink(folder) or (os.path.lexists(folder) and not (folder.is_dir() and not any(folder.iterdir()))):
        refuse_existing(folder, f"{hint}; a new or empty folder is fine")
    refuse_existing(ca_key, hint)
    files, ca_private, not_after = _build(general, days)
    with NewFiles() as new:
        new.folder(folder.parent)
        new.folder(ca_key.parent)
        staging = new.temporary_folder(folder)
        for name, data in files.items():
            write_new(staging / name, data, 0o600 if name == SERVER_KEY else 0o644)
        new.publish(new.temporary_file(ca_key.parent, ca_key.name, ca_private, 0o600), ca_key, hint)
        new.publish(staging, folder, hint)  # replaces only an empty folder
    return Written(folder, ca_key, [str(g.value) for g in general], not_after)


def generate_test_certificates(directory: str | os.PathLike, days: int = 7) -> Path:
    """Certificates for ``127.0.0.1`` and ``localhost`` in ``directory`` (new or empty), for tests and
    demos on one machine; the CA key goes beside it (:func:`default_ca_key`). Returns ``directory``."""
    return generate_certificates(directory, ["127.0.0.1", "localhost"], days).folder


def _certificate(path: Path, what: str) -> x509.Certificate:
    from cryptography import x509

    data = read_regular(path, what)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise UserError(f"{shown(path)}: not a PEM certificate ({what}; `fedad certs` makes one)") from None


def load_ca(path: Path) -> x509.Certificate:
    """The CA certificate of ``--root-certificates`` (a regular file holding a PEM certificate)."""
    return _certificate(path, "the CA certificate")


def check_server_files(folder: Path) -> list[str]:
    """Check ``--certificates DIR`` before a server starts (each file there and regular, PEM, the key
    matching the certificate, the certificate signed by the CA and valid now); return the names it
    is valid for. Each problem is one line naming the file."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    for name in (CA_CERT, SERVER_CERT, SERVER_KEY):
        if not os.path.lexists(folder / name):
            raise UserError(f"{shown(folder / name)}: no such file (--certificates DIR needs {CA_CERT}, "
                            f"{SERVER_CERT} and {SERVER_KEY}; `fedad certs` makes them)")
    ca = _certificate(folder / CA_CERT, "the CA certificate")
    cert = _certificate(folder / SERVER_CERT, "the server certificate")
    data = read_regular(folder / SERVER_KEY, "the server key")
    try:
        key = serialization.load_pem_private_key(data, None)
    except (ValueError, TypeError):
        raise UserError(f"{shown(folder / SERVER_KEY)}: not an unencrypted PEM private key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, public) != cert.public_key().public_bytes(
            serialization.Encoding.PEM, public):
        raise UserError(f"{shown(folder / SERVER_KEY)}: not the key of {SERVER_CERT} (files from different runs "
                        "of `fedad certs`?)")
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise UserError(f"{shown(folder / SERVER_CERT)}: not signed by {CA_CERT} ({type(exc).__name__}); "
                        "clients would refuse it") from None
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise UserError(f"{shown(folder / SERVER_CERT)}: valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                        f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not now; make new ones with `fedad certs`")
    return names(cert)
