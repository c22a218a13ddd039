"""The files of a deployment (keys, certificates, lists): read only when they are what they claim,
written only where nothing is, and named in one line whatever their names hold.

A FIFO given as a key would block a command forever, a device would be read without end, and a
symlink left dangling where a key is written would send the key somewhere else. So inputs must be
regular files (checked on the open descriptor, opened without blocking) of a bounded size, and
outputs are written to a temporary file beside their place and published with a hard link, which
fails rather than replace anything that appeared meanwhile; :class:`NewFiles` undoes a write that
does not finish, whatever stops it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import unicodedata
from collections.abc import Callable
from pathlib import Path

from fedad_tutorial.atomic import describe_mode
from fedad_tutorial.errors import UserError

#: The largest key, certificate or key list read (a real one is a few kilobytes).
MAX_INPUT_BYTES = 1 << 20


def shown(path: str | os.PathLike) -> str:
    """``path`` for a one-line message: as typed, unless it holds a control character or bytes that
    are not UTF-8 (then quoted, with escapes), so a message never spans lines."""
    text = os.fspath(path)
    return repr(text) if control_character(text) else text


def control_character(text: str) -> bool:
    """Whether ``text`` holds a control or unassigned character, or bytes that were not UTF-8 (which
    Python keeps as surrogate escapes)."""
    return any(unicodedata.category(c)[0] == "C" for c in text)


def read_bounded(path: str | os.PathLike, limit: int, fail: Callable[[str], UserError], *,
                 follow: bool = True) -> bytes:
    """The bytes of the regular file ``path``, of at most ``limit`` bytes. Anything else raises
    ``fail(why)`` at once (``why``: the special file's kind, the OS error or the size, in words), before a
    FIFO or a device is ever opened, so a hostile path can neither block nor flood the caller.
    ``follow=False`` refuses a symbolic link too; a missing file raises :class:`FileNotFoundError` then,
    for a caller to whom "nothing there" means something of its own."""
    try:
        mode = (os.stat if follow else os.lstat)(path).st_mode
    except FileNotFoundError:
        if not follow:
            raise
        raise fail("cannot be read (no such file or directory)") from None
    except OSError as exc:
        raise fail(f"cannot be read ({(exc.strerror or str(exc)).lower()})") from None
    if stat.S_ISLNK(mode):
        raise fail("is a symbolic link, not a regular file")
    if not stat.S_ISREG(mode):
        raise fail(f"is {describe_mode(mode)}, not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
                     | (0 if follow else os.O_NOFOLLOW))
    except OSError as exc:
        raise fail(f"cannot be read ({(exc.strerror or str(exc)).lower()})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # replaced since the check above
            raise fail(f"is {describe_mode(info.st_mode)}, not a regular file")
        if info.st_size > limit:
            raise fail(f"is too large ({info.st_size} bytes; at most {limit})")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(limit + 1)
    finally:
        os.close(fd)


def read_regular(path: str | os.PathLike, what: str) -> bytes:
    """The bytes of ``path`` (``what`` names it in messages): a regular file (a symlink to one is fine)
    of at most :data:`MAX_INPUT_BYTES`; anything else is a one-line :class:`UserError`, at once."""
    return read_bounded(path, MAX_INPUT_BYTES, lambda why: UserError(f"{shown(path)}: {why}; {what} is expected"))


def refuse_existing(path: Path, hint: str) -> None:
    """A one-line :class:`UserError` if anything is at ``path``: a file, a folder, a special file, or a
    symlink (even a dangling one, which a write would follow)."""
    if os.path.islink(path):
        raise UserError(f"{shown(path)}: a symlink is there; nothing is written through one ({hint})")
    if os.path.lexists(path):
        raise UserError(f"{shown(path)}: already exists ({hint})")


def write_new(path: Path, data: bytes, mode: int) -> Path:
    """``data`` in a new file ``path`` (``mode``; created exclusively, never through a symlink); a
    failure of the machine is a one-line :class:`UserError` naming the folder, and leaves nothing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    except OSError as exc:
        raise UserError(f"{shown(path.parent)}: cannot write there ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as exc:
        path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UserError(f"{shown(path.parent)}: cannot write there ({exc.strerror or exc})") from None
        raise
    return path


def _temporary_name(folder: Path, name: str) -> Path:
    return folder / f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"


def _digest(path: Path) -> str | None:
    """What ``path`` holds: the SHA-256 of a regular file's bytes, or of a folder's regular files with their
    names; ``None`` for anything else (a symlink, a special file), which is never taken for ours."""
    digest = hashlib.sha256()
    try:
        if stat.S_ISREG(os.lstat(path).st_mode):
            digest.update(path.read_bytes())
        elif path.is_dir() and not path.is_symlink():
            for child in sorted(path.iterdir()):
                if child.is_symlink() or not child.is_file():
                    return None
                digest.update(child.name.encode(errors="surrogateescape") + b"\0" + child.read_bytes())
        else:
            return None
    except OSError:
        return None
    return digest.hexdigest()


class NewFiles:
    """New files and folders written all or nothing: used as a context manager, everything it made is
    undone if the block ends with any exception, an interrupt (SIGTERM, Ctrl+C) included.

    Each step is recorded *before* it acts, so an interrupt that lands mid-step still finds it; a
    published name is removed only if it still holds exactly what this writer wrote (keys are random,
    so nobody else's file has the same bytes), never something that took the name meanwhile.
    """

    def __init__(self) -> None:
        self.folders: list[Path] = []  # created, outermost first
        self.temporary: list[Path] = []
        self.published: list[tuple[Path, str]] = []  # a final name and the digest of what it must hold to be ours

    def __enter__(self) -> NewFiles:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is not None:
            self.undo()

    def folder(self, folder: Path, mode: int = 0o700) -> None:
        """Create ``folder`` and its missing parents (``mode``; 700 where keys live)."""
        missing = []
        for parent in [folder, *folder.parents]:
            if os.path.lexists(parent):
                break
            missing.append(parent)
        for parent in reversed(missing):
            self.folders.append(parent)
            try:
                os.mkdir(parent, mode)
            except FileExistsError:  # somebody else's, made meanwhile: never ours to remove
                self.folders.remove(parent)
        if not folder.is_dir():
            raise UserError(f"{shown(folder)}: not a folder")

    def temporary_file(self, folder: Path, name: str, data: bytes, mode: int) -> Path:
        """``data`` in a new temporary file of ``folder``, to be published as ``name`` (:meth:`publish`)."""
        tmp = _temporary_name(folder, name)
        self.temporary.append(tmp)
        return write_new(tmp, data, mode)

    def temporary_folder(self, beside: Path) -> Path:
        """A new, empty temporary folder beside ``beside``, to be published as it (:meth:`publish`)."""
        tmp = _temporary_name(beside.parent, beside.name)
        self.temporary.append(tmp)
        tmp.mkdir(0o755)
        return tmp

    def publish(self, tmp: Path, path: Path, hint: str) -> None:
        """Give the finished ``tmp`` its name ``path``, never replacing anything there (even something that
        appeared since it was checked; a folder may replace only an empty folder)."""
        self.published.append((path, _digest(tmp)))
        if tmp.is_dir():
            try:
                os.rename(tmp, path)
            except OSError as exc:
                raise UserError(f"{shown(path)}: cannot be written ({exc.strerror or exc}; {hint})") from None
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            refuse_existing(path, hint)
            raise
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            refuse_existing(path, hint)  # a file system without hard links: check, then rename
            os.rename(tmp, path)
            return
        tmp.unlink()

    def undo(self) -> None:
        for path, digest in reversed(self.published):
            if os.path.lexists(path) and _digest(path) == digest:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        for tmp in self.temporary:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        for folder in reversed(self.folders):
            try:
                folder.rmdir()
            except OSError:
                return
