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

Usage: ``python -m fedad_tutorial.exercises.learner [--check] [--execute] [NAME ...]``; ``--check`` exits 1 if
a committed learner notebook's cells differ from what the solutions generate.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report notebooks out of sync")
    parser.add_argument("--execute", action="store_true", help="execute each learner notebook after writing it")
    parser.add_argument("names", nargs="*", help="only these notebooks (e.g. 02_autoencoder); default: all")
    args = parser.parse_args(argv)
    if args.check:
        problems = out_of_sync()
        print("\n".join(problems) or "learner notebooks are in sync")
        return 1 if problems else 0
    for sol, learner in pairs():
        if args.names and sol.stem not in args.names:
            continue
        nb = learner_notebook(nbformat.read(sol, as_version=4))
        if args.execute:
            from nbclient import NotebookClient

            NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(learner.parent)}}).execute()
        nbformat.write(nb, learner)
        print(f"wrote {learner.relative_to(NOTEBOOKS.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
