"""What ``fedad server`` shows while it runs: a bar for the clients it waits for, then one for the rounds.

The bars are the command line's (:func:`~fedad_tutorial.progress.progress_bar`: stderr, shown once a
step has lasted a couple of seconds, plain lines now and then when stderr is no terminal), the
per-round table to stdout (through the bar's ``write``, so a bar is never torn by a table line);
``quiet`` hides the progress, never the table.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class ServerProgress:
    """Bars for ``fedad server``: ``clients`` (connected of ``min_clients``) while it waits, then ``rounds``."""

    def __init__(self, rounds: int, min_clients: int, quiet: bool, on_row: Callable[[dict], str] | None = None) -> None:
        self.rounds, self.min_clients, self.quiet, self.on_row = rounds, min_clients, quiet, on_row
        self.clients = self.bar = None

    def _tqdm(self, total: int, desc: str, unit: str):
        from fedad_tutorial.progress import progress_bar

        return progress_bar(total, desc, unit, self.quiet)

    def count(self, connected: int) -> None:
        """``connected`` nodes are there (called while the server waits for them)."""
        if self.clients is None:
            self.clients = self._tqdm(total=self.min_clients, desc="clients", unit="client")
        self.clients.n = min(connected, self.min_clients)
        self.clients.refresh()

    def round(self, means: dict) -> None:
        """Round ``means["round"]`` is evaluated: advance the bar and print its table line."""
        if self.clients is not None:
            self.clients.close()
            self.clients = None
        if self.bar is None:
            self.bar = self._tqdm(total=self.rounds, desc="rounds", unit="round")
        if self.on_row is not None:
            self.bar.write(self.on_row(means), file=sys.stdout)
            sys.stdout.flush()  # whoever watches the output sees each round as it ends
        self.bar.update(1)

    def close(self) -> None:
        for bar in (self.clients, self.bar):
            if bar is not None:
                bar.close()
        self.clients = self.bar = None
