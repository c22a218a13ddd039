"""A one-thread TLS (or plain HTTP) listener on a free port, for the tests of a client's look at a server
before it connects (the pre-flight messages, the names a certificate holds)."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path


class TLSServer:
    """Accepts connections on ``host`` at a free port (:attr:`port`): a TLS handshake with ``certs``' server
    certificate, or, without ``certs``, a plain HTTP 404, then closes the connection."""

    def __init__(self, certs: Path | None, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.context = None
        if certs is not None:
            self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.context.load_cert_chain(certs / "server.pem", certs / "server.key")
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                if self.context is not None:
                    conn = self.context.wrap_socket(conn, server_side=True)
                else:
                    conn.recv(100)
                    conn.sendall(b"HTTP/1.0 404 Not Found\r\n\r\n")
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()
