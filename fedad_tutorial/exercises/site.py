"""Build the course as a static website: ``python -m fedad_tutorial.exercises.site`` (README).

The site is rendered from what is committed, never re-executed: the solution notebooks with their stored outputs,
README.md and docs/*.md. Sphinx does the rendering (configuration in ``website/conf.py``); this module prepares
its sources in ``OUTPUT/src`` (default ``build/site`` in the current folder, which git ignores in the checkout)
and runs Sphinx strictly, so that a broken cross-reference, a missing image, a docstring that fails to render or
a notebook without stored outputs fails the build:

- every solution notebook must have been executed (:func:`unexecuted_cells`); the chapter pages are copies with
  the notebooks' machinery left out of the code shown (:func:`clean_source`: nbval and solution markers,
  ``%matplotlib inline``, ruff's ``noqa``, warning filters) and each exercise solution folded behind a "Show
  the solution" toggle, found by comparing the solution notebook with the learner notebook
  :func:`~fedad_tutorial.exercises.learner.learner_notebook` makes of it (the same rule that strips them);
- links between README, docs and notebooks are rewritten to the pages (a learner notebook's link goes to its
  chapter page); the landing page's course map is the README's table, with each chapter's own estimated time
  (from its first cell);
- the API reference renders, from their docstrings, the modules that define the public functions and classes
  the chapters import (:func:`chapter_api`) and the modules their docstrings refer to (:func:`api_modules`),
  naming under each module what the chapters use.

The build uses Sphinx's ``-W --keep-going -n``: every warning, including an unresolved reference, is an error,
reported all at once. ``OUTPUT`` is created if needed and only ever replaced when it holds a previous site build.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import nbformat

from fedad_tutorial.exercises.learner import BEGIN, END, learner_notebook

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "website"
#: Relative to the current folder, as for sphinx-build: from the checkout, a folder git ignores.
DEFAULT_OUTPUT = Path("build", "site")
#: The file that marks a folder as a site build, so that a rebuild may replace it (and nothing else).
MARKER = ".fedad-site"
SOLUTION_PROMPT = {"code_prompt_show": "Show the solution", "code_prompt_hide": "Hide the solution"}
#: Lines of a code cell that run the notebook's tooling rather than teach: nbval's markers, the solution
#: markers (the solution is folded instead) and the inline-figures magic.
_MACHINERY = re.compile(rf"\s*(# NBVAL_\w+|{re.escape(BEGIN)}|{re.escape(END)}|%matplotlib inline)")
_WARNING_FILTER = re.compile(r"\s*warnings\.filterwarnings\(")
_NOQA = re.compile(r"\s*# noqa(?::\s*[A-Z]+\d+(?:,\s*[A-Z]+\d+)*)?(\s+)?")
_LINK = re.compile(r"(\]\()([^)\s]+)(\))")
_CHAPTER_LINK = re.compile(r"^((?:\.\./)*)notebooks/(?:solutions/)?(\d\d_\w+)\.ipynb(#.*)?$")


class SiteError(Exception):
    """A reason the site cannot be built, in one line."""


def unexecuted_cells(nb: nbformat.NotebookNode) -> list[int]:
    """Indices of the code cells that were never executed (so their outputs, if any, are not stored)."""
    return [i for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and cell.source.strip() and cell.execution_count is None]


def output_problems(paths: Iterable[Path]) -> list[str]:
    """One line per notebook that lacks stored outputs: the site shows stored outputs and never executes."""
    problems = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        missing = unexecuted_cells(nb)
        if missing or not any(cell.get("outputs") for cell in nb.cells):
            where = f"code cells {missing} were never executed" if missing else "no cell has an output"
            problems.append(f"{path.name}: {where}; store its outputs with "
                            f"python -m fedad_tutorial.exercises.learner --solutions --execute {path.stem}")
    return problems


def clean_source(source: str) -> str:
    """A code cell's source as a reader should see it: without the lines and comments that serve the tooling.

    Besides the markers, that is the warning filters a setup cell installs for the notebook's own run (tqdm
    without widgets, deprecation notices of libraries), and their ``import warnings`` when nothing else uses it.
    A blank line that a removed line leaves doubled goes too.
    """
    lines = source.split("\n")
    keeps_warnings = any("warnings." in line and not _WARNING_FILTER.match(line) for line in lines)
    out: list[str] = []
    removed = False
    for line in lines:
        if _MACHINERY.match(line) or _WARNING_FILTER.match(line) or (line == "import warnings" and not keeps_warnings):
            removed = True
            continue
        if removed and not line.strip() and (not out or not out[-1].strip()):
            continue
        removed = False
        out.append(_NOQA.sub(lambda m: "  # " if m.group(1) else "", line, count=1).rstrip() if "# noqa" in line
                   else line)
    return "\n".join(out).strip("\n")


def solution_cells(solution: nbformat.NotebookNode) -> list[int]:
    """Indices of the cells holding an exercise solution: those the learner version replaces."""
    learner = learner_notebook(solution)
    return [i for i, (sol, mine) in enumerate(zip(solution.cells, learner.cells, strict=True))
            if sol.source != mine.source]


def _heading_parts(first_cell: str) -> tuple[str, str, str]:
    """(title line, estimated time, prerequisites) from a chapter's first cell ("" when it does not say)."""
    title = first_cell.split("\n", 1)[0].lstrip("# ").strip()
    time = re.search(r"\*\*Estimated time:\*\*\s*([^.(\n]*)", first_cell)
    prereq = re.search(r"\*\*Prerequisites:\*\*\s*(.*?)(?:\n\n|$)", first_cell, re.DOTALL)
    return (title, time.group(1).strip() if time else "",
            " ".join(prereq.group(1).split()).rstrip(".") if prereq else "")


def chapter_page(solution: nbformat.NotebookNode, stem: str) -> nbformat.NotebookNode:
    """The notebook a chapter page renders: cleaned code, solutions folded, links to the notebook files."""
    nb = nbformat.from_dict(solution)
    for i in solution_cells(solution):
        cell = nb.cells[i]
        cell.metadata.setdefault("tags", []).append("hide-input")
        cell.metadata["mystnb"] = dict(SOLUTION_PROMPT)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = clean_source(cell.source)
        else:
            cell.source = rewrite_links(cell.source, depth=1)
    title, _, rest = nb.cells[0].source.partition("\n")
    files = (f"**Notebook files:** [with solutions](path:../_notebooks/solutions/{stem}.ipynb) "
             f"(notebooks/solutions/{stem}.ipynb) · [yours, exercises open](path:../_notebooks/{stem}.ipynb) "
             f"(notebooks/{stem}.ipynb)")
    nb.cells[0].source = f"{title}\n\n{files}\n{rest}"
    return nb


def rewrite_links(markdown: str, depth: int) -> str:
    """Links of README/docs/notebook prose, rewritten for a page ``depth`` folders below the site's root.

    A link to a notebook (learner or solution copy) goes to its chapter page; every other relative link keeps
    its target, since the site's sources mirror the repository's layout (README.md, docs/, figures/,
    benchmarks/results/).
    """
    def repl(match: re.Match[str]) -> str:
        target = match.group(2)
        chapter = _CHAPTER_LINK.match(target)
        if chapter:
            target = f"{'../' * depth}chapters/{chapter.group(2)}.ipynb{chapter.group(3) or ''}"
        return f"{match.group(1)}{target}{match.group(3)}"

    return _LINK.sub(repl, markdown)


def _section(markdown: str, heading: str) -> str:
    """The text under ``## heading`` up to the next heading of level 2 (the heading itself left out)."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, re.MULTILINE | re.DOTALL)
    if not match:
        raise SiteError(f"README.md: no '## {heading}' section")
    return match.group(1).strip()


def course_map(readme: str, chapters: dict[str, str]) -> str:
    """The README's course table with one more column: each chapter's own estimated time.

    ``chapters`` maps a notebook stem to its first cell's source.
    """
    lines = [line for line in _section(readme, "The course").splitlines() if line.startswith("|")]
    if len(lines) < 3:
        raise SiteError("README.md: the course table under '## The course' is missing")
    rows = [lines[0].rstrip(" |") + " | estimated time |", lines[1].rstrip(" |") + " | --- |"]
    for line in lines[2:]:
        stem = re.search(r"notebooks/(\d\d_\w+)\.ipynb", line)
        if not stem or stem.group(1) not in chapters:
            raise SiteError(f"README.md: course table row names no solution notebook: {line[:60]}")
        rows.append(f"{line.rstrip(' |')} | {_heading_parts(chapters[stem.group(1)])[1]} |")
    return rewrite_links("\n".join(rows), depth=0)


def _imported_names(source: str) -> set[tuple[str, str]]:
    """(module, name) of what a code cell takes from the package: ``from fedad_tutorial.x import y`` and
    ``module.y`` for a module imported from it."""
    try:
        tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
    except SyntaxError:
        return set()
    found, modules = set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fedad_tutorial"):
            for alias in node.names:
                found.add((node.module, alias.name))
                modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fedad_tutorial.") and alias.asname:
                    modules[alias.asname] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            found.add((modules[node.value.id], node.attr))
    return found


def chapter_api(paths: Iterable[Path]) -> dict[str, list[str]]:
    """Public functions and classes the chapters take from the package, by the module that defines them.

    Modules themselves (``from fedad_tutorial import plots``) and constants are left out; an object imported
    from a module that re-exports it is listed once, where it is defined.
    """
    wanted: set[tuple[str, str]] = set()
    for path in paths:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                wanted |= _imported_names(cell.source)
    api: dict[str, set[str]] = {}
    for module, name in sorted(wanted):
        if name.startswith("_"):
            continue
        try:  # ``module`` is a class when the chapter only used ``Class.attribute``: not an import
            obj = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        home = getattr(obj, "__module__", module)
        if not home.startswith("fedad_tutorial"):
            continue
        api.setdefault(home, set()).add(obj.__qualname__)
    return {module: sorted(names) for module, names in sorted(api.items())}


_ROLE_TARGET = re.compile(r":(?:py:)?\w+:`[^`<]*?<?~?(fedad_tutorial(?:\.\s*\w+)+)>?`")


def _docstrings(module: object) -> str:
    """The docstrings of a module, its public functions and classes and their public members."""
    texts = [inspect.getdoc(module) or ""]
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        texts.append(inspect.getdoc(obj) or "")
        if inspect.isclass(obj):
            texts += [inspect.getdoc(member) or "" for key, member in vars(obj).items() if not key.startswith("_")]
    return "\n".join(texts)


def _module_of(dotted: str) -> str | None:
    """The longest importable module prefix of a dotted name in the package."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        try:
            importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        return ".".join(parts[:end])
    return None


def api_modules(api: dict[str, list[str]]) -> list[str]:
    """The modules the reference documents: those the chapters import from, and every module of the package
    their docstrings refer to (and so on), so that those references resolve."""
    todo, seen = list(api), set(api)
    while todo:
        text = _docstrings(importlib.import_module(todo.pop()))
        for target in _ROLE_TARGET.findall(text):
            module = _module_of("".join(target.split()))
            if module and module not in seen:
                seen.add(module)
                todo.append(module)
    return sorted(seen)


def api_page(api: dict[str, list[str]]) -> str:
    """The API reference page (reStructuredText): the modules of :func:`api_modules`, each whole.

    A module is documented with all its public members (not only the ones the chapters name), so that the
    references its docstrings make to its other functions resolve; *used in the chapters* names what the
    notebooks call.
    """
    out = ["API reference", "=============", "",
           "The modules of ``fedad_tutorial`` the chapters import from (and the modules their documentation",
           "refers to), rendered from their docstrings. Under each module, *used in the chapters* names what the",
           "notebooks call.", ""]
    for module in api_modules(api):
        out += [module, "-" * len(module), ""]
        if module in api:
            used = ", ".join(f":py:obj:`~{module}.{name}`" for name in api[module])
            out += [f"*Used in the chapters:* {used}", ""]
        out += [f".. automodule:: {module}", "   :members:", ""]
    return "\n".join(out) + "\n"


def index_page(readme: str, chapters: dict[str, str], guides: list[str], tables: list[str]) -> str:
    """The landing page: what the course is, prerequisites, the course map, how to run it locally."""
    intro = readme.split("\n## ", 1)[0].split("\n", 1)[1].strip()
    overview = next(iter(chapters.values()))
    _, _, first_prereq = _heading_parts(overview)
    quickstart = rewrite_links(_section(readme, "Quickstart"), depth=0)
    toc_chapters = "\n".join(f"chapters/{stem}" for stem in chapters)
    toc_guides = "\n".join(f"docs/{name}" for name in guides)
    toc_tables = "\n".join(f"benchmarks/results/{name}" for name in tables)
    return f"""# fedad-tutorial: federated anomaly detection

{intro}

Every chapter below is a Jupyter notebook, shown here with the outputs it printed when it was last run; the
exercises' solutions are folded away (*Show the solution*), so you can try first. To run the code yourself,
install the course (below) and open the notebooks in JupyterLab.

## Prerequisites

{first_prereq}. Python 3.11 and a laptop CPU: no GPU is needed. Each chapter names what it builds on.

## The course map

{course_map(readme, chapters)}

Each estimated time is the chapter's own, from its first cell, which also names what the chapter builds on.

## Install and run the notebooks locally

{quickstart}

Then `jupyter lab notebooks/` opens the learner notebooks (the exercises left to you);
`notebooks/solutions/` holds the same notebooks with the solutions.

```{{toctree}}
:caption: Chapters
:hidden:
{toc_chapters}
```

```{{toctree}}
:caption: Guides
:hidden:
The README <README>
{toc_guides}
api
```

```{{toctree}}
:caption: Result tables
:hidden:
{toc_tables}
```
"""


def stage(src: Path) -> int:
    """Write the site's sources into ``src`` (an empty folder); return the number of pages."""
    solutions = sorted((REPO / "notebooks" / "solutions").glob("*.ipynb"))
    if not solutions:
        raise SiteError("notebooks/solutions/: no notebooks")
    problems = output_problems(solutions)
    if problems:
        raise SiteError("; ".join(problems))
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    chapters: dict[str, str] = {}
    (src / "chapters").mkdir(parents=True)
    (src / "_notebooks" / "solutions").mkdir(parents=True)
    for path in solutions:
        nb = nbformat.read(path, as_version=4)
        chapters[path.stem] = nb.cells[0].source
        nbformat.write(chapter_page(nb, path.stem), src / "chapters" / path.name)
        shutil.copy2(path, src / "_notebooks" / "solutions" / path.name)
        learner = REPO / "notebooks" / path.name
        if not learner.exists():
            raise SiteError(f"notebooks/{path.name}: missing; python -m fedad_tutorial.exercises.learner makes it")
        shutil.copy2(learner, src / "_notebooks" / path.name)
    (src / "docs").mkdir()
    guides = []
    for path in sorted((REPO / "docs").glob("*.md")):
        (src / "docs" / path.name).write_text(rewrite_links(path.read_text(encoding="utf-8"), depth=1),
                                              encoding="utf-8")
        guides.append(path.stem)
    results = REPO / "benchmarks" / "results"
    shutil.copytree(results, src / "benchmarks" / "results")
    tables = sorted(path.stem for path in results.glob("*.md"))
    shutil.copytree(REPO / "figures", src / "figures")
    (src / "README.md").write_text(rewrite_links(readme, depth=0), encoding="utf-8")
    (src / "api.rst").write_text(api_page(chapter_api(solutions)), encoding="utf-8")
    (src / "index.md").write_text(index_page(readme, chapters, guides, tables), encoding="utf-8")
    return len(chapters) + len(guides) + len(tables) + 3  # readme, api, index


def _prepare(output: Path) -> None:
    """Empty ``output`` for a new build; refuse a folder that is not a previous build (it could be the user's)."""
    if output.is_symlink():
        raise SiteError(f"{output}: a symbolic link; choose a plain folder for --output")
    if output.exists() and not output.is_dir():
        raise SiteError(f"{output}: exists and is not a folder; choose another --output")
    if output.exists() and any(output.iterdir()):
        if not (output / MARKER).is_file() or (output / MARKER).is_symlink():
            raise SiteError(f"{output}: not empty and not a previous site build; choose another --output")
        shutil.rmtree(output)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SiteError(f"{output}: cannot create it ({err.strerror})") from None
    (output / MARKER).write_text("a fedad site build: python -m fedad_tutorial.exercises.site replaces this folder\n")


def build(output: Path = DEFAULT_OUTPUT, quiet: bool = True) -> Path:
    """Build the site strictly into ``output/html``; return that folder (raises :class:`SiteError`).

    Sphinx runs as its own process (``python -m sphinx``): the package does not import it, so a learner's
    install, without the site's packages, still imports every module.
    """
    output = output.absolute()
    _prepare(output)
    stage(output / "src")
    html = output / "html"
    # -W --keep-going -n: every warning (an unresolved reference too) is an error, all reported; -j auto: a
    # process per core reads and writes the pages.
    args = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-n", "-E", "-j", "auto",
            "-c", str(CONFIG), "-d", str(output / "doctrees"), str(output / "src"), str(html)]
    # autodoc documents this checkout's package, the one the pages were staged from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if subprocess.run(args + (["-q"] if quiet else []), env=env, check=False).returncode != 0:
        raise SiteError("sphinx reported the problems above (warnings are errors)")
    return html


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the course as a static website (Sphinx), strictly, from the "
                                                 "committed notebooks and their stored outputs.")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="folder for the build; the site goes to OUTPUT/html (default: build/site in the current "
                             "folder)")
    parser.add_argument("--verbose", action="store_true", help="show Sphinx's progress")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("sphinx") is None:
        print("the site's packages are missing: pip install -r requirements-site.txt", file=sys.stderr)
        return 2
    try:
        html = build(args.output, quiet=not args.verbose)
    except SiteError as err:
        print(f"site build failed: {err}", file=sys.stderr)
        return 2
    print(f"wrote {html / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
