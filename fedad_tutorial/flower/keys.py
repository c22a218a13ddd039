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
from fedad_tutorial.flower.files import NewFiles, control_character, read_regular, refuse_existing, shown

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


def _key_paths(output: str | os.PathLike) -> tuple[Path, Path]:
    """The private and public key files of ``--output``, or a one-line :class:`UserError` for a name
    that cannot be a key file (empty, a folder's spelling, a control character)."""
    text = os.fspath(output)
    if not text.strip() or text.endswith(("/", os.sep)) or Path(text).name in ("", ".", ".."):
        raise UserError(f"--output {text!r}: name the private key file to write, like keys/node_1")
    if control_character(text):
        raise UserError(f"--output {shown(text)}: the name holds a control character or bytes that are not UTF-8; "
                        "choose a plain file name")
    output = Path(text)
    return output, output.with_name(output.name + ".pub")


def _comment(comment: str | None, output: Path) -> str:
    """The public key line's last field: ``comment``, else the file name; one line of text."""
    text = output.name if comment is None else comment
    if not text.strip() or control_character(text):
        raise UserError(f"--comment {shown(text)}: expected one line of printable text (no newline or "
                        "control character), the name the server operator sees")
    return text.strip()


def generate_key(output: str | os.PathLike, comment: str | None = None) -> PublicKey:
    """Write a new private key to ``output`` (mode 600) and its public key to ``output.pub``; a missing
    parent folder is created (mode 700).

    Existing files are never overwritten (a private key that is replaced by accident locks its node out
    of every federation that listed it), nothing is written through a symlink, and either both files
    appear or neither: each is written to a temporary file first, then both are given their names.
    """
    output, public = _key_paths(output)
    comment = _comment(comment, output)
    hint = "choose another --output: an existing key is never replaced"
    for path in (output, public):
        refuse_existing(path, hint)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    line = f"{_public_line(key.public_key())} {comment}"
    with NewFiles() as new:
        new.folder(output.parent)
        ready = [new.temporary_file(output.parent, output.name, private, 0o600),  # never readable by others
                 new.temporary_file(output.parent, public.name, (line + "\n").encode(), 0o644)]
        for tmp, path in zip(ready, (output, public), strict=True):
            new.publish(tmp, path, hint)
    return PublicKey(line, fingerprint(line), comment, str(public))


def load_private_key(path: str | Path) -> PublicKey:
    """Check that ``path`` is a private key Flower's SuperNode can use; return its public half."""
    path = Path(path)
    data = read_regular(path, "a private key file")
    try:
        key = serialization.load_ssh_private_key(data, None)
    except (ValueError, UnsupportedAlgorithm, TypeError):
        raise UserError(f"{shown(path)}: not an unencrypted OpenSSH private key (make one with "
                        "`fedad keygen`)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UserError(f"{shown(path)}: Flower needs an elliptic-curve key (make one with `fedad keygen`)")
    line = _public_line(key.public_key())
    return PublicKey(line, fingerprint(line), "", str(path))


def read_authorized_keys(path: str | Path) -> list[PublicKey]:
    """The keys of an ``authorized_keys`` file: one OpenSSH public key per line, ``#`` comments allowed."""
    path = Path(path)
    data = read_regular(path, "an authorized keys file")
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError(f"{shown(path)}, line {line}: not UTF-8 text; expected OpenSSH public keys, one per "
                        "line") from None
    keys: list[PublicKey] = []
    seen: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{shown(path)}, line {number}"
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
        raise UserError(f"{shown(path)}: no public keys (one per line, like {_EXAMPLE})")
    return keys
