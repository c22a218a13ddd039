"""The settings of a federated run, declared once: type, default, allowed range and help text.

:class:`FederatedConfig` is the one place a setting is described. Each field carries a :class:`Param`
(its range or choices and its help); from these the configuration validates itself, the command
line builds its flags (:func:`fedad_tutorial.cli`), and local training and the model specification
check their own copies of the same values (:func:`check`). This module imports neither PyTorch nor
pandas, so ``fedad --help`` and a flag mistake answer at once.

>>> FederatedConfig(rounds=3).rounds
3
>>> FederatedConfig(trim=0.7)
Traceback (most recent call last):
...
fedad_tutorial.errors.UserError: trim must be in [0, 0.5), got 0.7
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from fedad_tutorial.errors import UserError

MODEL_KINDS = ("ae", "vae", "svdd")
ENGINES = ("loop", "vectorized")
#: Random seeds are 32-bit (what NumPy's and PyTorch's generators accept everywhere).
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Param:
    """What a setting may be, and how it is explained: the metadata of one configuration field.

    ``low``/``high`` bound numbers (``low_open``/``high_open`` exclude the bound itself); numbers must
    be finite. ``choices`` lists the allowed strings. ``cli=False`` keeps a field off the command line.
    """

    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    cli: bool = True

    def describe(self) -> str:
        """The allowed values in words: ``in [0, 0.5)``, ``at least 1``, ``one of ('ae', 'vae', 'svdd')``."""
        if self.choices is not None:
            return f"one of {self.choices}"
        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'above' if self.low_open else 'at least'} {_number(self.low)}"
        return "a finite number"

    def allows(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))


def _number(value: float) -> str:
    """``4294967295`` rather than ``4.29497e+09``; ``0.5`` as it is."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _param(default: Any, help: str, **limits: Any) -> Any:
    """A dataclass field with a :class:`Param` attached (the field's single declaration)."""
    return field(default=default, metadata={"param": Param(help, **limits)})


@dataclass(frozen=True)
class FederatedConfig:
    """Every setting of a run; the defaults are the course's reference configuration.

    The command line starts from :data:`fedad_tutorial.defaults.RECOMMENDED` instead, which adds
    what suits real, unlabelled data (see there).
    """

    model: str = _param("ae", "autoencoder, VAE, or Deep SVDD (svdd: one-class, "
                                        "distance to a federated centre)", choices=MODEL_KINDS)
    rounds: int = _param(30, "federated rounds", low=1, high=100_000)
    local_epochs: int = _param(5, "local epochs per round", low=1, high=10_000)
    batch_size: int = _param(64, "mini-batch size", low=1, high=10_000_000)
    lr: float = _param(1e-3, "Adam learning rate", low=0, high=1e6, low_open=True)
    hidden: tuple[int, ...] = _param((64, 32), "hidden layer sizes of the encoder (mirrored in the decoder)",
                                     low=1, high=100_000, cli=False)
    latent_dim: int = _param(10, "size of the latent code", low=1, high=100_000)
    beta: float = _param(0.1, "VAE: weight of the KL term (0: no KL, the pitfall of chapter 3)", low=0, high=1e6)
    fraction: float = _param(1.0, "share of clients sampled each round", low=0, high=1, low_open=True)
    threshold_percentile: float = _param(95.0, "flag rows above this percentile of training scores",
                                         low=0, high=100, low_open=True, high_open=True)
    threshold: str = _param("global", "per-round evaluation: each client's own percentile (local), "
                                      "or the federated one (global)", choices=("global", "local"))
    scaling: str = _param("global", "feature scaling: from aggregated client statistics (global), or each "
                                    "client's own (local)", choices=("global", "local"), cli=False)
    score_method: str | None = _param(None, "the model's anomaly score (None: the model's default)", cli=False)
    seed: int = _param(42, "random seed (same seed, same numbers on the same machine)", low=0, high=MAX_SEED)
    engine: str = _param("loop", "training engine", choices=ENGINES)
    trim: float = _param(0.0, "share of each batch's highest-loss rows left out of each step (robust to "
                              "unlabelled anomalies in training; 0 = plain training)", low=0, high=0.5,
                         high_open=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        for f in fields(self):
            if f.name == "score_method":
                continue
            value = getattr(self, f.name)
            for item in (value if f.name == "hidden" else (value,)):
                check(f.name, item)

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden": list(self.hidden)}

    def local_training(self):  # -> training.LocalTraining (imported here: it needs PyTorch)
        """How each client trains in a round, from this configuration."""
        from fedad_tutorial.training import LocalTraining

        return LocalTraining(self.local_epochs, self.batch_size, self.lr, self.trim)

    def model_spec(self, input_dim: int):  # -> models.ModelSpec (imported here: it needs PyTorch)
        """The architecture this configuration builds for ``input_dim`` features."""
        from fedad_tutorial.models import ModelSpec

        return ModelSpec(self.model, input_dim, tuple(self.hidden), self.latent_dim, self.beta)


#: The :class:`Param` of every :class:`FederatedConfig` field, by name.
PARAMS: dict[str, Param] = {f.name: f.metadata["param"] for f in fields(FederatedConfig)}


def check(name: str, value: Any) -> Any:
    """Return ``value`` if it is allowed for the setting ``name``, else raise :class:`UserError`.

    Integer settings must be whole numbers. Local training and the model specification call this
    for the values they receive, so a range is written once, here.
    """
    param = PARAMS[name]
    if name in _INT_FIELDS and not (isinstance(value, numbers.Integral) and not isinstance(value, bool)):
        raise UserError(f"{name} must be a whole number {param.describe()}, got {value!r}")
    if not param.allows(value):
        raise UserError(f"{name} must be {param.describe()}, got {value!r}")
    return value


_INT_FIELDS = {f.name for f in fields(FederatedConfig) if f.type in ("int", "tuple[int, ...]")}
