"""Errors that describe a user's mistake rather than a bug.

The command line turns :class:`UserError` into one line on stderr and exit code 2, without a
traceback; library users can catch it like any ``ValueError``.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: a missing file, a malformed CSV, an invalid setting."""


class RowError(UserError):
    """A bad value in one row of an array of rows; ``row`` counts from 0.

    Callers that know where the rows came from (a file and its line numbers) use ``row``,
    ``column`` and ``reason`` to name the place in their own terms.
    """

    def __init__(self, row: int, column: str, reason: str) -> None:
        self.row, self.column, self.reason = row, column, reason
        super().__init__(f"row {row}, column '{column}': {reason}")


def describe_os_error(exc: OSError) -> str:
    """One line for a failure of the machine rather than the program: the path and the OS's reason.

    ``No space left on device``, ``Permission denied``, ``Is a directory``...; the command line
    prints it instead of a traceback.
    """
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{exc.filename}: {reason}" if exc.filename else reason
