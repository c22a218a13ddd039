"""What the Flower ServerApp and ClientApp agree on: the run settings and the message contents.

The ServerApp reads a :class:`FlowerSettings` (from the Flower run config in a deployment, or
directly in a simulation) and puts everything a client needs for one message into that
message's ``ConfigRecord`` (:func:`message_config`); clients read it back with
:func:`config_from_message`. Both carry the :class:`~fedad_tutorial.config.FederatedConfig` as one
flat key per field, derived from its fields (:func:`flat_config`, :func:`config_from_flat`): a field
declared there reaches the run config, every message and the clients with no list to update here,
and what comes back is validated by the configuration itself (:func:`fedad_tutorial.config.check`).
Nothing here trains or evaluates: that is the package's code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import Field, dataclass, fields, replace

import numpy as np
from flwr.app import ConfigRecord

from fedad_tutorial.config import PARAMS, FederatedConfig
from fedad_tutorial.errors import UserError
from fedad_tutorial.models import ModelSpec
from fedad_tutorial.params import FLOWER, TEST_FRACTION, check
from fedad_tutorial.scaling import Scaler
from fedad_tutorial.training import LocalTraining

#: Message types (``<type>.<action>``) the ClientApp answers.
STATS = "query.stats"  # count, sum and sum of squares of the training rows (for the global scaler)
HISTOGRAM = "query.histogram"  # score histogram of the training rows (for a global threshold)
CENTER = "query.center"  # sum and count of the training rows' embeddings (Deep SVDD's centre)
TRAIN = "train"
TREES = "train.trees"  # a forest's one round: the node's isolation trees, as arrays
EVALUATE = "evaluate"
#: The reply record of a node's metrics on its held-out rows (in ``evaluate`` and evaluating ``train`` replies).
EVALUATION = "evaluation"
#: The ``ConfigRecord`` key of the federation's threshold (a message evaluating with a global threshold).
THRESHOLD = "threshold-value"
#: The ``ConfigRecord`` key of a ``train.trees`` message's shared sub-sample size (``max-samples`` lowered to the
#: smallest node's training rows).
SUBSAMPLE = "subsample-size"

Scalar = bool | int | float | str


def key(name: str) -> str:
    """A field's key in a Flower run config or ``ConfigRecord``: its flag spelling (``local-epochs``)."""
    return name.replace("_", "-")


def flat_config(config: FederatedConfig) -> dict[str, Scalar]:
    """``config`` as flat scalars, one key per field (a tuple as ``"64,32"``, ``None`` as ``""``)."""
    out: dict[str, Scalar] = {}
    for f in fields(FederatedConfig):
        value = getattr(config, f.name)
        if isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        elif value is None:
            value = ""
        out[key(f.name)] = value
    return out


def _parse(f: Field, raw, where: str):
    """The field's value from its flat form; the range is checked by ``FederatedConfig`` itself."""
    kind = str(f.type)
    if kind.startswith("tuple"):
        try:
            return tuple(int(v) for v in str(raw).split(",") if v.strip())
        except ValueError:
            raise UserError(f"{where} {key(f.name)}: expected whole numbers separated by commas, "
                            f"got {raw!r}") from None
    if kind.endswith("| None"):
        return raw or None
    if kind == "float" and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    return raw


def config_from_flat(values: Mapping, where: str, base: FederatedConfig = FederatedConfig()) -> FederatedConfig:
    """The configuration whose flat form is in ``values`` (other keys are not looked at); fields
    missing from ``values`` keep ``base``'s. A value out of range: :class:`UserError`."""
    given = {f.name: _parse(f, values[key(f.name)], where) for f in fields(FederatedConfig) if key(f.name) in values}
    return replace(base, **given)


class FlowerRunError(RuntimeError):
    """The federation cannot go on (too few nodes, nodes that stopped answering, inconsistent data)."""


@dataclass(frozen=True)
class FlowerSettings:
    """A Flower run: the federated configuration plus what only a real deployment needs. The defaults
    are the command line's (declared once, in :mod:`fedad_tutorial.params`)."""

    config: FederatedConfig = FederatedConfig()  # the command line's defaults (frozen, so safe to share)
    test_fraction: float = TEST_FRACTION.default
    min_clients: int = FLOWER["min_clients"].default
    wait_timeout: float = FLOWER["wait_timeout"].default  # seconds to wait for ``min_clients`` nodes to connect
    round_timeout: float = FLOWER["round_timeout"].default  # seconds to wait for the replies of one message round
    output_dir: str = ""  # run folder to write ("" = do not write)

    def __post_init__(self) -> None:
        check("test_fraction", self.test_fraction)
        for name in FLOWER:
            check(name, getattr(self, name))

    # Flower's run config is a flat mapping of scalars: one key per field of the configuration and of this class.
    def to_run_config(self) -> dict[str, Scalar]:
        own = {key(f.name): getattr(self, f.name) for f in fields(self) if f.name != "config"}
        return {**flat_config(self.config), **own}

    @classmethod
    def run_config_keys(cls) -> set[str]:
        """Every key a fedad run config may hold."""
        return {key(name) for name in PARAMS} | {key(f.name) for f in fields(cls) if f.name != "config"}

    @classmethod
    def from_run_config(cls, run_config: Mapping) -> FlowerSettings:
        """The settings of a run config; missing keys keep the command line's defaults, an unknown
        key or a value out of range is a :class:`UserError` (one line)."""
        unknown = sorted(set(run_config) - cls.run_config_keys())
        if unknown:
            raise UserError(f"Flower run config: unknown key(s) {', '.join(unknown)}; the fedad app knows "
                            f"{', '.join(sorted(cls.run_config_keys()))}")
        config = config_from_flat(run_config, "Flower run config")
        defaults = cls()
        own = {f.name: type(getattr(defaults, f.name))(run_config[key(f.name)])
               for f in fields(cls) if f.name != "config" and key(f.name) in run_config}
        return cls(config=config, **own)


def message_config(settings: FlowerSettings, server_round: int, scaler: Scaler | None = None,
                   threshold: float | None = None) -> ConfigRecord:
    """Everything a client needs to handle one message (no data, no weights): the whole configuration
    (:func:`flat_config`), the round, the held-out share, and the global scaler and threshold if known."""
    record = ConfigRecord({"server-round": int(server_round), "test-fraction": float(settings.test_fraction),
                           **flat_config(settings.config)})
    if scaler is not None:
        record["scaler-mean"] = [float(v) for v in scaler.mean]
        record["scaler-std"] = [float(v) for v in scaler.std]
    if threshold is not None:
        record[THRESHOLD] = float(threshold)
    return record


@dataclass(frozen=True)
class MessageConfig:
    """A client's view of a message's ``ConfigRecord``."""

    server_round: int
    test_fraction: float
    config: FederatedConfig
    scaler: Scaler | None
    threshold: float | None  # the federation's threshold (None: each node's own percentile)

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def threshold_percentile(self) -> float:
        return self.config.threshold_percentile

    @property
    def score_method(self) -> str | None:
        return self.config.score_method

    @property
    def training(self) -> LocalTraining:
        return self.config.local_training()

    def spec(self, input_dim: int) -> ModelSpec:
        return self.config.model_spec(input_dim)


def config_from_message(record: ConfigRecord) -> MessageConfig:
    scaler = None
    if "scaler-mean" in record:
        scaler = Scaler(np.asarray(record["scaler-mean"], dtype=np.float32),
                        np.asarray(record["scaler-std"], dtype=np.float32))
    return MessageConfig(
        server_round=int(record["server-round"]), test_fraction=float(record["test-fraction"]),
        config=config_from_flat(record, "message config"), scaler=scaler,
        threshold=float(record[THRESHOLD]) if THRESHOLD in record else None,
    )
