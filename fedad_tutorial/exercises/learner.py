"""Generate the learner notebooks from the solution notebooks (the single source).

In ``notebooks/solutions/NN_name.ipynb`` the code a learner must write sits between two marker
lines inside a function::

    def my_threshold(scores, q):
        ### BEGIN SOLUTION
        return np.percentile(scores, q)
        ### END SOLUTION

``notebooks/NN_name.ipynb`` gets the same cells with each marked block replaced by a placeholder
(``# YOUR CODE HERE`` and ``raise NotImplementedError``); outputs of changed cells are cleared.
Checks treat ``NotImplementedError`` as "not implemented yet", so learner notebooks run in CI.

Every notebook is written in the form JupyterLab keeps when it opens it (:func:`normalize`), so that opening
a notebook and starting its kernel does not mark it modified.

Usage: ``python -m fedad_tutorial.exercises.learner [--check] [--solutions] [--execute] [NAME ...]``;
``--check`` exits 1 if a committed learner notebook's cells differ from what the solutions generate, or if a
notebook is not in normalized form; ``--solutions`` rewrites the solution notebooks (normalized, executed first
with ``--execute``) instead of generating the learner notebooks.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
#: What JupyterLab writes into ``metadata.kernelspec`` when ipykernel's ``python3`` kernel starts. A notebook
#: carrying anything else (even only another ``display_name``) is modified by merely opening it.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
_BLOCK = re.compile(rf"^([ \t]*){re.escape(BEGIN)}[^\n]*\n.*?^[ \t]*{re.escape(END)}[^\n]*(\n|$)",
                    re.MULTILINE | re.DOTALL)


def strip_solutions(source: str) -> str:
    """Replace every marked solution block with a placeholder at the same indentation."""
    def placeholder(match: re.Match) -> str:
        indent = match.group(1)
        return f"{indent}# YOUR CODE HERE\n{indent}raise NotImplementedError{match.group(2)}"

    if source.count(BEGIN) != source.count(END):
        raise ValueError(f"unbalanced solution markers in cell:\n{source[:200]}")
    return _BLOCK.sub(placeholder, source)


def learner_notebook(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The learner's version of a solution notebook (cells with solutions stripped, outputs cleared)."""
    nb = nbformat.from_dict(solution)
    for cell in nb.cells:
        if cell.cell_type == "code" and BEGIN in cell.source:
            cell.source = strip_solutions(cell.source)
            cell.outputs, cell.execution_count = [], None
    return nb


def normalize(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` in the form JupyterLab keeps on opening it, without per-run noise.

    On kernel start JupyterLab replaces ``metadata.kernelspec`` and ``metadata.language_info`` with the running
    kernel's; the notebook is marked modified unless both are already equal. The kernel spec is fixed
    (:data:`KERNELSPEC`). ``language_info`` is kept as the kernel that executed the notebook reported it: it
    holds the Python version, so it matches only a kernel of that version, and a reduced one never matches.
    nbclient's per-cell ``metadata.execution`` timings are dropped: they change on every run, so every
    regeneration would otherwise change every code cell.
    """
    nb = nbformat.from_dict(nb)
    nb.metadata.kernelspec = nbformat.from_dict(KERNELSPEC)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    return nb


def serialized(nb: nbformat.NotebookNode) -> str:
    """The text of ``normalize(nb)`` exactly as the Jupyter server saves it (``nbformat.write``)."""
    text = nbformat.writes(normalize(nb))
    return text if text.endswith("\n") else text + "\n"


def write(nb: nbformat.NotebookNode, path: Path) -> None:
    """Write ``nb`` normalized; all at once (a temporary file renamed), so an error leaves the old file whole."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(serialized(nb), encoding="utf-8")
    partial.replace(path)


def not_normalized(paths: Iterable[Path]) -> list[str]:
    """One line per notebook whose file is not what :func:`write` would write for it, saying why."""
    from ipykernel.ipkernel import IPythonKernel

    kernel_keys = set(IPythonKernel.language_info)
    problems = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        nb = nbformat.reads(text, as_version=4)
        name = path.relative_to(NOTEBOOKS) if path.is_relative_to(NOTEBOOKS) else path
        missing = kernel_keys - set(nb.metadata.get("language_info", {}))
        if missing:
            problems.append(f"{name}: language_info lacks {sorted(missing)}; execute it (--execute)")
        elif text == serialized(nb):
            continue
        elif any("execution" in cell.metadata for cell in nb.cells):
            problems.append(f"{name}: per-cell execution timings in the cell metadata")
        elif nb.metadata.get("kernelspec") != KERNELSPEC:
            problems.append(f"{name}: kernelspec {dict(nb.metadata.get('kernelspec', {}))}, not {KERNELSPEC}")
        else:
            problems.append(f"{name}: not formatted as nbformat writes it")
    return problems


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def pairs(root: Path = NOTEBOOKS) -> list[tuple[Path, Path]]:
    """(solution, learner) paths for every solution notebook."""
    return [(sol, root / sol.name) for sol in sorted((root / "solutions").glob("*.ipynb"))]


def out_of_sync(root: Path = NOTEBOOKS) -> list[str]:
    """Learner notebooks that are missing or whose cells differ from the generated ones."""
    problems = []
    for sol, learner in pairs(root):
        expected = learner_notebook(nbformat.read(sol, as_version=4))
        if not learner.exists():
            problems.append(f"{learner.name}: missing")
        elif _cells(nbformat.read(learner, as_version=4)) != _cells(expected):
            problems.append(f"{learner.name}: differs from {sol.relative_to(root)}")
    return problems


def _execute(nb: nbformat.NotebookNode, folder: Path) -> None:
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=300, record_timing=False, resources={"metadata": {"path": str(folder)}}).execute()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only report learner notebooks out of sync and notebooks not normalized")
    parser.add_argument("--solutions", action="store_true",
                        help="rewrite the solution notebooks normalized instead of generating learner notebooks")
    parser.add_argument("--execute", action="store_true", help="execute each notebook before writing it")
    parser.add_argument("names", nargs="*", help="only these notebooks (e.g. 02_autoencoder); default: all")
    args = parser.parse_args(argv)
    if args.check:
        problems = out_of_sync() + not_normalized(path for both in pairs() for path in both if path.exists())
        print("\n".join(problems) or "learner notebooks are in sync and all notebooks normalized")
        return 1 if problems else 0
    for sol, learner in pairs():
        if args.names and sol.stem not in args.names:
            continue
        target = sol if args.solutions else learner
        nb = nbformat.read(sol, as_version=4)
        if not args.solutions:
            nb = learner_notebook(nb)
        if args.execute:
            _execute(nb, target.parent)
        write(nb, target)
        print(f"wrote {target.relative_to(NOTEBOOKS.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
