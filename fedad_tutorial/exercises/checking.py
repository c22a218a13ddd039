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
    expect(isinstance(got, dict), f"return a dict like a state_dict, got {type(got).__name__}")
    expect(set(got) == set(want), f"keys differ: expected {sorted(want)}, got {sorted(got)}")
    tensors = {key: torch.as_tensor(got[key]) for key in want}
    for key, value in want.items():
        expect(tuple(tensors[key].shape) == tuple(value.shape),
               f"{key}: expected shape {tuple(value.shape)}, got {tuple(tensors[key].shape)}")
    return tensors


def as_float_tensor(value: object) -> torch.Tensor:
    """The learner's answer as a detached float64 tensor (accepts tensors, arrays and lists)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float64)
    if value is None:
        raise Mismatch("your function returned None: did you forget the return statement?")
    try:
        return torch.as_tensor(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError):
        raise Mismatch(f"return a tensor (or array) of numbers, got {type(value).__name__}") from None


def as_number(value: object, name: str | None = None) -> float:
    """The learner's answer (or its part ``name``) as one float (a one-element array counts), or a
    :class:`Mismatch` naming what came back instead."""
    if value is None and name is None:
        raise Mismatch("your function returned None: did you forget the return statement?")
    try:
        values = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        values = np.empty(0)
    if values.size != 1:
        raise Mismatch(f"{'return' if name is None else name + ' should be'} one number, got {type(value).__name__}"
                       + (f" of shape {values.shape}" if values.size else ""))
    return float(values.reshape(()))
