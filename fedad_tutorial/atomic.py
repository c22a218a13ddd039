"""Write-then-rename, so a failed or interrupted command never leaves a half-written output.

Temporary files and folders are named ``.NAME.XXXXXXXX.tmp`` beside the output ``NAME``; a folder
being replaced is first moved to ``.NAME.XXXXXXXX.old/NAME``. A killed command cannot clean up
after itself, so the next write to the same path settles what such a command left there
(:func:`remove_stale`), and only names of exactly that pattern: a ``.tmp`` is removed; an ``.old``
copy is put back if the output is missing (the command died between its two renames), and removed
only if the output is there. Parent folders a failed write created are removed again.

The two renames that replace a folder run with SIGINT and SIGTERM held back (:func:`_signals_deferred`)
and undo the first if the second fails for any reason, so neither Ctrl+C, ``kill`` nor an exception
between them can leave the output missing.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fedad_tutorial.errors import UserError

#: The signals held back while a folder is swapped (the ones ``fedad`` turns into a clean stop).
DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _stale_pattern(name: str) -> re.Pattern:
    # tempfile's random part: 8 characters of [a-z0-9_]
    return re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}\.(tmp|old)")


def remove_stale(path: str | Path) -> list[Path]:
    """Settle what earlier, killed writes to ``path`` left beside it; return the entries removed.

    A ``.tmp`` is removed. An ``.old`` folder holds the previous output, moved aside: it is renamed
    back to ``path`` if ``path`` is missing (the write died between its renames), else removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = _stale_pattern(path.name)
    removed = []
    for entry in sorted(path.parent.iterdir()):
        found = pattern.fullmatch(entry.name)
        if not found:
            continue
        saved = entry / path.name
        if found.group(1) == "old" and entry.is_dir() and not entry.is_symlink() \
                and (saved.exists() or saved.is_symlink()) and not (path.exists() or path.is_symlink()):
            os.replace(saved, path)  # restored, not lost
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _make_parents(path: Path) -> list[Path]:
    """Create ``path``'s missing parent folders; return them, deepest first."""
    missing = [p for p in path.parents if not p.exists()]
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise NotADirectoryError(errno.ENOTDIR, f"is a file, so {path} cannot be written inside it", str(blocking))
    path.parent.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            return


def _naming(exc: OSError, path: Path, tmp: Path) -> OSError:
    """``exc`` naming the output the user asked for instead of our temporary name (or no name at all,
    as a failed ``write`` gives): ``out/model.pt: No space left on device``."""
    if exc.errno is None:
        return exc
    name = Path(exc.filename) if exc.filename else tmp
    try:
        shown = path / name.relative_to(tmp) if name != tmp else path
    except ValueError:  # a file outside the temporary one: its own name says it
        shown = name
    return OSError(exc.errno, exc.strerror, str(shown))


def _refuse_special(path: Path, want_dir: bool) -> None:
    """Refuse to replace anything at ``path`` but a regular file (or, with ``want_dir``, a real folder).

    A rename replaces whatever is there: a device, a FIFO, a socket or a symbolic link would be
    swapped for a regular file (as root, ``/dev/null`` itself). Checked again here, right before
    writing, for callers that did not check with :mod:`fedad_tutorial.outputs`.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise UserError(f"{path}: is a symbolic link; give a real path as the output")
    if want_dir and not stat.S_ISDIR(mode):
        raise UserError(f"{path}: exists and is not a folder; choose another output folder")
    if not want_dir and not stat.S_ISREG(mode):
        raise UserError(f"{path}: is {describe_mode(mode)}, not a regular file; give a file path as the output")


def describe_mode(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words: ``a FIFO (named pipe)``, ``a character device``..."""
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((word for test, word in kinds if test(mode)), "a regular file" if stat.S_ISREG(mode) else
                "a special file")


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the duration of the block, then deliver what arrived.

    Python runs signal handlers in the main thread between bytecodes, so a handler that raises
    (``fedad``'s turns SIGTERM into ``KeyboardInterrupt``) could strike between two renames. Here a
    handler that only takes note is installed instead; the previous handlers are put back and the
    signals noted are raised again once the block is done. Outside the main thread handlers cannot
    run anyway (and cannot be changed), so the block just runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: arrived.append(signum)) for sig in DEFERRED_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(arrived):
            signal.raise_signal(sig)


def _swap(path: Path, tmp: Path) -> None:
    """Put the folder ``tmp`` at ``path``; a folder already there is moved aside first and removed
    after. If the second rename fails (whatever the exception), the first is undone."""
    if not (path.exists() or path.is_symlink()):
        os.replace(tmp, path)
        return
    old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
    with _signals_deferred():
        try:
            os.replace(path, old / path.name)
        except BaseException:
            old.rmdir()
            raise
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old / path.name, path)
            old.rmdir()
            raise
        shutil.rmtree(old, ignore_errors=True)  # killed here, the next write removes it: the output is in place


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; rename it onto ``path`` only if the block succeeds.

    ``path`` may exist only as a regular file (it is replaced in one rename, so it is never lost).
    """
    path = Path(path)
    _refuse_special(path, want_dir=False)
    created = _make_parents(path)
    remove_stale(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    ok = False
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        yield Path(tmp)
        _refuse_special(path, want_dir=False)  # something may have appeared there meanwhile
        os.replace(tmp, path)
        ok = True
    except OSError as exc:
        raise _naming(exc, path, Path(tmp)) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if not ok:
            _remove_empty(created)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` only if the block succeeds.

    Callers decide whether ``path`` may be replaced (see :mod:`fedad_tutorial.outputs`). The
    replacement never loses the folder that was there: see the module doc.
    """
    path = Path(path)
    _refuse_special(path, want_dir=True)
    created = _make_parents(path)
    remove_stale(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    ok = False
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        _refuse_special(path, want_dir=True)
        _swap(path, tmp)
        ok = True
    except OSError as exc:
        raise _naming(exc, path, tmp) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not ok:
            _remove_empty(created)
