"""Regenerate the README's figures, on purpose: run every solution notebook, saving its course figures.

Running the course (JupyterLab, ``pytest``) never writes into the repository: a notebook saves a
figure only through :func:`fedad_tutorial.plots.course_figure`, which writes only when
``FEDAD_FIGURES_DIR`` is set. This command sets it to ``figures/`` and executes the solution
notebooks (the notebooks themselves are not rewritten).

Usage: ``python -m fedad_tutorial.exercises.figures [NAME ...]`` (e.g. ``04_federated_averaging``;
default: every notebook).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from fedad_tutorial.exercises.learner import NOTEBOOKS
from fedad_tutorial.plots import FIGURES_ENV, figures_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="only these notebooks (e.g. 02_autoencoder); default: all")
    parser.add_argument("--output-dir", type=Path, default=figures_dir(), help="where the figures go")
    args = parser.parse_args(argv)
    import nbformat
    from nbclient import NotebookClient

    os.environ[FIGURES_ENV] = str(args.output_dir.resolve())  # the kernels inherit it
    for path in sorted((NOTEBOOKS / "solutions").glob("*.ipynb")):
        if args.names and path.stem not in args.names:
            continue
        started = time.time()
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(path.parent)}}).execute()
        written = sorted(p.name for p in args.output_dir.glob("*.png") if p.stat().st_mtime >= started)
        print(f"{path.name}: wrote {', '.join(written) or 'no figure'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
