"""The settings of a federated run: one frozen dataclass whose defaults are what the command line trains.

:class:`FederatedConfig` has one field per setting declared in :mod:`fedad_tutorial.params` (type,
default, allowed range and help text, written once there). From these declarations the
configuration validates itself, the command line builds its flags (:func:`fedad_tutorial.cli`), and
local training and the model specification take their defaults and check their values. This module
imports neither PyTorch nor pandas, so ``fedad --help`` and a flag mistake answer at once.

>>> FederatedConfig(rounds=3).rounds
3
>>> FederatedConfig().engine, FederatedConfig().threshold, FederatedConfig().trim  # what ``fedad run`` trains
('vectorized', 'local', 0.1)
>>> FederatedConfig(trim=0.7)
Traceback (most recent call last):
...
fedad_tutorial.errors.UserError: trim must be in [0, 0.5), got 0.7
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from fedad_tutorial.params import ENGINES, MAX_SEED, MODEL_KINDS, TRAINING, Param, check

__all__ = ["ENGINES", "MAX_SEED", "MODEL_KINDS", "PARAMS", "FederatedConfig", "Param", "check"]


def _param(name: str) -> Any:
    """The dataclass field of the setting ``name``: its declared default, with its :class:`Param` attached."""
    return field(default=TRAINING[name].default, metadata={"param": TRAINING[name]})


@dataclass(frozen=True)
class FederatedConfig:
    """Every setting of a run. ``FederatedConfig()`` is what ``fedad run`` trains (30 rounds; ``simulate``
    and ``server`` default to 10): local thresholds, the vectorized engine and trimmed training. A
    chapter that teaches a plainer step asks for it explicitly (``engine="loop"``, ``trim=0.0``, ...).
    ``model="iforest"`` always has ``rounds=1`` (the forest's one round)."""

    model: str = _param("model")
    rounds: int = _param("rounds")
    local_epochs: int = _param("local_epochs")
    batch_size: int = _param("batch_size")
    lr: float = _param("lr")
    hidden: tuple[int, ...] = _param("hidden")
    latent_dim: int = _param("latent_dim")
    beta: float = _param("beta")
    fraction: float = _param("fraction")
    threshold_percentile: float = _param("threshold_percentile")
    threshold: str = _param("threshold")
    scaling: str = _param("scaling")
    score_method: str | None = _param("score_method")
    seed: int = _param("seed")
    engine: str = _param("engine")
    trim: float = _param("trim")
    trees_per_client: int = _param("trees_per_client")
    max_samples: int = _param("max_samples")

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if self.model == "iforest":  # a forest grows in one round: there is nothing to repeat
            object.__setattr__(self, "rounds", 1)
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
        """The network this configuration trains in rounds for ``input_dim`` features (an ensemble's is its
        autoencoder; an ``iforest`` has none: its spec names the kind and the features only)."""
        from fedad_tutorial.models import ModelSpec

        kind = "ae" if self.model == "ensemble" else self.model
        return ModelSpec(kind, input_dim, tuple(self.hidden), self.latent_dim, self.beta)


#: The :class:`Param` of every :class:`FederatedConfig` field, by name.
PARAMS: dict[str, Param] = {f.name: f.metadata["param"] for f in fields(FederatedConfig)}
assert list(PARAMS) == list(TRAINING), "FederatedConfig declares one field per params.TRAINING entry, in order"
