"""Node keys: who may join a ``fedad server`` federation.

Each client holds a private key (``fedad keygen --output KEYFILE``); the server operator lists
the public halves (``KEYFILE.pub``) in an ``authorized_keys`` file, one per line, like SSH. The
keys are the elliptic-curve (NIST P-384) OpenSSH keys that Flower's SuperNode authentication
expects: a SuperNode signs its requests with its private key, and the SuperLink accepts only
keys registered with it (``fedad server`` registers exactly the listed ones).
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedad_tutorial.errors import UserError

_EXAMPLE = "'ecdsa-sha2-nistp384 AAAA... comment' (the contents of a KEYFILE.pub from `fedad keygen`)"


@dataclass(frozen=True)
class PublicKey:
    """One authorized node key: the OpenSSH line, its fingerprint and where it was read."""

    line: str
    fingerprint: str  # "SHA256:..." like ``ssh-keygen -l``
    comment: str
    source: str  # "FILE, line N"


def fingerprint(openssh_line: str) -> str:
    """``SHA256:<base64>`` of the key blob, as ``ssh-keygen -lf`` prints it."""
    blob = base64.b64decode(openssh_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _public_line(key: ec.EllipticCurvePublicKey) -> str:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def generate_key(output: str | Path, comment: str | None = None) -> PublicKey:
    """Write a new private key to ``output`` (mode 600) and its public key to ``output.pub``.

    Existing files are never overwritten: a private key that is replaced by accident locks its
    node out of every federation that listed it.
    """
    output = Path(output)
    public = output.with_name(output.name + ".pub")
    for path in (output, public):
        if path.exists():
            raise UserError(f"{path}: already exists; choose another --output (an existing key is never replaced)")
    if not output.parent.is_dir():
        raise UserError(f"{output.parent}: no such folder")
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    line = f"{_public_line(key.public_key())} {comment or output.stem}"
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
    try:
        os.write(fd, private)
    finally:
        os.close(fd)
    public.write_text(line + "\n")
    return PublicKey(line, fingerprint(line), comment or output.stem, str(public))


def load_private_key(path: str | Path) -> PublicKey:
    """Check that ``path`` is a private key Flower's SuperNode can use; return its public half."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the key file ({exc.strerror})") from None
    try:
        key = serialization.load_ssh_private_key(data, None)
    except (ValueError, UnsupportedAlgorithm, TypeError):
        raise UserError(f"{path}: not an unencrypted OpenSSH private key (make one with `fedad keygen`)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UserError(f"{path}: Flower needs an elliptic-curve key (make one with `fedad keygen`)")
    line = _public_line(key.public_key())
    return PublicKey(line, fingerprint(line), "", str(path))


def read_authorized_keys(path: str | Path) -> list[PublicKey]:
    """The keys of an ``authorized_keys`` file: one OpenSSH public key per line, ``#`` comments allowed."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the authorized keys ({getattr(exc, 'strerror', None) or exc})") from None
    keys: list[PublicKey] = []
    seen: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}, line {number}"
        fields = line.split(maxsplit=2)
        try:
            if len(fields) < 2:
                raise ValueError
            key = serialization.load_ssh_public_key(f"{fields[0]} {fields[1]}".encode())
        except (ValueError, UnsupportedAlgorithm):
            raise UserError(f"{where}: expected an OpenSSH public key, like {_EXAMPLE}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise UserError(f"{where}: a {fields[0]} key; Flower needs an elliptic-curve key, like {_EXAMPLE}")
        print_ = fingerprint(line)
        if print_ in seen:
            raise UserError(f"{where}: the same key as {seen[print_]}")
        seen[print_] = f"line {number}"
        keys.append(PublicKey(f"{fields[0]} {fields[1]}", print_, fields[2] if len(fields) > 2 else "", where))
    if not keys:
        raise UserError(f"{path}: no public keys (one per line, like {_EXAMPLE})")
    return keys
