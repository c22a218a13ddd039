"""Progress for the command line: on stderr, only for steps that last, and a bar only on a terminal.

A bar that flashes for a fraction of a second is noise, and one on stdout would mix with a
command's results. :func:`progress_bar` therefore writes to stderr and appears only once a step
has taken :data:`DELAY` seconds (tqdm's ``delay``); ``quiet`` turns it off. A bar redraws itself
with carriage returns, which only a terminal understands: when stderr is a file or a pipe (a log,
CI), the same progress is a plain line now and then (:class:`ProgressLines`: every tenth of the
way, or every :data:`LINE_INTERVAL` seconds when something changed), with no ``\\r`` in it.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

#: Seconds a step runs before its bar (or its first progress line) appears.
DELAY = 2.0
#: Without a terminal: at most one line per this many seconds, unless another tenth of the way is done.
LINE_INTERVAL = 30.0


class ProgressLines:
    """The part of tqdm's interface the commands use (``update``, ``n`` + ``refresh``, ``write``,
    ``close``, a context manager), written as whole lines: ``rounds: 12/30 (40%), 5 s``."""

    def __init__(self, total: float | None, desc: str, unit: str, unit_scale: bool, file: TextIO) -> None:
        self.total, self.desc, self.unit, self.unit_scale, self.file = total, desc, unit, unit_scale, file
        self.n: float = 0
        self._start = time.monotonic()
        self._said: tuple[float, int] | None = None  # (time, tenth) of the last line

    def _amount(self, value: float) -> str:
        if self.unit_scale:
            from tqdm import tqdm

            return tqdm.format_sizeof(value)
        return f"{value:g}"

    def refresh(self) -> None:
        """Print a line if the step has lasted :data:`DELAY` s and another tenth is done (or, when
        something changed, :data:`LINE_INTERVAL` s have passed since the last line)."""
        now = time.monotonic()
        if now - self._start < DELAY:
            return
        tenth = int(10 * self.n / self.total) if self.total else 0
        if self._said is not None:
            last_time, last_tenth = self._said
            if tenth <= last_tenth and now - last_time < LINE_INTERVAL:
                return
        self._said = (now, tenth)
        unit = f" {self.unit}" if self.unit_scale else ""  # a scaled amount needs its unit: 1.2M B
        done = (f"{self._amount(self.n)}/{self._amount(self.total)}{unit} ({100 * self.n / self.total:.0f}%)"
                if self.total else f"{self._amount(self.n)}{unit}")
        print(f"{self.desc}: {done}, {now - self._start:.0f} s", file=self.file, flush=True)

    def update(self, n: float = 1) -> None:
        self.n += n
        self.refresh()

    @staticmethod
    def write(text: str, file: TextIO | None = None) -> None:
        print(text, file=file if file is not None else sys.stdout)

    def close(self) -> None:
        """Nothing to clear: the lines stay in the log."""

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(total: float | None, desc: str, unit: str = "it", quiet: bool = False, unit_scale: bool = False):
    """Progress on stderr for a step of ``total`` ``unit``: a tqdm bar on a terminal, that appears after
    :data:`DELAY` seconds; :class:`ProgressLines` otherwise; nothing with ``quiet``. Use it as a
    context manager or ``close()`` it; call ``update(n)``, and ``write(line, file=sys.stdout)`` to print
    a result line without tearing the bar."""
    from tqdm import tqdm

    if quiet or sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, disable=quiet, delay=DELAY,
                    file=sys.stderr, leave=False, dynamic_ncols=True)
    return ProgressLines(total, desc, unit, unit_scale, sys.stderr)
