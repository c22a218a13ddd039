"""The files of a deployment (keys, certificates, lists): read only when they are what they claim,
written only where nothing is, and named in one line whatever their names hold.

A FIFO given as a key would block a command forever, a device would be read without end, and a
symlink left dangling where a key is written would send the key somewhere else. So inputs must be
regular files (checked on the open descriptor, opened without blocking) of a bounded size, and
outputs are written to a temporary file beside their place and published with a hard link, which
fails rather than replace anything that appeared meanwhile.
"""

from __future__ import annotations

import errno
import os
import stat
import unicodedata
from pathlib import Path

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


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular(path: str | os.PathLike, what: str) -> bytes:
    """The bytes of ``path`` (``what`` names it in messages): a regular file (a symlink to one is fine)
    of at most :data:`MAX_INPUT_BYTES`; anything else is a one-line :class:`UserError`, at once."""
    try:
        mode = os.stat(path).st_mode  # a device or FIFO is not even opened
        if not stat.S_ISREG(mode):
            raise UserError(f"{shown(path)}: {_kind(mode)}, not {what} (a regular file is needed)")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise UserError(f"{shown(path)}: cannot read {what} ({(exc.strerror or str(exc)).lower()})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # replaced since the check above
            raise UserError(f"{shown(path)}: {_kind(info.st_mode)}, not {what} (a regular file is needed)")
        if info.st_size > MAX_INPUT_BYTES:
            raise UserError(f"{shown(path)}: {info.st_size} bytes, too large for {what} "
                            f"(at most {MAX_INPUT_BYTES} bytes)")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(MAX_INPUT_BYTES + 1)
    finally:
        os.close(fd)


def check_regular(path: str | os.PathLike, what: str) -> Path:
    """``path`` if it is a readable regular file (see :func:`read_regular`), for tools that open it themselves."""
    read_regular(path, what)
    return Path(path)


def refuse_existing(path: Path, hint: str) -> None:
    """A one-line :class:`UserError` if anything is at ``path``: a file, a folder, a special file, or a
    symlink (even a dangling one, which a write would follow)."""
    if os.path.islink(path):
        raise UserError(f"{shown(path)}: a symlink is there; nothing is written through one ({hint})")
    if os.path.lexists(path):
        raise UserError(f"{shown(path)}: already exists ({hint})")


def make_private_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents with mode 700 (keys live there); return those created."""
    missing = []
    for parent in [folder, *folder.parents]:
        if os.path.lexists(parent):
            break
        missing.append(parent)
    for parent in reversed(missing):
        os.mkdir(parent, 0o700)
    if not folder.is_dir():
        raise UserError(f"{shown(folder)}: not a folder")
    return missing


def remove_folders(folders: list[Path]) -> None:
    """Remove the folders :func:`make_private_folders` created, innermost first, if still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


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


def write_temporary(folder: Path, name: str, data: bytes, mode: int) -> Path:
    """``data`` in a new temporary file of ``folder`` (see :func:`write_new`), to be published as ``name``
    by :func:`publish`."""
    return write_new(folder / f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp", data, mode)


def publish(tmp: Path, path: Path, hint: str) -> None:
    """Give the finished file ``tmp`` its name ``path``, never replacing anything there (even something
    that appeared since it was checked); ``tmp`` is gone afterwards."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        refuse_existing(path, hint)
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            tmp.unlink(missing_ok=True)
            raise
        refuse_existing(path, hint)  # a file system without hard links: check, then rename
        os.rename(tmp, path)
        return
    tmp.unlink()
