"""The course as a website (``python -m fedad_tutorial.exercises.site``): what the built site holds, and that the
build is strict (a broken reference, a missing image or a notebook without stored outputs fails it).

The site's packages (requirements-site.txt) are not what a learner installs. Without them these tests skip,
except in CI (``CI`` set, as ``.ci/run`` sets it), where they fail: CI must build the site.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from fedad_tutorial.exercises import site as site_build
from fedad_tutorial.exercises.learner import BEGIN

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))
# The theme and MyST use Sphinx attributes that Sphinx 11 removes; their warnings are not about this project.
pytestmark = pytest.mark.filterwarnings("ignore:.*Check CHANGES for Sphinx API modifications")
SITE_PACKAGES = ("sphinx", "myst_nb", "sphinx_book_theme", "sphinx_togglebutton", "sphinx_design")


def require_site_packages() -> None:
    missing = [name for name in SITE_PACKAGES if importlib.util.find_spec(name) is None]
    if not missing:
        return
    message = f"the site's packages are missing ({', '.join(missing)}): pip install -r requirements-site.txt"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class _Links(HTMLParser):
    """The images, links and solution toggles of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[tuple[str, str]] = []  # (href, class)
        self.toggles: list[str] = []
        self._in_toggle = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.images.append(attr["src"])
        elif tag == "a" and "href" in attr:
            self.links.append((attr["href"], attr.get("class", "")))
        elif tag == "p" and "collapsed" in attr.get("class", ""):
            self._in_toggle = True

    def handle_data(self, data: str) -> None:
        if self._in_toggle and data.strip():
            self.toggles.append(data.strip())
            self._in_toggle = False


def parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    require_site_packages()
    return site_build.build(tmp_path_factory.mktemp("site") / "out")


# --- the built site -------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_one_page_per_chapter_guide_result_table_plus_readme_api_and_index(site):
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html") if "_static" not in p.parts}
    generated = {"genindex.html", "search.html", "py-modindex.html"}  # Sphinx's own index and search pages
    expected = ({f"chapters/{p.stem}.html" for p in SOLUTIONS}
                | {f"docs/{p.stem}.html" for p in (ROOT / "docs").glob("*.md")}
                | {f"benchmarks/results/{p.stem}.html" for p in (ROOT / "benchmarks" / "results").glob("*.md")}
                | {"README.html", "api.html", "index.html"})
    assert len(SOLUTIONS) == 16
    assert pages - generated == expected


@pytest.mark.slow
def test_every_image_a_page_shows_is_in_the_site(site):
    shown = 0
    for page in site.rglob("*.html"):
        for src in parse(page).images:
            if src.startswith("data:"):
                continue
            assert (page.parent / src).is_file(), f"{page.relative_to(site)}: {src}"
            shown += 1
    # every figure a chapter draws is an image file of the site (PNG outputs are not inlined)
    figures = sum(1 for nb in map(lambda p: nbformat.read(p, as_version=4), SOLUTIONS) for cell in nb.cells
                  if cell.cell_type == "code" for out in cell.outputs if "image/png" in out.get("data", {}))
    assert shown >= figures
    readme = parse(site / "README.html").images
    assert any(src.endswith("f1_per_round.png") for src in readme)


@pytest.mark.slow
def test_each_exercise_solution_is_folded_and_the_machinery_is_gone(site):
    for path in SOLUTIONS:
        nb = nbformat.read(path, as_version=4)
        solutions = site_build.solution_cells(nb)
        page = site / "chapters" / f"{path.stem}.html"
        html = page.read_text(encoding="utf-8")
        assert parse(page).toggles.count("Show the solution") == len(solutions), path.name
        for marker in ("NBVAL_CHECK_OUTPUT", BEGIN, "%matplotlib", "noqa"):
            assert marker not in html, f"{path.name}: {marker}"
    assert sum(len(site_build.solution_cells(nbformat.read(p, as_version=4))) for p in SOLUTIONS) >= 16


@pytest.mark.slow
def test_chapters_chain_by_previous_and_next_and_link_their_notebook_files(site):
    chapters = [f"{p.stem}.html" for p in SOLUTIONS]
    for i, name in enumerate(chapters):
        links = parse(site / "chapters" / name).links
        nav = {cls.split()[0]: href for href, cls in links if cls.split()[:1] in (["left-prev"], ["right-next"])}
        if i > 0:
            assert nav["left-prev"] == chapters[i - 1], name
        if i + 1 < len(chapters):
            assert nav["right-next"] == chapters[i + 1], name
        downloads = [href for href, cls in links if "download" in cls and href.endswith(".ipynb")]
        assert len(downloads) == 2, name
        for href in downloads:  # the committed solution and learner files, byte for byte
            assert (site / "chapters" / href).is_file()
        sizes = sorted((site / "chapters" / href).stat().st_size for href in downloads)
        stem = name.removesuffix(".html")
        assert sizes == sorted([(ROOT / "notebooks" / f"{stem}.ipynb").stat().st_size,
                                (ROOT / "notebooks" / "solutions" / f"{stem}.ipynb").stat().st_size])


@pytest.mark.slow
def test_search_index_and_landing_page(site):
    index = (site / "searchindex.js").read_text(encoding="utf-8")
    data = json.loads(index[index.index("(") + 1:index.rindex(")")])
    assert len(data["docnames"]) >= len(SOLUTIONS) + 3
    assert "hyperspher" in data["terms"]  # a word of chapter 14 only, stemmed
    landing = parse(site / "index.html").links
    chapter_links = {href.split("#")[0] for href, _ in landing if href.startswith("chapters/")}
    assert chapter_links == {f"chapters/{p.stem}.html" for p in SOLUTIONS}
    text = (site / "index.html").read_text(encoding="utf-8")
    for path in SOLUTIONS:  # each chapter's own estimated time is in the course map
        minutes = re.search(r"\*\*Estimated time:\*\*\s*(\d+ minutes)", nbformat.read(path, 4).cells[0].source)
        assert minutes and minutes.group(1) in text


@pytest.mark.slow
def test_api_reference_documents_what_the_chapters_import(site):
    api = site_build.chapter_api(SOLUTIONS)
    html = (site / "api.html").read_text(encoding="utf-8")
    for module, names in api.items():
        for name in names:
            assert f'id="{module}.{name}"' in html, f"{module}.{name}"


# --- strictness: what fails the build -------------------------------------------------------------------------

def _notebook(executed: bool) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 00 · A chapter"), nbformat.v4.new_code_cell("print(1)")]
    if executed:
        nb.cells[1].execution_count = 1
        nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    return nb


def test_a_notebook_without_stored_outputs_is_named_and_stops_the_build(tmp_path, monkeypatch):
    solutions = tmp_path / "notebooks" / "solutions"
    solutions.mkdir(parents=True)
    nbformat.write(_notebook(executed=True), solutions / "00_done.ipynb")
    nbformat.write(_notebook(executed=False), solutions / "01_fresh.ipynb")
    problems = site_build.output_problems(sorted(solutions.glob("*.ipynb")))
    assert len(problems) == 1 and problems[0].startswith("01_fresh.ipynb: code cells [1] were never executed")
    monkeypatch.setattr(site_build, "REPO", tmp_path)
    with pytest.raises(site_build.SiteError, match="01_fresh.ipynb"):
        site_build.stage(tmp_path / "src")
    assert not (tmp_path / "src").exists()  # nothing was staged


def test_every_committed_solution_notebook_has_stored_outputs():
    assert site_build.output_problems(SOLUTIONS) == []


@pytest.mark.parametrize("name, page, error", [
    ("index.md", "# A page\n\nSee [the missing page](nowhere.md).\n", "nowhere.md"),
    ("index.md", "# A page\n\n![a figure](figures/missing.png)\n", "missing.png"),
    ("index.md", "# A page\n\n{py:func}`fedad_tutorial.data.no_such_function`\n", "no_such_function"),
    # the API reference is reStructuredText, as here
    ("index.rst", "A page\n======\n\n.. automodule:: planted_module\n   :members:\n",
     "docstring of planted_module.f"),
])
def test_a_broken_reference_missing_image_or_bad_docstring_fails_the_build(tmp_path, monkeypatch, capsys, name,
                                                                             page, error):
    """The site's configuration with Sphinx's strict flags, on a one-page site with one planted mistake."""
    require_site_packages()
    from sphinx.cmd.build import build_main

    # a docstring docutils cannot parse: a role that does not end
    (tmp_path / "planted_module.py").write_text('def f():\n    """A :func:`role that does not end."""\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / name).write_text(page, encoding="utf-8")
    args = ["-b", "html", "-W", "--keep-going", "-n", "-q", "-E", "-c", str(site_build.CONFIG),
            str(tmp_path / "src"), str(tmp_path / "html")]
    assert build_main(args) != 0
    assert error in capsys.readouterr().err
    (tmp_path / "src" / name).unlink()
    (tmp_path / "src" / "index.md").write_text("# A page\n\nNothing wrong here.\n", encoding="utf-8")
    assert build_main(args) == 0  # the same site without the mistake builds


# --- the pieces the build is made of --------------------------------------------------------------------------

def test_the_code_a_reader_sees_has_no_tooling_lines():
    source = ("# NBVAL_CHECK_OUTPUT\n%matplotlib inline\nimport tqdm.auto  # noqa: F401\n"
              "import x  # noqa: F401  (imported early: why)\ndef f():\n    ### BEGIN SOLUTION\n    return 1\n"
              "    ### END SOLUTION\n")
    assert site_build.clean_source(source) == "import tqdm.auto\nimport x  # (imported early: why)\ndef f():\n" \
                                              "    return 1"
    setup = ('import copy\nimport warnings\n\nwarnings.filterwarnings("ignore", message="IProgress")  # tqdm\n\n'
             "import numpy as np\n")
    assert site_build.clean_source(setup) == "import copy\n\nimport numpy as np"
    used = setup + "with warnings.catch_warnings():\n    pass\n"  # the notebook uses warnings itself: kept
    assert site_build.clean_source(used).startswith("import copy\nimport warnings\n\nimport numpy as np\nwith")


def test_solution_cells_are_the_cells_the_learner_copy_replaces():
    nb = _notebook(executed=True)
    nb.cells.append(nbformat.v4.new_code_cell(f"def f():\n    {BEGIN}\n    return 1\n    ### END SOLUTION\n"))
    assert site_build.solution_cells(nb) == [2]
    page = site_build.chapter_page(nb, "00_a")
    assert page.cells[2].metadata["tags"] == ["hide-input"]
    assert page.cells[2].metadata["mystnb"]["code_prompt_show"] == "Show the solution"
    assert "hide-input" not in page.cells[1].metadata.get("tags", [])


def test_links_to_notebooks_go_to_chapter_pages_and_the_rest_is_kept():
    text = ("[a](notebooks/02_autoencoder.ipynb) [b](../notebooks/solutions/13_real_data_wdbc.ipynb#x) "
            "[c](figures/f1_per_round.png) [d](https://flower.ai)")
    assert site_build.rewrite_links(text, depth=1) == (
        "[a](../chapters/02_autoencoder.ipynb) [b](../chapters/13_real_data_wdbc.ipynb#x) "
        "[c](figures/f1_per_round.png) [d](https://flower.ai)")


def test_the_course_map_is_the_readme_table_with_each_chapters_time():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    chapters = {p.stem: nbformat.read(p, as_version=4).cells[0].source for p in SOLUTIONS}
    rows = site_build.course_map(readme, chapters).splitlines()
    assert len(rows) == 2 + len(SOLUTIONS)
    assert rows[0].endswith("| estimated time |")
    assert rows[4].startswith("| [02 · Autoencoder](chapters/02_autoencoder.ipynb) |")
    assert rows[4].endswith("| 35 minutes |")  # chapter 02's first cell: "**Estimated time:** 35 minutes"
    del chapters["02_autoencoder"]
    with pytest.raises(site_build.SiteError, match="names no solution notebook"):
        site_build.course_map(readme, chapters)


def test_the_api_lists_what_the_chapters_import_where_it_is_defined():
    api = site_build.chapter_api(SOLUTIONS)
    assert "run_federated" in api["fedad_tutorial.federated"]
    assert "FederatedConfig" in api["fedad_tutorial.config"]  # imported from federated, defined in config
    assert "FederatedConfig" not in api.get("fedad_tutorial.federated", [])
    assert "plot_roc_pr" in api["fedad_tutorial.plots.detection"]  # plots.plot_roc_pr(...) and imported
    assert all(not name.startswith("_") for names in api.values() for name in names)


def test_the_output_folder_is_replaced_only_when_it_is_a_previous_build(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me\n")
    assert site_build.main(["--output", str(mine)]) == 2  # (also without sphinx: then it says what is missing)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("not a previous site build" in err[0] or "missing" in err[0])
    assert (mine / "notes.txt").read_text() == "keep me\n"
    (tmp_path / "file").write_text("x")
    with pytest.raises(site_build.SiteError, match="not a folder"):
        site_build._prepare(tmp_path / "file")
    with pytest.raises(site_build.SiteError, match="cannot create it"):
        site_build._prepare(tmp_path / "file" / "site")
    (tmp_path / "link").symlink_to(mine)
    with pytest.raises(site_build.SiteError, match="symbolic link"):
        site_build._prepare(tmp_path / "link")
    assert (mine / "notes.txt").read_text() == "keep me\n"
    previous = tmp_path / "previous"
    site_build._prepare(previous)
    (previous / "html").mkdir()
    site_build._prepare(previous)
    assert sorted(p.name for p in previous.iterdir()) == [site_build.MARKER]
    shutil.rmtree(previous)


def test_without_the_site_packages_ci_fails_and_elsewhere_skips(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sphinx" else real(name, *a))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"missing \(sphinx\)"):
        require_site_packages()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="requirements-site.txt"):
        require_site_packages()
