"""Before a client starts its SuperNode: is the server there, and does TLS fit? One line per mistake.

Flower's SuperNode reports every connection problem the same way (it retries, then says it
could not connect), with colour codes. ``fedad client`` checks the usual mistakes itself first
and names each one: nothing listens at the address; the server speaks TLS but the client was
told ``--insecure`` (or the reverse); the server's certificate is not signed by the given CA;
the certificate is not valid for the address's host name (the message lists the names it holds).
A key the server does not list is recognised afterwards, from the SuperNode's log
(:func:`supernode_failure`).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from pathlib import Path

from fedad_tutorial.errors import UserError
from fedad_tutorial.flower.files import read_regular, shown
from fedad_tutorial.flower.keys import PublicKey

_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNEXPECTED_EOF", "PACKET_LENGTH_TOO_LONG",
            "HTTP_REQUEST", "UNKNOWN_PROTOCOL")


def _connect(host: str, port: int, wait_timeout: float) -> socket.socket:
    """A connection to ``host:port``, retried for ``wait_timeout`` s; a name that does not exist (as the
    name servers say, not one they failed to answer for) is the user's mistake at once."""
    deadline = time.monotonic() + wait_timeout
    while True:
        try:
            return socket.create_connection((host, port), timeout=5.0)
        except UnicodeError:
            raise UserError(f"--server-address {shown(f'{host}:{port}')}: {host!r} is not a valid host name") from None
        except OSError as exc:
            if isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_NONAME:
                raise UserError(f"--server-address {shown(f'{host}:{port}')}: cannot resolve {host!r} "
                                f"({str(exc.strerror).lower()}); check the server's name") from None
            reason = exc.strerror or str(exc) or type(exc).__name__  # a timeout has no strerror
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot reach the fedad server at {shown(f'{host}:{port}')} within "
                                   f"{wait_timeout:g} s ({reason.lower()}): is it running, and are the address and "
                                   "port right?") from None
        time.sleep(0.5)


def check_server(host: str, port: int, root_certificates: Path | None, wait_timeout: float) -> None:
    """Wait (at most ``wait_timeout`` s) until ``host:port`` accepts connections, then check TLS."""
    address = f"{host}:{port}"
    sock = _connect(host, port, wait_timeout)
    try:
        if root_certificates is None:
            sock.sendall(b"GET /health HTTP/1.0\r\nHost: fedad\r\n\r\n")
            try:
                head = sock.recv(5)
            except OSError:
                head = b""
            if not head.startswith(b"HTTP"):
                raise RuntimeError(f"the fedad server at {address} uses TLS: give --root-certificates CA.crt "
                                   "and --auth-key KEYFILE instead of --insecure")
            return
        # the CA's certificate is checked here (it is read once, as a regular file: never a FIFO that blocks)
        context = ssl.create_default_context(cadata=read_regular(root_certificates, "the CA certificate").decode(
            errors="replace"))
        context.check_hostname = False  # the names are compared below, so the message can list them
        try:
            with context.wrap_socket(sock, server_hostname=host) as tls:
                presented = tls.getpeercert()
            _check_names(presented, host, address)
            return
        except ssl.SSLCertVerificationError as exc:
            raise RuntimeError(f"the certificate of the fedad server at {address} is not signed by "
                               f"{root_certificates} ({exc.verify_message}): wrong --root-certificates?") from None
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            if any(tag in str(reason).upper() for tag in _NOT_TLS) or isinstance(exc, ConnectionResetError):
                raise RuntimeError(f"the fedad server at {address} does not use TLS (started with --insecure?): "
                                   "start it with --certificates DIR, or use --insecure on both sides") from None
            raise RuntimeError(f"the TLS handshake with the fedad server at {address} failed ({reason})") from None
    finally:
        sock.close()


def _check_names(presented: dict, host: str, address: str) -> None:
    """The rule TLS clients apply (RFC 6125): an IP address must be listed as one, a name as a DNS name
    (a ``*.`` wildcard covers one label); a mismatch names what the certificate lists. It is the user's
    mistake (a :class:`UserError`, exit 2): the wrong ``--server-address``, or certificates made for
    other names; retrying cannot help."""
    listed = [(kind, value) for kind, value in presented.get("subjectAltName", ()) if kind in ("DNS", "IP Address")]
    try:
        wanted = ipaddress.ip_address(host)
    except ValueError:
        wanted = None
    for kind, value in listed:
        if wanted is not None and kind == "IP Address" and ipaddress.ip_address(value.strip()) == wanted:
            return
        if wanted is None and kind == "DNS" and _dns_match(value, host):
            return
    names = ", ".join(value.strip() for _, value in listed) or "no names"
    raise UserError(f"the certificate of the fedad server at {address} is not valid for the name {host!r}: "
                       f"it lists {names}; connect with one of those, or make certificates for {host} with "
                       f"`fedad certs --host {host}`")


def _dns_match(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == pattern[2:]
    return pattern == host


def supernode_failure(log_tail: str, address: str, key: PublicKey | None, code: int | None) -> str:
    """One line for a SuperNode that stopped before the last message, from the tail of its log."""
    lowered = log_tail.lower()
    if key is not None and any(s in lowered for s in ("401", "unauthorized", "authentication", "failed to activate")):
        return (f"the fedad server at {address} does not know this node's key ({key.fingerprint}): ask its "
                "operator to add your KEYFILE.pub to the server's --authorized-keys")
    last = log_tail.split(" | ")[-1] if log_tail else "no log"
    return f"the Flower SuperNode stopped (code {code}) while connected to the fedad server at {address}: {last}"
