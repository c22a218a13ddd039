"""How many CPU threads PyTorch uses: chosen on purpose, never left to the machine.

The course's models are small (tens of thousands of weights, batches of 64 rows): their matrix
products are too short for several threads to help, while threads that wait for a busy core make
every step slower. So the command line, the notebooks and the tests use **one** intra-op thread
unless told otherwise, by ``--threads N`` or the ``FEDAD_THREADS`` environment variable.
"""

from __future__ import annotations

import os

from fedad_tutorial.errors import UserError

ENV_VAR = "FEDAD_THREADS"
DEFAULT_THREADS = 1
MAX_THREADS = 1024


def requested_threads(threads: int | None = None) -> int:
    """``threads`` if given, else ``$FEDAD_THREADS``, else 1; validated (1 to 1024)."""
    if threads is None:
        text = os.environ.get(ENV_VAR, "").strip()
        if not text:
            return DEFAULT_THREADS
        try:
            threads = int(text)
        except ValueError:
            raise UserError(f"{ENV_VAR}={text!r}: expected a whole number of threads (1 to {MAX_THREADS})") from None
        source = ENV_VAR
    else:
        source = "threads"
    if not 1 <= threads <= MAX_THREADS:
        raise UserError(f"{source} must be between 1 and {MAX_THREADS}, got {threads}")
    return threads


def set_threads(threads: int | None = None) -> int:
    """Set PyTorch's intra-op thread count (see :func:`requested_threads`) and return it.

    Call it once at the start of a program or notebook, before training.

    >>> set_threads(1)
    1
    """
    n = requested_threads(threads)
    import torch  # here, so that choosing a count costs nothing until PyTorch is needed

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
