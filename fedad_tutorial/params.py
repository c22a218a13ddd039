"""Every setting's single declaration: its default, allowed range and help text, and the check of a value.

:class:`~fedad_tutorial.config.FederatedConfig` is built from these declarations (one field per
entry of :data:`TRAINING`), and so are the defaults of the classes that hold a part of it
(:class:`~fedad_tutorial.training.LocalTraining`, :class:`~fedad_tutorial.models.ModelSpec`), the
held-out share (:data:`TEST_FRACTION`: ``data.train_test_split``, ``fedad --test-fraction``) and a
Flower run's own settings (:data:`FLOWER`). This module sits below all of them and imports only the
standard library, so the dependency goes one way (``training`` and ``models`` import it, not the
configuration), and ``fedad --help`` answers without PyTorch.

>>> check("trim", 0.7)
Traceback (most recent call last):
...
fedad_tutorial.errors.UserError: trim must be in [0, 0.5), got 0.7
>>> default("engine")
'vectorized'
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from fedad_tutorial.errors import UserError

MODEL_KINDS = ("ae", "vae", "svdd", "iforest", "ensemble")
#: The models with no training rounds of their own: a federated isolation forest, grown in one round.
FOREST_KINDS = ("iforest", "ensemble")
ENGINES = ("loop", "vectorized")
#: Random seeds are 32-bit (what NumPy's and PyTorch's generators accept everywhere).
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Param:
    """What a setting may be, and how it is explained: the metadata of one setting.

    ``low``/``high`` bound numbers (``low_open``/``high_open`` exclude the bound itself); numbers must
    be finite. ``choices`` lists the allowed strings. ``cli=False`` keeps a field off the command line.
    ``default`` is the setting's default (every declaration below has one; a bare range used by the
    command line's other flags may leave it ``None``).
    """

    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    cli: bool = True
    default: Any = None

    @property
    def whole(self) -> bool:
        """Whether the setting is a whole number (or a tuple of them): its default is one."""
        values = self.default if isinstance(self.default, tuple) else (self.default,)
        return all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values)

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


#: The settings of a federated run, in :class:`~fedad_tutorial.config.FederatedConfig`'s field order.
#: The defaults are what the command line trains: ``threshold="local"`` (each client flags against its
#: own score distribution), ``engine="vectorized"`` (the loop engine's numbers, faster) and ``trim=0.1``
#: (each step leaves the batch's highest-loss 10 % out, so the few anomalies hidden in unlabelled
#: training rows are not learned; chapter 13 measures what this buys on real data).
TRAINING: dict[str, Param] = {
    "model": Param("autoencoder, VAE, Deep SVDD (svdd: one-class, distance to a federated centre), federated "
                   "isolation forest (iforest: one round, chapter 07), or ensemble (the autoencoder and the forest, "
                   "each calibrated on the federation's training scores, one score)",
                   choices=MODEL_KINDS, default="ae"),
    "rounds": Param("federated rounds", low=1, high=100_000, default=30),
    "local_epochs": Param("local epochs per round", low=1, high=10_000, default=5),
    "batch_size": Param("mini-batch size", low=1, high=10_000_000, default=64),
    "lr": Param("Adam learning rate", low=0, high=1e6, low_open=True, default=1e-3),
    "hidden": Param("hidden layer sizes of the encoder (mirrored in the decoder)", low=1, high=100_000, cli=False,
                    default=(64, 32)),
    "latent_dim": Param("size of the latent code", low=1, high=100_000, default=10),
    "beta": Param("VAE: weight of the KL term (0: no KL, the pitfall of chapter 3)", low=0, high=1e6, default=0.1),
    "fraction": Param("share of clients sampled each round", low=0, high=1, low_open=True, default=1.0),
    "threshold_percentile": Param("flag rows above this percentile of training scores", low=0, high=100,
                                  low_open=True, high_open=True, default=95.0),
    "threshold": Param("per-round evaluation: each client's own percentile (local), or the federated one (global)",
                       choices=("global", "local"), default="local"),
    "scaling": Param("feature scaling: from aggregated client statistics (global), or each client's own (local)",
                     choices=("global", "local"), cli=False, default="global"),
    "score_method": Param("the model's anomaly score (None: the model's default)", cli=False),
    "seed": Param("random seed (same seed, same numbers on the same machine)", low=0, high=MAX_SEED, default=42),
    "engine": Param("training engine (the same numbers; vectorized trains all clients as one batched computation)",
                    choices=ENGINES, default="vectorized"),
    "trim": Param("share of each batch's highest-loss rows left out of each step (robust to unlabelled anomalies "
                  "in training; 0 = plain training)", low=0, high=0.5, high_open=True, default=0.1),
    "trees_per_client": Param("iforest, ensemble: isolation trees each client grows on its own training rows",
                              low=1, high=10_000, default=100),
    "max_samples": Param("iforest, ensemble: rows each tree is grown on (lowered to the smallest client's "
                         "training rows)", low=2, high=1_000_000, default=128),
}

#: The share of each client's rows held out for evaluation (``train_test_split``, ``--test-fraction``).
TEST_FRACTION = Param("held-out share of each client's rows", low=0, high=1, low_open=True, high_open=True,
                      default=0.3)

#: What only a Flower deployment needs (:class:`~fedad_tutorial.flower.settings.FlowerSettings`, ``fedad server``).
FLOWER: dict[str, Param] = {
    "min_clients": Param("clients that must connect before training starts and keep answering", low=1,
                         high=1_000_000, default=2),
    "wait_timeout": Param("seconds to wait for the minimum number of clients to connect", low=0, high=1e9,
                          low_open=True, default=120.0),
    "round_timeout": Param("seconds to wait for the clients' replies to one message; silent clients are dropped",
                           low=0, high=1e9, low_open=True, default=300.0),
}

_ALL: dict[str, Param] = {**TRAINING, "test_fraction": TEST_FRACTION, **FLOWER}


def default(name: str) -> Any:
    """The declared default of the setting ``name``."""
    return _ALL[name].default


def check(name: str, value: Any) -> Any:
    """Return ``value`` if it is allowed for the setting ``name``, else raise :class:`UserError`.

    Integer settings must be whole numbers. Everything that holds a setting calls this for the
    values it receives, so a range is written once, here.
    """
    param = _ALL[name]
    if param.whole and not (isinstance(value, numbers.Integral) and not isinstance(value, bool)):
        raise UserError(f"{name} must be a whole number {param.describe()}, got {value!r}")
    if not param.allows(value):
        raise UserError(f"{name} must be {param.describe()}, got {value!r}")
    return value
