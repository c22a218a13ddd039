"""Exercises: learner notebooks match their solutions, and every check rejects the placeholder.

That every check *accepts* a right answer is proven by nbval: each solution notebook runs in CI and
its check cells are marked ``# NBVAL_CHECK_OUTPUT`` with the stored "✅ ... Correct" output.
"""

import importlib
import inspect
import pkgutil

import pytest

import fedad_tutorial.exercises as exercises_pkg
from fedad_tutorial.exercises.learner import out_of_sync, strip_solutions


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
