"""Federated training with FedAvg, and the centralized and local-only baselines, through one API.

A round of :func:`run_federated`:

1. the server samples a fraction of the clients (seeded);
2. each sampled client copies the global weights and trains locally (:func:`~fedad_tutorial.
   training.train_local`); only weights and a row count leave the client;
3. the server averages the weights, weighted by row counts (:func:`fedavg`);
4. every client scores its own training rows (for the threshold) and its held-out test rows
   (for the metrics); a global threshold is set from score histograms, never raw scores.

Feature scaling uses a global scaler built from client summary statistics (or, as an option for
comparison, each client's own). Labels are read only in step 4, on held-out rows.

These rounds are written once, in :func:`federated_rounds`, which reaches the clients through a
:class:`Transport`: :class:`InProcess` here (the loop or the vectorized engine), Flower messages in the
ServerApp (:class:`fedad_tutorial.flower.server_app.FlowerTransport`). The model file's detector is
built once too, by :func:`model_detector`, from counts the clients send. So ``fedad simulate`` and a
Flower deployment cannot drift apart: same checks, same stop on non-finite numbers, same model file.

A Deep SVDD model (``model="svdd"``) first needs its centre: before round 1, each client sends the
sum and count of its training rows' embeddings under the initial weights, and the server divides
(:mod:`fedad_tutorial.center`). Centralized training gets the same centre from the pooled rows;
local-only training, where nothing is shared, gives each client's model its own rows' centre.

>>> from fedad_tutorial.data import make_cloud_federation, train_test_split
>>> splits = [train_test_split(n, 0.3, seed=0) for n in make_cloud_federation(3, 200, 8, seed=0)]
>>> result = run_federated(splits, FederatedConfig(rounds=2, local_epochs=1), progress=False)
>>> sorted(result.history["round"].unique().tolist())
[1, 2]
"""

from __future__ import annotations

import copy
import csv
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fedad_tutorial.center import center_from_sums, embedding_sums
from fedad_tutorial.config import ENGINES, FederatedConfig
from fedad_tutorial.data import Split
from fedad_tutorial.defaults import RECOMMENDED
from fedad_tutorial.detector import Detector
from fedad_tutorial.errors import RowError, UserError
from fedad_tutorial.forest import ForestModel, Trees, grow_trees, shared_max_samples
from fedad_tutorial.metrics import detection_metrics
from fedad_tutorial.models import fixed_buffers
from fedad_tutorial.scaling import FLOAT32_MAX, FeatureStats, Scaler, federated_scaler
from fedad_tutorial.threads import set_threads
from fedad_tutorial.thresholds import (
    ScoreHistogram,
    feature_counts,
    feature_range_from_counts,
    percentile_threshold,
    total_histogram,
)
from fedad_tutorial.training import client_generator, score_rows, train_local
from fedad_tutorial.vectorized import vectorized_engine

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ENGINES", "MODES", "RECOMMENDED", "Aggregator", "FederatedConfig", "FederationResult", "InProcess",
           "ModelFileCounts", "RecordingAggregator", "Transport", "UpdateHook", "check_federation", "client_record",
           "fedavg", "fedavg_aggregator", "federated_rounds", "get_engine", "history_row", "loop_engine",
           "model_detector", "round_means", "run_federated", "sample_clients"]

MODES = ("federated", "centralized", "local")


Records = list[dict]  # a history as rows: one dict per round and client


class FederationResult:
    """What a run returns: the tidy per-round, per-client history and the trained detector(s).

    ``history`` (a pandas table) is built from the run's records when first read, so a program
    that only writes the run folder (``fedad simulate``) never imports pandas.
    """

    def __init__(self, history: pd.DataFrame | Records, detector: Detector | None,
                 client_detectors: dict[str, Detector] | None = None, config: FederatedConfig | None = None):
        self._history = history
        self.detector = detector  # the global model with the global scaler and threshold
        self.client_detectors = client_detectors or {}  # as each client applies it
        self.config = config

    @property
    def history(self) -> pd.DataFrame:
        if isinstance(self._history, list):
            import pandas as pd

            self._history = pd.DataFrame(self._history)
        return self._history

    def records(self) -> Records:
        """The history as rows (one dict per round and client), without pandas if it was never built."""
        history = self._history
        return list(history) if isinstance(history, list) else history.to_dict(orient="records")

    def final_round_records(self) -> Records:
        rows = self.records()
        last = max(r["round"] for r in rows)
        return [r for r in rows if r["round"] == last]

    def final_round(self) -> pd.DataFrame:
        return self.history[self.history["round"] == self.history["round"].max()]

    def summary(self) -> dict:
        """Mean over clients of the final round's metrics (NaN-aware)."""
        return round_means(self.final_round_records())

    def write_history_csv(self, path: str | Path) -> None:
        """Write the history as CSV, as ``history.to_csv(path, index=False)`` writes it: every number exact."""
        rows = self.records()
        columns = list(dict.fromkeys(key for r in rows for key in r))
        with open(path, "w", newline="") as f:
            out = csv.writer(f, lineterminator="\n")
            out.writerow(columns)
            out.writerows([_csv_cell(r.get(c, math.nan)) for c in columns] for r in rows)


#: The history columns averaged over clients in summaries and per-round progress.
SUMMARY_COLUMNS = ("loss", "threshold", "precision", "recall", "f1", "roc_auc", "pr_auc", "fpr")


def round_means(records: pd.DataFrame | Records, columns: Sequence[str] = SUMMARY_COLUMNS) -> dict[str, float]:
    """NaN-aware means over clients of the ``columns`` present in ``records`` (NaN if none is finite);
    ``records`` is a history table or its rows."""
    if isinstance(records, list):
        present = {key for r in records for key in r}
        return {c: _nanmean([r.get(c, math.nan) for r in records]) for c in columns if c in present}
    return {c: _nanmean(records[c]) for c in columns if c in records}


def _csv_cell(value) -> str:
    """A history value as pandas writes it: the shortest text that reads back to the same float (NaN: an empty cell)."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, float | np.floating):
        return "" if math.isnan(value) else repr(float(value))
    return str(value)


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else math.nan


def fedavg(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Average model weights, each client weighted by ``weights`` (its number of training rows)."""
    if not states:
        raise UserError("FedAvg needs at least one client update")
    w = torch.tensor(weights, dtype=torch.float64)
    w = w / w.sum()
    keys = list(states[0])
    weighted = torch.stack([torch.cat([s[k].reshape(-1) for k in keys]) for s in states]).double()
    weighted.mul_(w.unsqueeze(1))  # (clients, all weights)
    total = weighted[0].clone()
    for row in weighted[1:]:  # clients added one at a time, in order: float64 sums that do not depend on batching
        total += row
    pieces = total.split([states[0][k].numel() for k in keys])
    return {k: piece.view(states[0][k].shape).to(states[0][k].dtype) for k, piece in zip(keys, pieces, strict=True)}


# An engine trains the sampled clients of one round from the same global weights and returns,
# per client, its new weights and mean training loss.
Engine = Callable[[nn.Module, list[torch.Tensor], list[int], int, FederatedConfig],
                  list[tuple[dict[str, torch.Tensor], float]]]


# A server-side aggregation rule: (global weights before the round, the clients' new weights, their
# row counts, round) -> the new global weights. FedAvg by default; robust rules and differentially
# private aggregation plug in here (see the advanced chapters).
Aggregator = Callable[[dict[str, torch.Tensor], list[dict[str, torch.Tensor]], list[float], int],
                      dict[str, torch.Tensor]]
# A hook on what a client sends: (client index, its new weights, the global weights, round) -> the
# weights that reach the server. Used to simulate misbehaving clients (model poisoning).
UpdateHook = Callable[[int, dict[str, torch.Tensor], dict[str, torch.Tensor], int], dict[str, torch.Tensor]]


def fedavg_aggregator(global_state: dict[str, torch.Tensor], states: list[dict[str, torch.Tensor]],
                      weights: list[float], round_idx: int) -> dict[str, torch.Tensor]:
    """FedAvg as an :data:`Aggregator` (the default of :func:`run_federated`)."""
    return fedavg(states, weights)


class RecordingAggregator:
    """Wrap an :data:`Aggregator` and keep a copy of the global weights it returns each round.

    ``states[r - 1]`` holds the global weights after round ``r``; pass the wrapper as
    ``run_federated(..., aggregator=recorder)`` and evaluate any round afterwards.
    """

    def __init__(self, aggregator: Aggregator = fedavg_aggregator) -> None:
        self.aggregator = aggregator
        self.states: list[dict[str, torch.Tensor]] = []

    def __call__(self, global_state: dict[str, torch.Tensor], states: list[dict[str, torch.Tensor]],
                 weights: list[float], round_idx: int) -> dict[str, torch.Tensor]:
        new = self.aggregator(global_state, states, weights, round_idx)
        self.states.append({k: v.detach().clone() for k, v in new.items()})
        return new


def loop_engine(global_model: nn.Module, client_rows: list[torch.Tensor], client_ids: list[int],
                round_idx: int, config: FederatedConfig) -> list[tuple[dict[str, torch.Tensor], float]]:
    """Train clients one after another on a copy of the global model (the readable engine)."""
    updates = []
    for rows, cid in zip(client_rows, client_ids, strict=False):
        local = copy.deepcopy(global_model)
        loss = train_local(local, rows, config.local_training(), client_generator(config.seed, round_idx, cid))
        updates.append((local.state_dict(), loss))
    return updates


def get_engine(name: str) -> Engine:
    if name == "loop":
        return loop_engine
    if name == "vectorized":
        return vectorized_engine
    raise UserError(f"engine must be one of {ENGINES}, got {name!r}")


def sample_clients(num_clients: int, fraction: float, seed: int, round_idx: int) -> list[int]:
    """The sorted client indices that train in a round: ``max(1, round(fraction * K))`` of them."""
    k = max(1, int(round(fraction * num_clients)))
    if k >= num_clients:
        return list(range(num_clients))
    rng = np.random.default_rng([int(seed), int(round_idx), 7919])
    return sorted(int(i) for i in rng.choice(num_clients, size=k, replace=False))


def check_federation(names: Sequence[str], columns: Sequence, labelled: Sequence[bool], n_train: Sequence[int],
                     describe: Callable[[int], str] | None = None) -> None:
    """The checks every federation passes before round 1, in one process (:func:`run_federated`) or over
    Flower (the ServerApp, from the nodes' ``query.stats`` replies): at least one client, client names
    that tell them apart, training rows on each, the same feature columns (``columns[k]``: client
    ``k``'s column names, or its number of features) and labels on all clients or none.

    ``describe(k)`` names client ``k`` in an error (default: its name). Raises :class:`UserError`.
    """
    describe = describe or (lambda k: names[k])
    if not names:
        raise UserError("no clients: the federation needs at least one")
    for name in sorted({n for n in names if list(names).count(n) > 1}):
        who = "; ".join(describe(k) for k, n in enumerate(names) if n == name)
        raise UserError(f"two clients are named {name} ({who}); give each its own data file")
    for k, rows in enumerate(n_train):
        if rows < 1:
            raise UserError(f"{describe(k)}: no training rows")
    for k in range(1, len(names)):
        if columns[k] != columns[0]:
            size = [c if isinstance(c, int) else len(c) for c in (columns[k], columns[0])]
            raise UserError(f"{describe(k)}: feature columns differ from {names[0]} ({size[0]} vs {size[1]} "
                            "columns; every client needs the same)")
    if len(set(labelled)) > 1:
        raise UserError("some clients have a 'label' column and some do not")


def _check_splits(splits: Sequence[Split]) -> int:
    """:func:`check_federation` for in-memory splits, plus their values (finite, within float32)."""
    widths = [s.train.shape[1] for s in splits]
    for s in splits:
        if s.test.shape[1] != s.train.shape[1]:
            raise UserError(f"{s.name}: training and test rows have {s.train.shape[1]} and {s.test.shape[1]} features")
    check_federation([s.name for s in splits], widths, [s.test_labels is not None for s in splits],
                     [s.train.shape[0] for s in splits])
    for s in splits:
        for part, rows in (("training", s.train), ("test", s.test)):
            if not (np.abs(rows) <= FLOAT32_MAX).all():
                raise UserError(f"{s.name}: {part} rows contain NaN, infinite or beyond-float32 values")
    return widths[0]


def _scalers(splits: Sequence[Split], scaling: str) -> tuple[Scaler, list[Scaler]]:
    """The global scaler (from client statistics) and the scaler each client applies."""
    global_scaler = federated_scaler([FeatureStats.of(s.train) for s in splits])
    if scaling == "local":
        return global_scaler, [Scaler.fit(s.train) for s in splits]
    return global_scaler, [global_scaler] * len(splits)


def _check_scaled(splits: Sequence[Split], scalers: list[Scaler], names: list[str]) -> None:
    """Refuse rows that standardisation pushes beyond float32 (a value far outside the training range)."""
    for split, scaler in zip(splits, scalers, strict=True):
        for part, rows in (("training", split.train), ("test", split.test)):
            try:
                scaler.transform_checked(rows, names)
            except RowError as exc:
                raise UserError(f"{split.name}: {part} row {exc.row}, column '{exc.column}': {exc.reason}") from None


def run_federated(
    splits: Sequence[Split],
    config: FederatedConfig = FederatedConfig(),
    *,
    mode: str = "federated",
    feature_names: list[str] | None = None,
    progress: bool = True,
    on_round: Callable[[int, Records], None] | None = None,
    aggregator: Aggregator = fedavg_aggregator,
    update_hook: UpdateHook | None = None,
    initial_state: dict[str, torch.Tensor] | None = None,
    threads: int | None = None,
) -> FederationResult:
    """Train a detector over ``splits`` (one per client) and evaluate every round on held-out rows.

    Args:
        splits: each client's training rows and held-out test rows (labels optional).
        config: model, training and threshold settings.
        mode: ``"federated"`` (FedAvg), ``"centralized"`` (all training rows pooled in one place,
            same rounds and epochs, i.e. the same number of passes over every row) or ``"local"``
            (each client trains alone). All three are evaluated on the same held-out rows.
        feature_names: column names stored in the detector (default ``x1..xd``).
        progress: show a progress bar over rounds.
        on_round: called after each round with ``(round, that round's records)`` (one dict per client).
        aggregator: the server's rule to combine client weights (default FedAvg).
        update_hook: applied to each client's weights before they reach the server (e.g. an attack).
        initial_state: start from these weights (e.g. an earlier global model's ``state_dict()``, to
            continue training on new data) instead of a fresh initialisation; same architecture.
        threads: PyTorch's intra-op thread count, set as the command line sets it
            (:func:`~fedad_tutorial.threads.set_threads`: default ``$FEDAD_THREADS``, else 1).

    Returns:
        A :class:`FederationResult` whose ``history`` has one row per round and client.
    """
    if mode not in MODES:
        raise UserError(f"mode must be one of {MODES}, got {mode!r}")
    set_threads(threads)
    dim = _check_splits(splits)
    names = list(feature_names) if feature_names is not None else [f"x{j + 1}" for j in range(dim)]
    if len(names) != dim:
        raise UserError(f"{len(names)} feature names given for {dim} features")
    global_scaler, scalers = _scalers(splits, config.scaling)
    _check_scaled(splits, scalers, names)
    hooks = (aggregator, update_hook, initial_state)
    if mode == "local":
        return _run_local_only(splits, config, names, scalers, progress, on_round, hooks)
    train_rows = [torch.from_numpy(sc.transform(s.train)) for s, sc in zip(splits, scalers, strict=False)]
    if mode == "centralized":
        train_rows = [torch.cat(train_rows)]
    transport = InProcess(train_rows, splits, scalers, global_scaler, config)
    model, history, counts = federated_rounds(transport, config, dim, progress=progress, on_round=on_round,
                                              hooks=hooks, desc=mode)
    detector = model_detector(model, global_scaler, names, config, counts)
    thresholds = {r["client"]: r["threshold"] for r in history if r["round"] == config.rounds}
    client_detectors = {
        s.name: Detector(model, sc, float(thresholds[s.name]), names, config.score_method)
        for s, sc in zip(splits, scalers, strict=False)
    }
    return FederationResult(history, detector, client_detectors, config)


def _run_local_only(splits, config, names, scalers, progress, on_round, hooks) -> FederationResult:
    history, detectors = [], {}
    local_cfg = replace(config, threshold="local", fraction=1.0)
    for k, (split, scaler) in enumerate(zip(splits, scalers, strict=False)):
        transport = InProcess([torch.from_numpy(scaler.transform(split.train))], [split], [scaler], scaler,
                              local_cfg, first_id=k)
        model, hist, _ = federated_rounds(transport, local_cfg, split.train.shape[1], progress=progress,
                                          on_round=on_round, hooks=hooks, desc=f"local {split.name}",
                                          seed_offset=k, model_file=False)
        history.extend(hist)
        detectors[split.name] = Detector(model, scaler, float(hist[-1]["threshold"]), names, config.score_method)
    history.sort(key=lambda r: (r["round"], r["client"]))  # by round, then client name
    return FederationResult(history, None, detectors, config)


# -- the round loop and what it asks of the clients ------------------------------------------------------------

#: What one client sends back from a round of training: its new weights, mean training loss and row count.
Update = tuple[dict[str, torch.Tensor], float, int]
#: What a client reports for a model it evaluated (:func:`client_record`), by client index.
Evaluations = dict[int, dict]


@dataclass
class ModelFileCounts:
    """What the model file needs from the clients for the final weights, as counts on shared bins (never
    rows or scores): each client's training-score histogram and its standardised metrics' counts
    (:func:`~fedad_tutorial.thresholds.feature_counts`), both under the global scaler."""

    histograms: list[ScoreHistogram]
    feature_counts: list[np.ndarray]


class Transport(Protocol):
    """How :func:`federated_rounds` reaches the clients: :class:`InProcess` (``fedad simulate``, every
    notebook) or the Flower ServerApp's messages (:class:`fedad_tutorial.flower.server_app.FlowerTransport`).

    Clients are numbered ``0..len(names) - 1`` (evaluation); ``trainers`` of them train (all of them,
    or one for the pooled rows of centralized training). A transport may lose clients (a node that
    stops answering): its replies then simply lack them.
    """

    names: list[str]  # the evaluating clients, in order
    trainer_names: list[str]  # who trains, as an error names them ("client node_1")

    def center_sums(self, model: nn.Module) -> list[tuple[torch.Tensor, int]]:
        """Each client's embedding sum and row count under ``model`` (Deep SVDD's centre)."""

    def fit(self, model: nn.Module, chosen: list[int], rnd: int) -> dict[int, Update]:
        """The ``chosen`` trainers' updates, each trained from ``model``'s weights, by trainer index."""

    def histograms(self, model: nn.Module, rnd: int) -> list[ScoreHistogram]:
        """The clients' training-score histograms under ``model`` (for a global threshold)."""

    def evaluate(self, model: nn.Module, rnd: int, threshold: float | None, last: bool,
                 report: Callable[[Evaluations], None]) -> None:
        """Have every client evaluate ``model`` at ``threshold`` (``None``: each its own percentile) and
        pass the results to ``report``, at the latest before the next :meth:`fit` returns (a transport
        may send the request with that round's training). ``last``: round ``config.rounds``."""

    def model_file_counts(self, model: nn.Module) -> ModelFileCounts:
        """:class:`ModelFileCounts` of the final ``model`` (after ``evaluate(..., last=True)``)."""

    def train_counts(self) -> list[int]:
        """Each trainer's number of training rows (the forest's shared sub-sample size needs the smallest)."""

    def trees(self, chosen: list[int], n_trees: int, max_samples: int, rnd: int) -> dict[int, Trees]:
        """The ``chosen`` trainers' isolation trees (:func:`~fedad_tutorial.forest.grow_trees` on their own
        scaled training rows, ``seed = config.seed +`` the trainer's client index), by trainer index."""


def federated_rounds(transport: Transport, config: FederatedConfig, dim: int, *, progress: bool = False,
                     on_round: Callable[[int, Records], None] | None = None,
                     hooks: tuple[Aggregator, UpdateHook | None, dict[str, torch.Tensor] | None] = (
                         fedavg_aggregator, None, None),
                     desc: str = "federated", seed_offset: int = 0, model_file: bool = True,
                     ) -> tuple[nn.Module, Records, ModelFileCounts | None]:
    """The one round loop of every run, in one process or over Flower: initial weights (and Deep SVDD's
    centre), then per round sample, train (``transport.fit``), check, aggregate, evaluate; returns the
    final model, the history and (``model_file``) the counts :func:`model_detector` needs.

    Initial weights come from ``torch.manual_seed(config.seed + seed_offset)``; round ``r`` trains the
    trainers :func:`sample_clients` picks with that seed, so a run depends only on its configuration.
    """
    aggregator, update_hook, initial_state = hooks
    trainers = len(transport.trainer_names)
    records: Records = []
    bar = tqdm(range(1, config.rounds + 1), desc=desc, unit="round", disable=not progress, leave=False)

    def report(rnd: int, evaluations: Evaluations, losses: dict[int, float]) -> None:
        rows = [history_row(rnd, transport.names[k], trainer in losses, losses.get(trainer, math.nan), evaluations[k])
                for k in sorted(evaluations) for trainer in [k if trainers == len(transport.names) else 0]]
        records.extend(rows)
        if progress:
            means = round_means(rows, ("loss", "f1"))
            bar.set_postfix({"loss": f"{means['loss']:.4f}", **({"f1": f"{means['f1']:.3f}"} if "f1" in means else {})})
        if on_round is not None:
            on_round(rnd, rows)

    def evaluate(model: nn.Module, rnd: int, losses: dict[int, float]) -> None:
        threshold = None
        if config.threshold == "global":
            threshold = total_histogram(transport.histograms(model, rnd)).quantile(config.threshold_percentile)
        transport.evaluate(model, rnd, threshold, rnd == config.rounds, functools.partial(report, rnd, losses=losses))

    if config.model == "iforest":  # one round: every client grows its trees, the server pools them
        model = grow_forest(transport, config, dim, 1)
        evaluate(model, 1, {i: math.nan for i in range(trainers)})  # no loss: NaN, shown as '-'
        bar.close()
        return model, records, transport.model_file_counts(model) if model_file else None

    torch.manual_seed(config.seed + seed_offset)
    model = config.model_spec(dim).build().eval()
    if initial_state is not None:
        try:
            model.load_state_dict(initial_state)
        except RuntimeError as exc:
            raise UserError(f"initial_state does not fit the configured model: {str(exc).splitlines()[0]}") from None
    elif config.model == "svdd":  # the centre, from the initial weights, before any step
        with torch.no_grad():
            model.center.copy_(center_from_sums(*zip(*transport.center_sums(model), strict=True)))
    losses: dict[int, float] = {}
    fixed = fixed_buffers(model)

    for rnd in bar:
        chosen = sample_clients(trainers, config.fraction, config.seed + seed_offset, rnd)
        updates = transport.fit(model, chosen, rnd)
        for i, (state, loss, _) in updates.items():  # before any hook: the client's own work
            _check_finite(config, rnd, transport.trainer_names[i], loss, state)
        global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        states = [state for state, _, _ in updates.values()]
        if update_hook is not None:
            states = [update_hook(i, state, global_state, rnd) for i, state in zip(updates, states, strict=True)]
        new_state = aggregator(global_state, states, [rows for _, _, rows in updates.values()], rnd)
        new_state = {**new_state, **fixed}
        _check_finite(config, rnd, "the server (aggregation)", 0.0, new_state)
        model.load_state_dict(new_state)
        losses = {i: loss for i, (_, loss, _) in updates.items()}
        if config.model == "ensemble" and rnd == config.rounds:  # the forest joins the last round's model
            model = ensemble_of(transport, config, model, grow_forest(transport, config, dim, rnd), rnd)
        evaluate(model, rnd, losses)
    return model, records, transport.model_file_counts(model) if model_file else None


def grow_forest(transport: Transport, config: FederatedConfig, dim: int, rnd: int) -> ForestModel:
    """The forest's one round, in one process or over Flower: every trainer grows
    ``config.trees_per_client`` trees on its own training rows with one shared sub-sample size
    (:func:`~fedad_tutorial.forest.shared_max_samples`), the server pools them in client order."""
    psi = shared_max_samples(config.max_samples, transport.train_counts())
    parts = transport.trees(list(range(len(transport.trainer_names))), config.trees_per_client, psi, rnd)
    for i, part in parts.items():
        try:
            part.check(dim)
        except ValueError as exc:
            raise UserError(f"{transport.trainer_names[i]} sent trees that are not a forest ({exc})") from None
        if part.max_samples != psi or part.n_trees != config.trees_per_client:
            raise UserError(f"{transport.trainer_names[i]} sent {part.n_trees} trees on {part.max_samples} rows; "
                            f"asked for {config.trees_per_client} on {psi}")
    return ForestModel(dim, Trees.pool([parts[i] for i in sorted(parts)]))


def ensemble_of(transport: Transport, config: FederatedConfig, ae: nn.Module, forest: ForestModel,
                rnd: int) -> nn.Module:
    """``--model ensemble``'s model: the trained autoencoder and the forest, each calibrated on the federation's
    histogram of its training scores (:meth:`~fedad_tutorial.ensemble.EnsembleModel.calibrated`)."""
    from fedad_tutorial.ensemble import EnsembleModel

    return EnsembleModel.calibrated(ae, forest, [total_histogram(transport.histograms(part, rnd))
                                                 for part in (ae, forest)])


def model_detector(model: nn.Module, scaler: Scaler, feature_names: list[str], config: FederatedConfig,
                   counts: ModelFileCounts) -> Detector:
    """The one builder of a model file's detector, whichever way it was trained: the final weights, the global
    scaler, the federation's training-score histogram and its percentile as the threshold, and each metric's
    1st-99th percentile over the federation's training rows (raw units), from the clients' counts."""
    histogram = total_histogram(counts.histograms)
    feature_range = feature_range_from_counts(sum(counts.feature_counts[1:], counts.feature_counts[0]))
    return Detector(model, scaler, histogram.quantile(config.threshold_percentile), feature_names,
                    config.score_method, histogram, scaler.mean + feature_range * scaler.std)


def history_row(rnd: int, client: str, selected: bool, loss: float, evaluation: dict) -> dict:
    """One client's history row for a round: what the server knows (round, client, whether it trained and its
    loss) around what the client reported (:func:`client_record`), in the history's column order."""
    first = {"round": rnd, "client": client, "n_train": evaluation["n_train"], "n_test": evaluation["n_test"],
             "selected": bool(selected), "loss": float(loss)}
    return {**first, **{k: v for k, v in evaluation.items() if k not in first}}


def client_record(split: Split, train_scores: np.ndarray, test_scores: np.ndarray, threshold: float | None,
                  percentile: float) -> dict:
    """What a client reports about a model it evaluated: its row counts, the threshold (the federation's, or
    with ``threshold=None`` the ``percentile`` of its own training scores), its alarm rate and, with labels,
    the metrics on its held-out rows. Computed where the rows are: in :class:`InProcess`, or on a Flower node."""
    if threshold is None:
        threshold = percentile_threshold(train_scores, percentile)
    record = {"n_train": int(split.train.shape[0]), "n_test": int(split.test.shape[0]),
              "threshold": float(threshold), "alarm_rate": float((test_scores > threshold).mean())}
    if split.test_labels is not None:
        record.update(detection_metrics(split.test_labels, test_scores, threshold))
    return record


def diverged(config: FederatedConfig, rnd: int, where: str, what: str) -> UserError:
    """The error of a run whose numbers stopped being finite, with the settings to lower."""
    advice = f"lower the learning rate (--lr, now {config.lr:g})"
    if config.model == "vae":
        advice += f" or the KL weight (--beta, now {config.beta:g})"
    return UserError(f"training diverged: {what} at round {rnd} on {where}; {advice}")


def _check_finite(config: FederatedConfig, rnd: int, where: str, loss: float,
                  state: dict[str, torch.Tensor]) -> None:
    """Stop a diverging run at the round it diverged, not later with a puzzling empty threshold."""
    if not math.isfinite(loss):
        raise diverged(config, rnd, where, f"the loss became {loss}")
    floats = {name: t for name, t in state.items() if t.is_floating_point()}
    if floats and torch.isfinite(torch.cat([t.reshape(-1) for t in floats.values()])).all():
        return  # one check for the whole model; the loop below only names the culprit
    for name, tensor in floats.items():
        if not torch.isfinite(tensor).all():
            raise diverged(config, rnd, where,
                           f"the weights ({name}) became NaN or infinite")


_SCORE_ROWS = 16384  # rows per scoring pass: fewer passes for many small clients, bounded memory


class _EvaluationRows:
    """Each client's training and test rows, scaled once: a run scores the same rows every round."""

    def __init__(self, splits: Sequence[Split], scalers: list[Scaler]) -> None:
        self.shared = all(sc is scalers[0] for sc in scalers)
        if self.shared:  # one table, cut back into clients after scoring
            parts = [rows for split in splits for rows in (split.train, split.test)]
            self.rows = torch.from_numpy(scalers[0].transform(np.concatenate(parts)))
            self.bounds = np.cumsum([len(p) for p in parts])[:-1]
        else:
            self.pairs = [(torch.from_numpy(sc.transform(s.train)), torch.from_numpy(sc.transform(s.test)))
                          for s, sc in zip(splits, scalers, strict=True)]

    def scores(self, model: nn.Module, method: str | None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each client's (training, test) scores. Clients that share one scaler are scored together,
        in passes of up to ``_SCORE_ROWS`` concatenated rows: scores are per row, so splitting them
        back is exact."""
        if self.shared:
            scores = torch.cat([score_rows(model, chunk, method) for chunk in self.rows.split(_SCORE_ROWS)]).numpy()
            pieces = np.split(scores, self.bounds)
            return list(zip(pieces[0::2], pieces[1::2], strict=True))
        return [(score_rows(model, train, method).numpy(), score_rows(model, test, method).numpy())
                for train, test in self.pairs]


class InProcess:
    """The clients of :func:`run_federated`, in this process: training by the configured engine (the loop
    or the vectorized one), scoring every client's rows in a few batched passes.

    ``train_rows``: each trainer's scaled training rows (one table for centralized training);
    ``splits``/``scalers``: each evaluating client's rows and the scaler it applies. Trainer ``i``
    trains with client index ``first_id + i`` (which seeds its batches)."""

    def __init__(self, train_rows: list[torch.Tensor], splits: Sequence[Split], scalers: list[Scaler],
                 global_scaler: Scaler, config: FederatedConfig, first_id: int = 0) -> None:
        self.train_rows, self.splits, self.config, self.first_id = train_rows, splits, config, first_id
        self.global_scaler, self.scalers = global_scaler, scalers
        self.names = [s.name for s in splits]
        self.trainer_names = ([f"client {s.name}" for s in splits] if len(splits) == len(train_rows)
                              else ["the pooled training rows"])
        self.engine = get_engine(config.engine)
        self.rows = _EvaluationRows(splits, scalers)
        self._scored: tuple[int, nn.Module, list[tuple[np.ndarray, np.ndarray]]] | None = None  # (round, model, scores)

    def center_sums(self, model: nn.Module) -> list[tuple[torch.Tensor, int]]:
        return [embedding_sums(model, rows) for rows in self.train_rows]

    def fit(self, model: nn.Module, chosen: list[int], rnd: int) -> dict[int, Update]:
        updates = self.engine(model, [self.train_rows[i] for i in chosen], [i + self.first_id for i in chosen],
                              rnd, self.config)
        return {i: (state, loss, int(self.train_rows[i].shape[0])) for i, (state, loss) in zip(chosen, updates,
                                                                                                strict=True)}

    def _scores(self, model: nn.Module, rnd: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Round ``rnd``'s scores of ``model``, computed once for its threshold and its evaluation."""
        if self._scored is None or self._scored[0] != rnd or self._scored[1] is not model:
            self._scored = (rnd, model, self.rows.scores(model, self.config.score_method if model.spec.kind ==
                                                         self.config.model else None))
        return self._scored[2]

    def histograms(self, model: nn.Module, rnd: int) -> list[ScoreHistogram]:
        return [ScoreHistogram.of(train) for train, _ in self._scores(model, rnd)]

    def evaluate(self, model: nn.Module, rnd: int, threshold: float | None, last: bool,
                 report: Callable[[Evaluations], None]) -> None:
        percentile = self.config.threshold_percentile
        report({k: client_record(split, train, test, threshold, percentile)
                for k, (split, (train, test)) in enumerate(zip(self.splits, self._scores(model, rnd), strict=True))})

    def model_file_counts(self, model: nn.Module) -> ModelFileCounts:
        if (self.rows.shared and self.scalers[0] is self.global_scaler and self._scored is not None
                and self._scored[1] is model):
            scores = self._scored[2]  # the last evaluation's: the final model, the global scaler
        else:
            scores = _EvaluationRows(self.splits, [self.global_scaler] * len(self.splits)).scores(
                model, self.config.score_method)
        return ModelFileCounts([ScoreHistogram.of(train) for train, _ in scores],
                               [feature_counts(self.global_scaler.transform(s.train)) for s in self.splits])

    def train_counts(self) -> list[int]:
        return [int(rows.shape[0]) for rows in self.train_rows]

    def trees(self, chosen: list[int], n_trees: int, max_samples: int, rnd: int) -> dict[int, Trees]:
        return {i: grow_trees(self.train_rows[i].numpy(), n_trees, max_samples, self.config.seed + self.first_id + i)
                for i in chosen}
