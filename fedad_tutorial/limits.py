"""How much memory a command may ask for: sizes from user input are checked before anything is allocated.

A header, a flag or a file can claim any size (an ``.npz`` of 300 bytes whose header says
10^12 rows, ``--samples-per-node 1000000000``). Allocating first would end in a ``MemoryError``
traceback or the machine swapping; :func:`check_fits` refuses such a size in one line instead.
"""

from __future__ import annotations

import os

from fedad_tutorial.errors import UserError

#: Share of the machine's physical memory one array may take.
MEMORY_SHARE = 0.5


def memory_budget() -> int:
    """Bytes one array may take: :data:`MEMORY_SHARE` of the physical memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not reported here: assume a small machine
        total = 4 << 30
    return int(MEMORY_SHARE * total)


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def check_fits(nbytes: float, what: str) -> None:
    """Raise :class:`UserError` if ``nbytes`` (for ``what``, named in the message) exceed :func:`memory_budget`."""
    budget = memory_budget()
    if nbytes > budget:
        raise UserError(f"{what} would need {_size(nbytes)} of memory, more than this machine can give "
                        f"({_size(budget)}, half its memory); use less")
