"""The machinery shared by every exercise check: outcomes, messages and the placeholder rule."""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch


class Mismatch(AssertionError):
    """Raised inside a check when the learner's answer is wrong; its message is the hint shown."""


@dataclass(frozen=True)
class Outcome:
    """The result of a check: ``status`` is "correct", "wrong" or "not implemented"."""

    name: str
    status: str
    message: str

    def __bool__(self) -> bool:
        return self.status == "correct"

    def __str__(self) -> str:
        symbol = {"correct": "✅", "wrong": "❌", "not implemented": "⏳"}[self.status]
        return f"{symbol} {self.name}: {self.message}"


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Run a block without touching the caller's random state (PyTorch's, NumPy's global and Python's).

    A check seeds PyTorch to build fresh models and data, and a learner's answer may draw from
    any global generator; afterwards the notebook's next cell must draw exactly what it would have
    drawn had the check never run.
    """
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def exercise(name: str, success: str = "Correct, well done.") -> Callable:
    """Turn a check function into one that prints and returns an :class:`Outcome`.

    The decorated check raises :class:`Mismatch` with a helpful hint when an answer is wrong. A
    ``NotImplementedError`` from the learner's code (the placeholder) becomes "not implemented yet";
    any other exception from the learner's code is reported as wrong, with its type and message.
    The check runs inside :func:`isolated_rng`, so it leaves the notebook's random state as it was.
    """

    def decorate(check: Callable[..., None]) -> Callable[..., Outcome]:
        @functools.wraps(check)
        def run(*args, **kwargs) -> Outcome:
            try:
                with isolated_rng():
                    check(*args, **kwargs)
            except NotImplementedError:
                outcome = Outcome(name, "not implemented",
                                  "not implemented yet: replace `raise NotImplementedError` with your code.")
            except Mismatch as exc:
                outcome = Outcome(name, "wrong", str(exc))
            except Exception as exc:  # the learner's code crashed: say how, do not crash the notebook
                outcome = Outcome(name, "wrong", f"your code raised {type(exc).__name__}: {exc}")
            else:
                outcome = Outcome(name, "correct", success)
            print(outcome)
            return outcome

        return run

    return decorate


def expect(condition: bool, hint: str) -> None:
    """Raise :class:`Mismatch` with ``hint`` unless ``condition`` holds."""
    if not condition:
        raise Mismatch(hint)


def expect_state_dict(got: object, want: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Check that ``got`` is a state dict with ``want``'s keys and shapes; return it as tensors."""
    expect(isinstance(got, dict), f"return a dict like a state_dict, got {_describe(got)}")
    expect(set(got) == set(want), f"keys differ: expected {sorted(want)}, got {sorted(got)}")
    tensors = {key: torch.as_tensor(got[key]) for key in want}
    for key, value in want.items():
        expect(tuple(tensors[key].shape) == tuple(value.shape),
               f"{key}: expected shape {tuple(value.shape)}, got {tuple(tensors[key].shape)}")
    return tensors


def as_float_tensor(value: object) -> torch.Tensor:
    """The learner's answer as a detached float64 tensor (accepts tensors, arrays and lists).

    Anything else (``None`` from a forgotten ``return``, a string) is the learner's mistake, not a crash
    of the check: it becomes a :class:`Mismatch` that names what came back.
    """
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float64)
    expect(value is not None, f"return numbers (a tensor, an array or a list of numbers), got {_describe(value)}")
    try:
        return torch.as_tensor(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError):
        raise Mismatch(f"return numbers (a tensor, an array or a list of numbers), got {_describe(value)}") from None


def _describe(value: object) -> str:
    """A short description of a learner's return value, for hints about its type."""
    if value is None:
        return "None (did you forget `return`?)"
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"a {type(value).__name__} of shape {tuple(shape)}"
    if isinstance(value, (list, tuple)):
        lengths = {len(item) for item in value if hasattr(item, "__len__")}
        ragged = " of different lengths" if len(lengths) > 1 else ""
        return f"a {type(value).__name__} of {len(value)} items{ragged}"
    return f"a {type(value).__name__}"


def learner_array(value: object, what: str, dtype: type = np.float64) -> np.ndarray:
    """The learner's answer as a numpy array of ``dtype``; a hint naming ``what`` if it cannot be one.

    A tensor is accepted (detached first, so one still attached to autograd does not make the check
    itself fail); ``None``, strings and ragged lists become a :class:`Mismatch`, never a crash of the
    check reported as the learner's error.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise Mismatch(f"return {what} as a numpy array, got {_describe(value)}") from None
    expect(value is not None, f"return {what} as a numpy array, got {_describe(value)}")
    return array


def learner_number(value: object, what: str = "the answer") -> float:
    """The learner's answer (or a part of it, named ``what``) as one float (a tensor or a one-element array
    counts); a hint naming ``what`` and what came back if it is not a single number."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    expect(value is not None and array is not None and array.size == 1,
           f"return {what} (one number), got {_describe(value)}")
    return float(array.reshape(()))
