"""What the Flower ServerApp and ClientApp agree on: the run settings and the message contents.

The ServerApp reads a :class:`FlowerSettings` (from the Flower run config in a deployment, or
directly in a simulation) and puts everything a client needs for one message into that
message's ``ConfigRecord`` (:func:`message_config`); clients read it back with
:func:`config_from_message`. Nothing here trains or evaluates: that is the package's code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np
from flwr.app import ConfigRecord

from fedad_tutorial.errors import UserError
from fedad_tutorial.federated import RECOMMENDED, FederatedConfig
from fedad_tutorial.models import ModelSpec
from fedad_tutorial.scaling import Scaler
from fedad_tutorial.training import LocalTraining

#: Message types (``<type>.<action>``) the ClientApp answers.
STATS = "query.stats"  # count, sum and sum of squares of the training rows (for the global scaler)
HISTOGRAM = "query.histogram"  # score histogram of the training rows (for a global threshold)
TRAIN = "train"
EVALUATE = "evaluate"
#: The reply record of a node's metrics on its held-out rows (in ``evaluate`` and evaluating ``train`` replies).
EVALUATION = "evaluation"


class FlowerRunError(RuntimeError):
    """The federation cannot go on (too few nodes, nodes that stopped answering, inconsistent data)."""


@dataclass(frozen=True)
class FlowerSettings:
    """A Flower run: the federated configuration plus what only a real deployment needs."""

    config: FederatedConfig = RECOMMENDED  # the command line's defaults (frozen, so safe to share)
    test_fraction: float = 0.3
    min_clients: int = 2
    wait_timeout: float = 120.0  # seconds to wait for ``min_clients`` nodes to connect
    round_timeout: float = 300.0  # seconds to wait for the replies of one message round
    output_dir: str = ""  # run folder to write ("" = do not write)

    def __post_init__(self) -> None:
        if not 0 < self.test_fraction < 1:
            raise UserError(f"test fraction must be between 0 and 1, got {self.test_fraction}")
        if self.min_clients < 1:
            raise UserError(f"min clients must be at least 1, got {self.min_clients}")
        if not (self.wait_timeout > 0 and self.round_timeout > 0):
            raise UserError("timeouts must be positive")

    # Flower's run config is a flat mapping of scalars: flatten / unflatten.
    def to_run_config(self) -> dict[str, bool | int | float | str]:
        out: dict[str, bool | int | float | str] = {}
        for key, value in self.config.to_dict().items():
            if key == "hidden":
                value = ",".join(str(h) for h in value)
            elif value is None:
                value = ""
            out[f"fl-{key.replace('_', '-')}"] = value
        for f in fields(self):
            if f.name != "config":
                out[f.name.replace("_", "-")] = getattr(self, f.name)
        return out

    @classmethod
    def from_run_config(cls, run_config: dict) -> FlowerSettings:
        base = RECOMMENDED  # keys missing from the run config keep the command line's defaults
        kwargs = {}
        for key, default in asdict(base).items():
            raw = run_config.get(f"fl-{key.replace('_', '-')}")
            if raw is None:
                continue
            if key == "hidden":
                raw = tuple(int(h) for h in str(raw).split(",") if h)
            elif key == "score_method":
                raw = raw or None
            elif isinstance(default, float):
                raw = float(raw)
            kwargs[key] = raw
        own = {}
        for f in fields(cls):
            if f.name == "config":
                continue
            raw = run_config.get(f.name.replace("_", "-"))
            if raw is not None:
                own[f.name] = type(getattr(cls(), f.name))(raw)
        return cls(config=replace(base, **kwargs), **own)


def message_config(settings: FlowerSettings, server_round: int, scaler: Scaler | None = None,
                   threshold: float | None = None) -> ConfigRecord:
    """Everything a client needs to handle one message (no data, no weights)."""
    c = settings.config
    record = ConfigRecord({
        "server-round": int(server_round), "seed": int(c.seed), "test-fraction": float(settings.test_fraction),
        "model": c.model, "hidden": [int(h) for h in c.hidden], "latent-dim": int(c.latent_dim),
        "beta": float(c.beta), "local-epochs": int(c.local_epochs), "batch-size": int(c.batch_size),
        "lr": float(c.lr), "trim": float(c.trim), "threshold-percentile": float(c.threshold_percentile),
        "score-method": c.score_method or "",
    })
    if scaler is not None:
        record["scaler-mean"] = [float(v) for v in scaler.mean]
        record["scaler-std"] = [float(v) for v in scaler.std]
    if threshold is not None:
        record["threshold"] = float(threshold)
    return record


@dataclass(frozen=True)
class MessageConfig:
    """A client's view of a message's ``ConfigRecord``."""

    server_round: int
    seed: int
    test_fraction: float
    threshold_percentile: float
    score_method: str | None
    training: LocalTraining
    hidden: tuple[int, ...]
    model: str
    latent_dim: int
    beta: float
    scaler: Scaler | None
    threshold: float | None

    def spec(self, input_dim: int) -> ModelSpec:
        return ModelSpec(self.model, input_dim, self.hidden, self.latent_dim, self.beta)


def config_from_message(record: ConfigRecord) -> MessageConfig:
    scaler = None
    if "scaler-mean" in record:
        scaler = Scaler(np.asarray(record["scaler-mean"], dtype=np.float32),
                        np.asarray(record["scaler-std"], dtype=np.float32))
    return MessageConfig(
        server_round=int(record["server-round"]), seed=int(record["seed"]),
        test_fraction=float(record["test-fraction"]),
        threshold_percentile=float(record["threshold-percentile"]),
        score_method=str(record["score-method"]) or None,
        training=LocalTraining(int(record["local-epochs"]), int(record["batch-size"]), float(record["lr"]),
                               float(record["trim"]) if "trim" in record else 0.0),
        hidden=tuple(int(h) for h in record["hidden"]), model=str(record["model"]),
        latent_dim=int(record["latent-dim"]), beta=float(record["beta"]), scaler=scaler,
        threshold=float(record["threshold"]) if "threshold" in record else None,
    )
