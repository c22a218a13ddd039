"""A ``fedad client`` noticing, on a thread of its own, that its server is gone.

The client answers its SuperNode's messages in its main thread, and a call there may wait long on a
server that no longer exists: for the contents of a message the killed server never sent, or on its
SuperNode, which retries the dead server for up to ``--wait-timeout``. Checks made between two
calls would then wait too, and a server restarted meanwhile (``fedad server --resume``) would wait
for a node that never comes. So :class:`ServerWatch` checks on a thread: the server's port, every
:data:`EVERY` s, and the SuperNode. Once the port was found closed :data:`MISSES` times in a row, or
the SuperNode stopped because the server no longer knows its node
(:data:`~fedad_tutorial.flower.supernode.FORGOTTEN`), the server is lost: the watch stops the
SuperNode, which ends any call the main thread waits in
(:data:`~fedad_tutorial.flower.runtime.LOCAL_GIVE_UP`), and the client joins the server again.
"""

from __future__ import annotations

import subprocess
import threading

from fedad_tutorial.flower.processes import reachable
from fedad_tutorial.flower.supernode import FORGOTTEN

#: Seconds between two checks of the server's port.
EVERY = 0.5
#: Checks in a row that must find the port closed: closed for at least ``(MISSES - 1) * EVERY`` s.
MISSES = 3


class ServerWatch:
    """Watch the server at ``host:port`` and the SuperNode ``node`` serving it, from a daemon thread.

    ``lost`` is set when the server is gone (and ``node`` then stopped); ``closed`` says whether the
    port was closed at the last check. After :meth:`finish` (the last message answered) a server
    that stops is expected: it is still reported by ``closed``, and the SuperNode is left alone."""

    def __init__(self, node: subprocess.Popen, host: str, port: int) -> None:
        self.node, self.host, self.port = node, host, port
        self.lost, self.closed = threading.Event(), False
        self._finished, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="fedad-server-watch")

    def __enter__(self) -> ServerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def server_gone(self) -> bool:
        """Whether the server is lost, asked now by a caller whose SuperNode stopped answering (the watch may
        not have looked since): as the watch found, as the SuperNode's exit says, or as the port is now."""
        return self.lost.is_set() or self.node.poll() == FORGOTTEN or not reachable(self.host, self.port)

    def finish(self) -> None:
        """The last message is answered: from now on the server may stop."""
        self._finished.set()

    def _watch(self) -> None:
        misses = 0
        while not self._stop.wait(EVERY):
            code = self.node.poll()
            if code is not None:
                if code == FORGOTTEN and not self._finished.is_set():
                    self.lost.set()
                return
            self.closed = not reachable(self.host, self.port)
            misses = misses + 1 if self.closed else 0
            if misses >= MISSES and not self._finished.is_set():
                self.lost.set()
                self.node.kill()  # ends the main thread's calls to it; its state folder goes with the session
                return
