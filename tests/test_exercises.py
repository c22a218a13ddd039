"""Exercises: learner notebooks match their solutions, every check rejects the placeholder, and every
notebook is stored in the form JupyterLab keeps on opening it (so opening one does not modify it).

That every check *accepts* a right answer is proven by nbval: each solution notebook runs in CI and
its check cells are marked ``# NBVAL_CHECK_OUTPUT`` with the stored "✅ ... Correct" output.
"""

import importlib
import inspect
import pkgutil

import nbformat
import pytest
from ipykernel.ipkernel import IPythonKernel
from jupyter_client.kernelspec import KernelSpecManager

import fedad_tutorial.exercises as exercises_pkg
from fedad_tutorial.exercises.learner import (
    KERNELSPEC,
    NOTEBOOKS,
    normalize,
    not_normalized,
    out_of_sync,
    pairs,
    strip_solutions,
    write,
)


def _checks():
    found = []
    for info in pkgutil.iter_modules(exercises_pkg.__path__):
        if not info.name.startswith("nb"):
            continue
        module = importlib.import_module(f"fedad_tutorial.exercises.{info.name}")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("check_") and fn.__module__ == module.__name__:
                found.append(pytest.param(fn, id=f"{info.name}.{name}"))
    return found


def _placeholder(*args, **kwargs):
    raise NotImplementedError


def test_learner_notebooks_are_generated_from_the_solutions():
    assert out_of_sync() == []


@pytest.mark.parametrize("check", _checks())
def test_every_check_reports_the_placeholder_as_not_implemented(check):
    required = [p for p in inspect.signature(check).parameters.values()
                if p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
    outcome = check(*[_placeholder] * len(required))
    assert outcome.status == "not implemented" and not outcome


def test_strip_solutions_keeps_indentation_and_the_rest():
    source = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n\nprint(f)"
    assert strip_solutions(source) == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError\n\nprint(f)"


@pytest.mark.parametrize("path", [path for both in pairs() for path in both if path.exists()],
                         ids=lambda path: str(path.relative_to(NOTEBOOKS)))
def test_committed_notebooks_are_stored_as_jupyterlab_keeps_them(path):
    assert not_normalized([path]) == []


def _executed_notebook(display_name: str = "Python 3") -> nbformat.NotebookNode:
    """A notebook as nbclient leaves it: timings in the cell metadata, the kernel's full language_info."""
    cell = nbformat.v4.new_code_cell("print(1)", execution_count=1, outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="1\n")])
    cell.metadata = {"tags": ["keep"], "execution": {"iopub.status.busy": "2026-11-23T17:22:09.431557Z"}}
    return nbformat.v4.new_notebook(cells=[cell], metadata={
        "kernelspec": {"display_name": display_name, "language": "python", "name": "python3"},
        "language_info": dict(IPythonKernel.language_info)})


def test_normalize_sets_the_kernel_spec_and_drops_only_the_timings():
    nb = _executed_notebook()
    normal = normalize(nb)
    assert normal.metadata.kernelspec == KERNELSPEC
    assert normal.metadata.language_info == IPythonKernel.language_info
    assert normal.cells[0].metadata == {"tags": ["keep"]}
    assert normal.cells[0].outputs == nb.cells[0].outputs and normal.cells[0].execution_count == 1
    assert "execution" in nb.cells[0].metadata and nb.metadata.kernelspec.display_name == "Python 3"  # a copy


def test_not_normalized_says_why_and_write_stores_the_normal_form(tmp_path):
    path = tmp_path / "nb.ipynb"
    nbformat.write(_executed_notebook(), path)
    assert not_normalized([path]) == [f"{path}: per-cell execution timings in the cell metadata"]
    nb = normalize(_executed_notebook())
    nb.metadata.kernelspec.display_name = "Python 3"
    nbformat.write(nb, path)
    assert not_normalized([path]) == [f"{path}: kernelspec {dict(nb.metadata.kernelspec)}, not {KERNELSPEC}"]
    nb.metadata.language_info = {"name": "python"}
    nbformat.write(nb, path)
    assert not_normalized([path])[0].startswith(f"{path}: language_info lacks ['codemirror_mode'")

    write(_executed_notebook(), path)
    assert not_normalized([path]) == []
    assert path.read_text(encoding="utf-8").endswith("}\n") and list(tmp_path.iterdir()) == [path]


def test_the_kernel_spec_is_the_one_jupyterlab_starts():
    spec = KernelSpecManager().get_kernel_spec(KERNELSPEC["name"])
    assert (spec.display_name, spec.language) == (KERNELSPEC["display_name"], KERNELSPEC["language"])
