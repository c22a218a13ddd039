"""Where a command may write: outputs never destroy what the user did not ask to replace.

A run folder is written whole and replaces the folder at its path (:func:`~fedad_tutorial.atomic.
atomic_dir`), so a careless ``--output-dir`` could delete anything: the data folder, the current
directory, a folder of the user's own files. :func:`check_run_dir` lets a command replace only
a previous run, recognised by the marker file :data:`MARKER` that every run folder holds (or, for
runs written before the marker existed, a ``summary.json`` naming the package) *and* by holding
nothing but the files a run writes. Everything else is refused with a :class:`UserError` that
says why, before any training starts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from fedad_tutorial.errors import UserError

#: The file that marks a folder as a fedad run folder (it holds the package version).
MARKER = ".fedad-run"
#: What a run folder holds at its top level; ``flower`` keeps a Flower server's logs.
RUN_ENTRIES = frozenset({MARKER, "model.pt", "history.csv", "summary.json", "figures", "flower", "tensorboard"})
#: What a run's ``figures`` folder holds.
RUN_FIGURES = frozenset({"f1_per_round.png"})
#: What a run's ``tensorboard`` folder holds: TensorBoard event files.
RUN_EVENTS = "events.out.tfevents.*"


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
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
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


def is_run_dir(path: str | Path) -> bool:
    """True if ``path`` is a folder written by fedad as a run folder and holds nothing else."""
    path = Path(path)
    try:
        entries = {p.name for p in path.iterdir()}
        figures, events = path / "figures", path / "tensorboard"
        if not entries <= RUN_ENTRIES or (figures.exists() and not (
                figures.is_dir() and {p.name for p in figures.iterdir()} <= RUN_FIGURES)):
            return False
        if events.exists() and not (events.is_dir() and all(
                p.is_file() and p.match(RUN_EVENTS) for p in events.iterdir())):
            return False
        if (path / MARKER).is_file():
            return True
        summary = json.loads((path / "summary.json").read_text())
        return isinstance(summary, dict) and "fedad_tutorial_version" in summary
    except (OSError, ValueError):
        return False


def check_run_dir(path: str | Path, inputs: Iterable[str | Path] = ()) -> Path:
    """Check that a run folder may be written at ``path``; return ``path``.

    Allowed: a path that does not exist yet, an empty folder, or a previous run folder
    (:func:`is_run_dir`), which the new run replaces. Refused: a file, a symbolic link, the current
    folder or one of its parents, a path that overlaps one of ``inputs`` (the data), and a folder
    holding anything else.
    """
    path = Path(path)
    _refuse_unsafe_place(path, inputs, "output folder")
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a folder; choose another output folder")
    if path.is_dir() and any(path.iterdir()) and not is_run_dir(path):
        raise UserError(f"{path}: is not empty and is not a fedad run folder (it holds files fedad did not "
                        "write); choose another output folder or empty it yourself")
    return path


def check_data_dir_output(path: str | Path, pattern: str = "node_*.csv") -> Path:
    """Check that ``fedad generate-data`` may write its node CSVs to ``path``; return ``path``.

    The folder is replaced as a whole, so it may exist only if it holds nothing but ``pattern`` files.
    """
    path = Path(path)
    _refuse_unsafe_place(path, (), "output folder")
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a folder; choose another output folder")
    if path.is_dir():
        others = sorted(p.name for p in path.iterdir() if not (p.match(pattern) and p.is_file()
                                                                and not p.is_symlink()))
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise UserError(f"{path}: holds files other than {pattern} ({shown}); choose another output folder")
    return path


def check_output_file(path: str | Path, inputs: Iterable[str | Path] = ()) -> Path:
    """Check that a single output file may be written at ``path`` (replacing an older file there).

    Refused: a folder, a symbolic link, and any of ``inputs`` (the data or model being read).
    """
    path = Path(path)
    if path.is_symlink():
        raise UserError(f"{path}: is a symbolic link; give a real file path as the output")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a file path as the output")
    for source in inputs:
        source = Path(source)
        if path.exists() and source.exists() and os.path.samefile(path, source):
            raise UserError(f"{path}: is the input {source}; writing there would replace it")
    return path


def write_marker(folder: str | Path, version: str) -> None:
    """Write :data:`MARKER` into a run folder being built."""
    (Path(folder) / MARKER).write_text(f"fedad-tutorial {version}\n")
