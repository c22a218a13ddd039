"""Progress bars for the command line: on stderr, and only for steps that last.

A bar that flashes for a fraction of a second is noise, and one on stdout would mix with a
command's results. :func:`progress_bar` therefore writes to stderr and appears only once a step
has taken :data:`DELAY` seconds (tqdm's ``delay``); ``quiet`` turns it off.
"""

from __future__ import annotations

import sys

#: Seconds a step runs before its bar appears.
DELAY = 2.0


def progress_bar(total: float | None, desc: str, unit: str = "it", quiet: bool = False, unit_scale: bool = False):
    """A tqdm bar on stderr that appears after :data:`DELAY` seconds (never with ``quiet``); use it as a
    context manager and call ``update(n)``."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, disable=quiet, delay=DELAY,
                file=sys.stderr, leave=False, dynamic_ncols=True)
