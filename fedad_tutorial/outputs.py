"""Where a command may write: outputs never destroy what the user did not ask to replace.

A run folder is written whole and replaces the folder at its path (:func:`~fedad_tutorial.atomic.
atomic_dir`), so a careless ``--output-dir`` could delete anything: the data folder, the current
directory, a folder of the user's own files. :func:`check_run_dir` lets a command replace only
a previous run, recognised by the marker file :data:`MARKER` that every run folder holds (or, for
runs written before the marker existed, a ``summary.json`` naming the package) *and* by holding
nothing but the files a run writes. Everything else is refused with a :class:`UserError` that
says why, before any training starts. A folder of node CSVs (``fedad generate-data``, ``fedad split``)
is replaced only if it holds :data:`DATA_MARKER`, and a single output file (``fedad score``) only if
it is a regular file that fedad wrote (:func:`check_output_file`) or the user says ``--overwrite``.

Two commands never write the same output at once: each holds :func:`output_lock` on it for its
whole run.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fedad_tutorial.atomic import _make_parents, _remove_empty, describe_mode, remove_stale
from fedad_tutorial.errors import UserError

#: The file that marks a folder as a fedad run folder (it holds the package version).
MARKER = ".fedad-run"
#: An unfinished ``fedad server`` run's last completed round (:mod:`fedad_tutorial.flower.checkpoint`).
CHECKPOINT = "checkpoint.pt"
#: What a run folder holds at its top level; ``flower`` keeps a Flower server's logs.
RUN_ENTRIES = frozenset({MARKER, "model.pt", "history.csv", "summary.json", "figures", "flower", "tensorboard",
                         CHECKPOINT})
#: What a run's ``figures`` folder holds.
RUN_FIGURES = frozenset({"f1_per_round.png"})
#: What a run's ``tensorboard`` folder holds: TensorBoard event files.
RUN_EVENTS = "events.out.tfevents.*"
#: What a run's ``flower`` folder (``fedad server``'s Flower state) holds: Flower's own home and App
#: folders, whose insides Flower manages, and log files.
RUN_FLOWER_DIRS = frozenset({"home", "app"})
RUN_FLOWER_FILES = "*.log"
#: The file that marks a folder of node CSVs written by ``fedad generate-data`` or ``fedad split``.
DATA_MARKER = ".fedad-data"
#: The first cells of every CSV ``fedad score`` writes: how it recognises its own earlier output.
SCORES_HEADER = "score,is_anomaly"
#: The name ``fedad score --report`` writes into its HTML and PNG files, to recognise them later.
REPORT_GENERATOR = "fedad-tutorial score --report"


def _file_parent(path: Path) -> Path | None:
    """The nearest parent of ``path`` that exists and is not a folder (nothing can be written below it), if any."""
    return next((p for p in path.parents if p.exists() and not p.is_dir()), None)


def _relation(a: Path, b: Path) -> str | None:
    """How path ``a`` overlaps path ``b`` (both resolved), or None if they are apart."""
    if a == b:
        return "is"
    if b in a.parents:
        return "is inside"
    if a in b.parents:
        return "contains"
    return None


def _refuse_unsafe_place(path: Path, inputs: Iterable[str | Path], what: str) -> Path:
    """The resolved ``path``; refuse a symlink, the current folder or its ancestors, and the inputs."""
    if path.is_symlink():
        raise UserError(f"{path}: is a symbolic link; give a real path as the {what}")
    blocking = _file_parent(path)
    if blocking is not None:
        raise UserError(f"{blocking}: is a file, so the {what} {path} cannot be created inside it")
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise UserError(f"{path}: is the current folder or one of its parents; give a new folder as the {what}")
    for source in inputs:
        relation = _relation(resolved, Path(source).resolve())
        if relation:
            raise UserError(f"{path}: {relation} the input {source}, which writing the {what} would replace; "
                            "choose a path outside it")
    return resolved


def _entries(folder: Path) -> dict[str, int]:
    """The names in ``folder`` with their ``lstat`` modes (a symbolic link is seen as one, not followed)."""
    return {p.name: os.lstat(p).st_mode for p in folder.iterdir()}


def _holds_only(folder: Path, files: Iterable[str] = (), dirs: Iterable[str] = (), pattern: str | None = None) -> bool:
    """True if ``folder`` is a real folder holding only regular files named in ``files`` (or matching
    ``pattern``) and real folders named in ``dirs``; no symbolic links, FIFOs or anything else."""
    if not stat.S_ISDIR(os.lstat(folder).st_mode):
        return False
    files, dirs = set(files), set(dirs)
    for name, mode in _entries(folder).items():
        if stat.S_ISDIR(mode) and name in dirs:
            continue
        if stat.S_ISREG(mode) and (name in files or (pattern is not None and Path(name).match(pattern))):
            continue
        return False
    return True


def is_run_dir(path: str | Path) -> bool:
    """True if ``path`` is a folder written by fedad as a run folder and holds nothing else.

    Every sub-folder is looked into: ``figures`` may hold only the run's figure, ``tensorboard``
    only event files, ``flower`` only Flower's ``home`` and ``app`` folders and log files.
    """
    path = Path(path)
    try:
        if not _holds_only(path, RUN_ENTRIES - {"figures", "flower", "tensorboard"},
                           {"figures", "flower", "tensorboard"}):
            return False
        figures, events, flower = path / "figures", path / "tensorboard", path / "flower"
        if figures.exists() and not _holds_only(figures, RUN_FIGURES):
            return False
        if events.exists() and not _holds_only(events, pattern=RUN_EVENTS):
            return False
        if flower.exists() and not _holds_only(flower, dirs=RUN_FLOWER_DIRS, pattern=RUN_FLOWER_FILES):
            return False
        if (path / MARKER).is_file():
            return True
        summary = json.loads((path / "summary.json").read_text())
        return isinstance(summary, dict) and "fedad_tutorial_version" in summary
    except (OSError, ValueError):
        return False


def check_run_dir(path: str | Path, inputs: Iterable[str | Path] = (), unfinished: bool = False) -> Path:
    """Check that a run folder may be written at ``path``; return ``path``.

    Allowed: a path that does not exist yet, an empty folder, or a previous run folder
    (:func:`is_run_dir`), which the new run replaces. Refused: a file, a symbolic link, the current
    folder or one of its parents, a path that overlaps one of ``inputs`` (the data), a folder
    holding anything else, and, unless ``unfinished`` (``fedad server``, which resumes it or says how),
    an unfinished server run: its :data:`CHECKPOINT` is the only way to continue it.
    """
    path = Path(path)
    _refuse_unsafe_place(path, inputs, "output folder")
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a folder; choose another output folder")
    if not unfinished and os.path.lexists(path / CHECKPOINT):
        raise UserError(f"{path}: holds an unfinished fedad server run ({CHECKPOINT}); continue it with "
                        f"`fedad server --resume {path} ...`, or choose another output folder")
    if path.is_dir() and any(path.iterdir()) and not is_run_dir(path):
        raise UserError(f"{path}: is not empty and is not a fedad run folder (it holds files fedad did not "
                        "write); choose another output folder or empty it yourself")
    return path


def check_data_dir_output(path: str | Path, pattern: str = "node_*.csv") -> Path:
    """Check that ``fedad generate-data`` or ``fedad split`` may write its node CSVs to ``path``; return ``path``.

    The folder is replaced as a whole, so it may exist only if it is empty, or holds nothing but
    ``pattern`` files and the :data:`DATA_MARKER` that says fedad wrote them. A folder of the user's
    own node CSVs (the very names ``fedad simulate`` asks for) has no marker and is never replaced.
    """
    path = Path(path)
    _refuse_unsafe_place(path, (), "output folder")
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a folder; choose another output folder")
    if path.is_dir():
        entries = _entries(path)
        others = sorted(name for name, mode in entries.items()
                        if not ((Path(name).match(pattern) or name == DATA_MARKER) and stat.S_ISREG(mode)))
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise UserError(f"{path}: holds files other than {pattern} ({shown}); choose another output folder")
        if entries and DATA_MARKER not in entries:
            raise UserError(f"{path}: holds node CSVs that fedad did not write (no {DATA_MARKER} marker), which "
                            "writing there would delete; choose another output folder or move them yourself")
    return path


def _written_by_fedad(path: Path, kind: str) -> bool:
    """True if the regular file ``path`` is an earlier output of ``kind`` (``scores`` or ``report``)."""
    with path.open("rb") as handle:
        head = handle.read(4096)
    if kind == "scores":
        return head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace").split(",")[:2] == \
            SCORES_HEADER.split(",")
    return REPORT_GENERATOR.encode() in head


def check_output_file(path: str | Path, inputs: Iterable[str | Path] = (), kind: str | None = None,
                      overwrite: bool = True) -> Path:
    """Check that a single output file may be written at ``path`` (replacing an older file there).

    Refused: a folder, a symbolic link, a device, FIFO or socket (a rename would replace it with a
    regular file), and any of ``inputs`` (the data or model being read). With ``overwrite=False``
    an existing file is replaced only if it is fedad's own earlier output of ``kind`` (see
    :data:`SCORES_HEADER`, :data:`REPORT_GENERATOR`).
    """
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    except OSError as exc:  # a name too long, a parent that is a file: the write would fail the same way
        if exc.errno == errno.ENOTDIR:
            blocking = _file_parent(path) or path.parent
            raise UserError(f"{blocking}: is a file, so {path} cannot be written inside it") from None
        raise
    if stat.S_ISLNK(mode):
        raise UserError(f"{path}: is a symbolic link; give a real file path as the output")
    if stat.S_ISDIR(mode):
        raise UserError(f"{path}: is a folder; give a file path as the output")
    if not stat.S_ISREG(mode):
        raise UserError(f"{path}: is {describe_mode(mode)}, not a regular file; give a file path as the output")
    for source in inputs:
        source = Path(source)
        if source.exists() and os.path.samefile(path, source):
            raise UserError(f"{path}: is the input {source}; writing there would replace it")
    if not overwrite and kind is not None and not _written_by_fedad(path, kind):
        raise UserError(f"{path}: exists and was not written by fedad score; choose another path, or add "
                        "--overwrite to replace it")
    return path


@contextmanager
def output_lock(path: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on the output ``path`` for the block, so that two fedad commands never
    write the same file or folder at once; yield the lock file.

    The lock is ``fcntl.flock`` on ``.NAME.lock`` beside ``path`` (created, with any missing parent
    folder, and removed again at the end). The kernel drops it when a process dies, so a killed
    command never blocks the next one; what a killed command left beside ``path`` is settled first
    (:func:`~fedad_tutorial.atomic.remove_stale`: a folder it had moved aside is put back). Raises
    :class:`UserError` at once if another command holds the lock.
    """
    shown, path = path, Path(os.path.abspath(path))
    lock = path.parent / f".{path.name}.lock"
    blocking = _file_parent(Path(shown))
    if blocking is not None:
        raise UserError(f"{blocking}: is a file, so {shown} cannot be written inside it")
    created = _make_parents(lock)
    try:
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise UserError(f"{lock}: is not a regular file; remove it (fedad keeps its lock there)")
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                current = os.stat(lock, follow_symlinks=False)
            except BlockingIOError:
                os.close(fd)
                raise UserError(f"{path}: another fedad command is writing it now (it holds {lock}); wait for "
                                "it to finish or choose another output") from None
            except FileNotFoundError:  # the holder removed the file as we locked it: take a fresh one
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            if current.st_ino == os.fstat(fd).st_ino:
                break
            os.close(fd)
        try:
            remove_stale(path)  # a killed command's leftovers: an interrupted replacement is put back first
            yield lock
        finally:
            lock.unlink(missing_ok=True)  # before unlocking: a waiting process then sees a fresh file
            os.close(fd)
    finally:
        _remove_empty(created)


def write_marker(folder: str | Path, version: str, marker: str = MARKER) -> None:
    """Write ``marker`` (:data:`MARKER` for a run folder, :data:`DATA_MARKER` for node CSVs) into a folder
    being built."""
    (Path(folder) / marker).write_text(f"fedad-tutorial {version}\n")
