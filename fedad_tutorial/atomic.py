"""Write-then-rename, so a failed or interrupted command never leaves a half-written output.

Temporary files and folders are named ``.NAME.XXXXXXXX.tmp`` (``.old`` for a folder being
replaced) beside the output ``NAME``. A killed command cannot clean up after itself, so the next
write to the same path removes what such a command left there (:func:`remove_stale`), and only
names of exactly that pattern. Parent folders a failed write created are removed again.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _stale_pattern(name: str) -> re.Pattern:
    # tempfile's random part: 8 characters of [a-z0-9_]
    return re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}\.(tmp|old)")


def remove_stale(path: str | Path) -> list[Path]:
    """Remove the temporary files and folders that earlier, killed writes to ``path`` left beside it."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = _stale_pattern(path.name)
    removed = []
    for entry in path.parent.iterdir():
        if pattern.fullmatch(entry.name):
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


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    created = _make_parents(path)
    remove_stale(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    ok = False
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        yield Path(tmp)
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

    Callers decide whether ``path`` may be replaced (see :mod:`fedad_tutorial.outputs`). If the
    final swap fails, the folder that was there is put back.
    """
    path = Path(path)
    created = _make_parents(path)
    remove_stale(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    ok = False
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
            try:
                os.replace(tmp, path)
            except OSError:
                os.replace(old / path.name, path)
                old.rmdir()
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        ok = True
    except OSError as exc:
        raise _naming(exc, path, tmp) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not ok:
            _remove_empty(created)
