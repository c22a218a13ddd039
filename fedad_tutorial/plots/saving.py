"""Where the course's figures go: shown inline by notebooks, written to a file only on purpose.

:func:`course_figure` saves a figure under its README name only when ``FEDAD_FIGURES_DIR`` is set, which
only the explicit command ``python -m fedad_tutorial.exercises.figures`` does (it regenerates the README's
images); :func:`save_figure` writes atomically (the command line's ``figures/f1_per_round.png``).
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

from fedad_tutorial.atomic import atomic_path


def figures_dir() -> Path:
    """The repository's ``figures/`` folder when run from a checkout, else ``./figures``."""
    repo = Path(__file__).resolve().parents[2]
    return repo / "figures" if (repo / "pyproject.toml").exists() else Path("figures")


#: Set (to a folder) only by ``python -m fedad_tutorial.exercises.figures``: where course figures go.
FIGURES_ENV = "FEDAD_FIGURES_DIR"


def course_figure(fig: Figure, name: str) -> Figure:
    """Return ``fig`` for inline display; also save it as ``$FEDAD_FIGURES_DIR/name`` if that is set.

    A notebook cell ends with ``course_figure(fig, "02_error_histogram.png")``: running the course
    leaves the repository untouched, and the README's images are regenerated only on purpose.
    """
    folder = os.environ.get(FIGURES_ENV, "").strip()
    if folder:
        save_figure(fig, Path(folder) / name)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` to ``path`` (PNG) atomically; create the folder if needed."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return path
