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
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fedad_tutorial.center import federated_center
from fedad_tutorial.config import ENGINES, FederatedConfig
from fedad_tutorial.data import Split
from fedad_tutorial.defaults import RECOMMENDED
from fedad_tutorial.detector import Detector
from fedad_tutorial.errors import RowError, UserError
from fedad_tutorial.metrics import detection_metrics
from fedad_tutorial.models import fixed_buffers
from fedad_tutorial.scaling import FLOAT32_MAX, FeatureStats, Scaler, federated_scaler
from fedad_tutorial.threads import set_threads
from fedad_tutorial.thresholds import (
    ScoreHistogram,
    federated_feature_range,
    federated_histogram,
    federated_percentile,
    percentile_threshold,
)
from fedad_tutorial.training import client_generator, score_rows, train_local
from fedad_tutorial.vectorized import vectorized_engine

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ENGINES", "MODES", "RECOMMENDED", "Aggregator", "FederatedConfig", "FederationResult",
           "RecordingAggregator", "UpdateHook", "client_record", "fedavg", "fedavg_aggregator", "get_engine",
           "loop_engine", "round_means", "run_federated", "sample_clients"]

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


def _check_splits(splits: Sequence[Split]) -> int:
    if not splits:
        raise UserError("no clients: the federation needs at least one")
    dims = {s.train.shape[1] for s in splits} | {s.test.shape[1] for s in splits}
    if len(dims) != 1:
        raise UserError(f"clients disagree on the number of features: {sorted(dims)}")
    for s in splits:
        if s.train.shape[0] < 1:
            raise UserError(f"{s.name}: no training rows")
        for part, rows in (("training", s.train), ("test", s.test)):
            if not (np.abs(rows) <= FLOAT32_MAX).all():
                raise UserError(f"{s.name}: {part} rows contain NaN, infinite or beyond-float32 values")
    return dims.pop()


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
    models, history = _train(train_rows, splits, scalers, config, dim, progress, on_round, hooks,
                             desc=mode)
    model = models[0]
    thresholds = {r["client"]: r["threshold"] for r in history if r["round"] == config.rounds}
    histogram = _global_histogram(model, splits, global_scaler, config)
    feature_range = federated_feature_range([global_scaler.transform(s.train) for s in splits])
    detector = Detector(model, global_scaler, histogram.quantile(config.threshold_percentile), names,
                        config.score_method, histogram, global_scaler.mean + feature_range * global_scaler.std)
    client_detectors = {
        s.name: Detector(model, sc, float(thresholds[s.name]), names, config.score_method)
        for s, sc in zip(splits, scalers, strict=False)
    }
    return FederationResult(history, detector, client_detectors, config)


def _run_local_only(splits, config, names, scalers, progress, on_round, hooks) -> FederationResult:
    history, detectors = [], {}
    local_cfg = replace(config, threshold="local", fraction=1.0)
    for k, (split, scaler) in enumerate(zip(splits, scalers, strict=False)):
        rows = [torch.from_numpy(scaler.transform(split.train))]
        models, hist = _train(rows, [split], [scaler], local_cfg, split.train.shape[1], progress,
                              on_round, hooks, desc=f"local {split.name}", seed_offset=k)
        history.extend(hist)
        detectors[split.name] = Detector(models[0], scaler, float(hist[-1]["threshold"]), names,
                                         config.score_method)
    history.sort(key=lambda r: (r["round"], r["client"]))  # by round, then client name
    return FederationResult(history, None, detectors, config)


def _train(train_rows: list[torch.Tensor], eval_splits: Sequence[Split], scalers: list[Scaler],
           config: FederatedConfig, dim: int, progress: bool, on_round,
           hooks: tuple[Aggregator, UpdateHook | None, dict[str, torch.Tensor] | None], desc: str,
           seed_offset: int = 0) -> tuple[list[nn.Module], Records]:
    """The round loop shared by every mode: sample, train locally, aggregate (FedAvg), evaluate."""
    aggregator, update_hook, initial_state = hooks
    torch.manual_seed(config.seed + seed_offset)
    model = config.model_spec(dim).build().eval()
    if initial_state is not None:
        try:
            model.load_state_dict(initial_state)
        except RuntimeError as exc:
            raise UserError(f"initial_state does not fit the configured model: {str(exc).splitlines()[0]}") from None
    elif config.model == "svdd":  # the centre, from the initial weights, before any step
        with torch.no_grad():
            model.center.copy_(federated_center(model, train_rows))
    engine = get_engine(config.engine)
    sizes = [int(r.shape[0]) for r in train_rows]
    client_names = ([f"client {s.name}" for s in eval_splits] if len(eval_splits) == len(train_rows)
                    else ["the pooled training rows"])
    records: list[dict] = []
    evaluation_rows = _EvaluationRows(eval_splits, scalers)
    fixed = fixed_buffers(model)
    bar = tqdm(range(1, config.rounds + 1), desc=desc, unit="round", disable=not progress, leave=False)
    for rnd in bar:
        chosen = sample_clients(len(train_rows), config.fraction, config.seed + seed_offset, rnd)
        updates = engine(model, [train_rows[i] for i in chosen], [i + seed_offset for i in chosen],
                         rnd, config)
        for i, (state, loss) in zip(chosen, updates, strict=True):  # before any hook: the client's own work
            _check_finite(config, rnd, client_names[i], loss, state)
        global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        states = [u[0] for u in updates]
        if update_hook is not None:
            states = [update_hook(i, state, global_state, rnd) for i, state in zip(chosen, states, strict=True)]
        new_state = aggregator(global_state, states, [sizes[i] for i in chosen], rnd)
        new_state = {**new_state, **fixed}
        _check_finite(config, rnd, "the server (aggregation)", 0.0, new_state)
        model.load_state_dict(new_state)
        losses = {i: u[1] for i, u in zip(chosen, updates, strict=False)}
        round_records = _evaluate(model, eval_splits, evaluation_rows, config, rnd, losses, len(train_rows))
        records.extend(round_records)
        if progress:
            means = round_means(round_records, ("loss", "f1"))
            bar.set_postfix({"loss": f"{means['loss']:.4f}", **({"f1": f"{means['f1']:.3f}"} if "f1" in means else {})})
        if on_round is not None:
            on_round(rnd, round_records)
    return [model], records


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


def _global_histogram(model: nn.Module, splits: Sequence[Split], scaler: Scaler,
                      config: FederatedConfig) -> ScoreHistogram:
    """The clients' training-score counts on the shared bins, summed: the saved threshold's percentile,
    and kept in the model file so another percentile can be chosen when scoring."""
    scores = _EvaluationRows(splits, [scaler] * len(splits)).scores(model, config.score_method)
    return federated_histogram([tr for tr, _ in scores])


def _evaluate(model: nn.Module, splits: Sequence[Split], rows: _EvaluationRows, config: FederatedConfig,
              rnd: int, losses: dict[int, float], num_trainers: int) -> list[dict]:
    """Per-client records for one round: threshold from training scores, metrics on test rows."""
    scores = rows.scores(model, config.score_method)
    if config.threshold == "global":
        shared = federated_percentile([tr for tr, _ in scores], config.threshold_percentile)
        thresholds = [shared] * len(splits)
    else:
        thresholds = [percentile_threshold(tr, config.threshold_percentile) for tr, _ in scores]
    records = []
    for k, (split, (_train_scores, test_scores), thr) in enumerate(zip(splits, scores, thresholds, strict=False)):
        trainer = k if num_trainers == len(splits) else 0
        records.append(client_record(split, test_scores, thr, rnd, trainer in losses,
                                     losses.get(trainer, math.nan)))
    return records


def client_record(split: Split, test_scores: np.ndarray, threshold: float, rnd: int, selected: bool,
                  loss: float) -> dict:
    """One client's history row for a round: the threshold, alarm rate and metrics on its held-out rows.

    Shared by :func:`run_federated` and the Flower ``ClientApp`` (which evaluates on its own node).
    """
    record = {
        "round": rnd, "client": split.name, "n_train": int(split.train.shape[0]),
        "n_test": int(split.test.shape[0]), "selected": bool(selected),
        "loss": loss, "threshold": float(threshold),
        "alarm_rate": float((test_scores > threshold).mean()),
    }
    if split.test_labels is not None:
        record.update(detection_metrics(split.test_labels, test_scores, threshold))
    return record
