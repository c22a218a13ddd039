"""Errors that describe a user's mistake rather than a bug.

The command line turns :class:`UserError` into one line on stderr and exit code 2, without a
traceback; library users can catch it like any ``ValueError``.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: a missing file, a malformed CSV, an invalid setting."""
