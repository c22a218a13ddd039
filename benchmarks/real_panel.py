"""The command line's default detector on a panel of real tables (ADBench "Classical"), against the baselines.

Usage::

    nice -n 10 python benchmarks/real_panel.py DATA_DIR                      # the panel: 17 data sets, seeds 0-2
    python benchmarks/real_panel.py DATA_DIR --datasets 14_glass 42_WBC --seeds 0   # a quick look
    python benchmarks/real_panel.py DATA_DIR --candidates default sized ensemble --no-cli --name candidates
    nice -n 10 python benchmarks/real_panel.py DATA_DIR --max-train 10000 --models ae iforest ensemble --rules \
        --name real_panel_models                                            # the README's "Which model"

``DATA_DIR`` holds ADBench ``.npz`` files (arrays ``X`` and ``y``, 1 = anomaly). The protocol is
ADBench's for unsupervised detectors: per seed a stratified 70/30 split, every method fits on the
training part without labels (its anomalies stay in), and ROC-AUC and PR-AUC (average precision)
are measured on the test part. A training part above ``--max-train`` rows is randomly subsampled
to that many (said in the output); the test part is always whole.

The federation: 5 clients, non-IID. The standardised training rows are grouped into 5 k-means
clusters (seeded), client ``k`` gets cluster ``k``, then every row moves with probability
:data:`MIX` to a uniformly chosen other client (so about a fifth of each client's rows come from
the others); a client left with fewer than :data:`MIN_CLIENT_ROWS` rows is topped up with random
rows of the largest client.

Columns:

- ``fedad``: the command line with every default, as a user runs it: the clients' training rows
  written as node CSVs, ``fedad simulate`` (it keeps 30 % of each CSV back for its per-round table),
  then ``fedad score`` on the test rows, both through :func:`fedad_tutorial.cli.main` in this
  process (the code of the command, without a start-up per call). F1 and alarm rate at the model's
  saved threshold (the ``is_anomaly`` column) and at the 99th percentile of the federation's
  training scores (the model's histogram, as ``fedad score --percentile 99``);
- ``fedad --model M`` (``--models``): the same with ``--model M`` (``iforest``: chapter 07's federated forest,
  ``ensemble``: the AE and the forest, see :func:`fedad_tutorial.ensemble.combine`);
- ``IF central`` / ``PCA`` / ``norm``: :mod:`fedad_tutorial.chapters.baselines` on the pooled training rows
  (PCA: reconstruction error with ``min(3, d - 1)`` components);
- ``IF federated``: :class:`~fedad_tutorial.chapters.forest.FederatedIsolationForest` as chapter 07 builds it
  (100 trees per client, 128-row sub-samples, pooled trees);
- ``rule:NAME`` (``--rules``): the default AE and chapter 07's forest trained once through the library, alone
  and combined by each of :data:`ENSEMBLE_RULES` (how ``--model ensemble``'s rule was chosen);
- ``--candidates``: changes to the default measured through the library
  (:func:`~fedad_tutorial.federated.run_federated` on the clients' rows held out as ``simulate``
  does), named ``cand:NAME`` (see :data:`CANDIDATES`).

Writes ``OUT/NAME.csv`` (one row per data set, seed and method), ``OUT/NAME.md`` (tables) and
``OUT/NAME.png`` (per-data-set ROC-AUC), and prints a line per data set and seed, then the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from fedad_tutorial.chapters.baselines import IsolationForestBaseline, NormBaseline, PCABaseline
from fedad_tutorial.chapters.forest import FederatedIsolationForest
from fedad_tutorial.chapters.panel import BASELINES, candidate_table, markdown_table, per_dataset, read_runs, wins
from fedad_tutorial.config import FederatedConfig
from fedad_tutorial.data import NodeData, hold_out
from fedad_tutorial.defaults import SIMULATE
from fedad_tutorial.metrics import average_precision, detection_metrics, roc_auc
from fedad_tutorial.params import MODEL_KINDS
from fedad_tutorial.partition import load_npz
from fedad_tutorial.scaling import Scaler

CLIENTS = 5
#: Probability that a training row leaves its k-means cluster's client for a random other client.
MIX = 0.2
#: Rows every client holds at least (``fedad simulate`` keeps 30 % of them back).
MIN_CLIENT_ROWS = 8
TEST_FRACTION = 0.3
DEFAULT_MAX_TRAIN = 50_000
#: The budget rule reported beside the saved threshold: this percentile of the training scores.
BUDGET_PERCENTILE = 99.0
#: Tukey's fences on the training scores, ``Q3 + k * IQR``: thresholds that follow the scores' spread, not a share.
FENCES = {"fence1.5": 1.5, "fence3": 3.0}
#: Threshold rules of the F1 tables, in order.
RULES = ("default", "p99", *FENCES)


def fence_thresholds(quantile: Callable[[float], float]) -> dict[str, float]:
    """The :data:`FENCES` thresholds from a function giving the training scores' percentiles."""
    q1, q3 = quantile(25.0), quantile(75.0)
    return {name: q3 + k * (q3 - q1) for name, k in FENCES.items()}
FEDAD = "fedad"


def cli_method(model: str) -> str:
    """The column of ``fedad simulate --model model`` (``fedad`` alone for the default, ``ae``)."""
    return FEDAD if model == SIMULATE.model else f"{FEDAD} --model {model}"


# --- protocol pieces --------------------------------------------------------------------------------------------


def stratified_split(labels: np.ndarray, seed: int, test_fraction: float = TEST_FRACTION
                     ) -> tuple[np.ndarray, np.ndarray]:
    """ADBench's split: training and test row indices (sorted), each class divided ``1 - f : f``."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(labels)), test_size=test_fraction, stratify=labels,
                                   random_state=seed, shuffle=True)
    return np.sort(train), np.sort(test)


def subsample(indices: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
    """At most ``max_rows`` of ``indices``, drawn at random without looking at labels (sorted)."""
    if max_rows is None or len(indices) <= max_rows:
        return indices
    return np.sort(np.random.default_rng(seed).choice(indices, size=max_rows, replace=False))


def noniid_clients(features: np.ndarray, clients: int = CLIENTS, mix: float = MIX, seed: int = 0,
                   min_rows: int = MIN_CLIENT_ROWS) -> list[np.ndarray]:
    """Each client's row indices (sorted): k-means profiles, mixed (see the module doc)."""
    from sklearn.cluster import KMeans

    n = features.shape[0]
    if n < clients * min_rows:
        raise ValueError(f"{n} rows cannot give {clients} clients {min_rows} rows each")
    scaled = Scaler.fit(features).transform(features)
    k = min(clients, len(np.unique(scaled, axis=0)))
    owner = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(scaled).astype(np.int64)
    rng = np.random.default_rng(seed)
    moved = rng.random(n) < mix
    owner[moved] = (owner[moved] + rng.integers(1, clients, size=int(moved.sum()))) % clients
    for c in range(clients):
        short = min_rows - int((owner == c).sum())
        if short > 0:
            largest = int(np.argmax(np.bincount(owner, minlength=clients)))
            owner[rng.choice(np.flatnonzero(owner == largest), size=short, replace=False)] = c
    return [np.flatnonzero(owner == c) for c in range(clients)]


@dataclass
class Fold:
    """One data set and seed: the clients' training rows and the labelled test rows."""

    dataset: str
    seed: int
    clients: list[np.ndarray]
    test: np.ndarray
    test_labels: np.ndarray
    train_rows_full: int  # training rows before subsampling

    @property
    def train(self) -> np.ndarray:
        return np.concatenate(self.clients)

    @property
    def dim(self) -> int:
        return int(self.test.shape[1])


def make_fold(name: str, features: np.ndarray, labels: np.ndarray, seed: int, max_train: int | None) -> Fold:
    train, test = stratified_split(labels, seed)
    kept = subsample(train, max_train, seed)
    rows = features[kept].astype(np.float32)
    parts = noniid_clients(rows, seed=seed)
    return Fold(name, seed, [rows[p] for p in parts], features[test].astype(np.float32), labels[test].astype(int),
                len(train))


# --- methods -----------------------------------------------------------------------------------------------------


def _metrics(labels: np.ndarray, scores: np.ndarray, thresholds: dict[str, float] | None = None) -> dict:
    out = {"roc_auc": roc_auc(labels, scores), "pr_auc": average_precision(labels, scores)}
    for key, thr in (thresholds or {}).items():
        m = detection_metrics(labels, scores, thr)
        out[f"f1_{key}"] = m["f1"]
        out[f"alarms_{key}"] = float((np.asarray(scores) > thr).mean())
    return out


def command_line(fold: Fold, *flags: str) -> dict:
    """``fedad simulate`` (every default, plus ``flags``) on the clients' node CSVs, then ``fedad score`` on the
    test rows, in a temporary folder; the scores' metrics, F1 at the saved threshold (the ``is_anomaly``
    column) and at the budget percentile, and the wall time of ``simulate``."""
    from fedad_tutorial.cli import main as fedad
    from fedad_tutorial.csvio import write_node_csv, write_node_folder
    from fedad_tutorial.detector import Detector

    names = [f"x{j + 1}" for j in range(fold.dim)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        nodes = [NodeData(f"node_{k + 1}", rows, names) for k, rows in enumerate(fold.clients)]
        write_node_folder(root / "train", nodes)
        write_node_csv(root / "test.csv", NodeData("test", fold.test, names, fold.test_labels))
        simulate = ["simulate", "--data-dir", str(root / "train"), "--output-dir", str(root / "run"), "--quiet",
                    "--no-figure", *flags]
        score = ["score", "--model", str(root / "run" / "model.pt"), "--data", str(root / "test.csv"),
                 "--output", str(root / "scores.csv"), "--quiet"]
        with contextlib.redirect_stdout(io.StringIO()):
            start = time.perf_counter()
            _fedad(fedad, simulate)
            seconds = time.perf_counter() - start
            _fedad(fedad, score)
        table = pd.read_csv(root / "scores.csv")
        histogram = Detector.load(root / "run" / "model.pt").score_histogram
        thresholds = {"p99": histogram.quantile(BUDGET_PERCENTILE), **fence_thresholds(histogram.quantile)}
    scores = table["score"].to_numpy(np.float64)
    flags_saved = table["is_anomaly"].to_numpy(bool)
    saved = detection_metrics(fold.test_labels, flags_saved.astype(float), 0.5)
    out = _metrics(fold.test_labels, scores, thresholds)
    return {**out, "f1_default": saved["f1"], "alarms_default": float(flags_saved.mean()), "seconds": seconds}


def _fedad(fedad: Callable[[list[str]], int], command: list[str]) -> None:
    if (code := fedad(command)) != 0:
        raise RuntimeError(f"fedad {' '.join(command)} exited with {code}")


def baselines(fold: Fold) -> dict[str, dict]:
    """The non-neural methods on this fold (pooled training rows, or the clients' rows for the federated forest)."""
    train, test, labels = fold.train, fold.test, fold.test_labels
    fits = {"IF central": lambda: IsolationForestBaseline(fold.seed).fit(train),
            "IF federated": lambda: FederatedIsolationForest(trees_per_client=100, max_samples=128,
                                                             seed=fold.seed).fit(fold.clients),
            "PCA": lambda: PCABaseline(min(3, fold.dim - 1)).fit(train),
            "norm": lambda: NormBaseline().fit(train)}
    out = {}
    for name, fit in fits.items():
        start = time.perf_counter()
        scores = fit().decision_function(test)
        out[name] = {**_metrics(labels, scores), "seconds": time.perf_counter() - start}
    return out


# --- candidate defaults, measured through the library -------------------------------------------------------------


def sized_model(dim: int) -> dict:
    """Model size from the input width: a bottleneck strictly below it (``latent = clamp(ceil(d/4), 1, 10)``)."""
    latent = min(10, max(1, math.ceil(dim / 4)))
    return {"hidden": (min(64, max(4, 2 * dim)), min(32, max(2, dim))), "latent_dim": latent}


def sized_model_half(dim: int) -> dict:
    """Model size from the input width, wider code: ``latent = clamp(d // 2, 1, 10)``."""
    latent = min(10, max(1, dim // 2))
    return {"hidden": (min(64, max(4, 2 * dim)), min(32, max(2, dim))), "latent_dim": latent}


@dataclass(frozen=True)
class Candidate:
    """A change to the default: the configuration for ``d`` features, the score added to the AE's (robust z-sum:
    ``"norm"``, ``"forest"`` the federated isolation forest, or ``"latent"`` the Mahalanobis distance of the AE's
    code; ``"forest_max"``: the larger of the AE's and a smaller federated forest's ranks among the training
    scores), whether every value is first clipped to the federation's mean ± ``clip`` standard deviations, and whether
    every feature is first mapped through the federation's quantiles (:func:`quantile_map`); both pre-processings
    the detector would have to repeat on new rows."""

    describe: str
    config: Callable[[int], FederatedConfig]
    ensemble: str | None = None
    clip: float | None = None
    quantile: bool = False


def _with(make: Callable[[int], dict] | None = None, **fields) -> Callable[[int], FederatedConfig]:
    return lambda dim: replace(SIMULATE, **fields, **(make(dim) if make else {}))


CANDIDATES: dict[str, Candidate] = {
    "default": Candidate("today's default through the library (should match `fedad`)", _with()),
    "trim0": Candidate("no trimming", _with(trim=0.0)),
    "trim05": Candidate("trim 0.05", _with(trim=0.05)),
    "trim20": Candidate("trim 0.2", _with(trim=0.2)),
    "sized": Candidate("hidden (min(64,2d), min(32,d)), latent clamp(ceil(d/4),1,10)", _with(sized_model)),
    "sized_half": Candidate("hidden (min(64,2d), min(32,d)), latent clamp(d//2,1,10)", _with(sized_model_half)),
    "ensemble": Candidate("default AE + norm, robust z-sum (training median/IQR)", _with(), ensemble="norm"),
    "sized_ensemble": Candidate("sized + norm z-sum", _with(sized_model), ensemble="norm"),
    "sized_half_ensemble": Candidate("sized_half + norm z-sum", _with(sized_model_half), ensemble="norm"),
    "clip5": Candidate("values clipped to mean ± 5 std (federated scaler)", _with(), clip=5.0),
    "clip10": Candidate("values clipped to mean ± 10 std (federated scaler)", _with(), clip=10.0),
    "sized_clip5": Candidate("sized + clip 5", _with(sized_model), clip=5.0),
    "clip5_ensemble": Candidate("clip 5 + norm z-sum", _with(), ensemble="norm", clip=5.0),
    "sized_clip5_ensemble": Candidate("sized + clip 5 + norm z-sum", _with(sized_model), ensemble="norm", clip=5.0),
    "forest_ensemble": Candidate("default AE + federated isolation forest, robust z-sum", _with(),
                                 ensemble="forest"),
    "quantile": Candidate("each feature mapped to [0, 1] through the federation's 256 quantiles", _with(),
                          quantile=True),
    "latent_ensemble": Candidate("default AE + Mahalanobis distance of its code, robust z-sum", _with(),
                                 ensemble="latent"),
    "forest_max": Candidate("default AE + federated forest (50 trees per client), the larger of the two training "
                            "ranks", _with(), ensemble="forest_max"),
    "sized_trim0": Candidate("sized, no trimming", _with(sized_model, trim=0.0)),
    "sized_trim0_ensemble": Candidate("sized, no trimming, + norm z-sum", _with(sized_model, trim=0.0),
                                      ensemble="norm"),
}


def clip_bounds(clients: Sequence[np.ndarray], k: float) -> tuple[np.ndarray, np.ndarray]:
    """Each feature's mean ± ``k`` standard deviations from the clients' summary statistics (the global scaler)."""
    from fedad_tutorial.scaling import FeatureStats, federated_scaler

    scaler = federated_scaler([FeatureStats.of(rows) for rows in clients])
    return scaler.mean - k * scaler.std, scaler.mean + k * scaler.std


def quantile_map(clients: Sequence[np.ndarray], levels: int = 256) -> Callable[[np.ndarray], np.ndarray]:
    """Each feature through its empirical distribution function, from ``levels`` quantiles of the clients' rows
    (pooled here; a federation would read them from per-feature histograms on shared bins, as
    :func:`~fedad_tutorial.thresholds.federated_feature_range` does). Ties get the middle of their range."""
    grid = np.linspace(0.0, 1.0, levels)
    quantiles = np.quantile(np.concatenate(clients).astype(np.float64), grid, axis=0)

    def transform(rows: np.ndarray) -> np.ndarray:
        out = np.empty(rows.shape, dtype=np.float32)
        for j in range(rows.shape[1]):
            low = np.interp(rows[:, j], quantiles[:, j], grid)
            high = 1.0 - np.interp(-rows[:, j], -quantiles[::-1, j], grid)
            out[:, j] = 0.5 * (low + high)
        return out

    return transform


def latent_distance(detector, client_rows: Sequence[np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """The squared Mahalanobis distance of a row's code (the AE's encoder output) from the codes of the clients'
    rows: mean and covariance from per-client sums of codes and of their outer products (pooled here)."""
    import torch

    def codes(rows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return detector.model.encode(detector.scaled(rows)).numpy().astype(np.float64)

    train = np.concatenate([codes(rows) for rows in client_rows])
    mean = train.mean(axis=0)
    precision = np.linalg.pinv(np.cov(train, rowvar=False))

    def distance(rows: np.ndarray) -> np.ndarray:
        centred = codes(rows) - mean
        return np.einsum("ij,jk,ik->i", centred, precision, centred)

    return distance


def training_rank(train_scores: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A score's rank among the training scores, in [0, 1] (the share of training scores at or below it); pooled
    here, a federation would read it from the score histogram it already sums for the threshold."""
    ordered = np.sort(np.asarray(train_scores, dtype=np.float64))
    return lambda scores: np.searchsorted(ordered, scores, side="right") / len(ordered)


def candidate(fold: Fold, name: str) -> dict:
    """Train candidate ``name`` on the clients' rows (held out as ``fedad simulate`` does) and score the test rows.

    F1 at the 95th (the saved threshold's percentile) and the 99th percentile of the pooled training scores
    (exact percentiles: the ensemble's score can be negative, off the histogram's bins).
    """
    from ensemble import RobustCalibration, squared_norm, z_sum

    from fedad_tutorial.federated import run_federated
    from fedad_tutorial.thresholds import federated_histogram

    spec = CANDIDATES[name]
    config = spec.config(fold.dim)
    names = [f"x{j + 1}" for j in range(fold.dim)]
    clients, test = fold.clients, fold.test
    start = time.perf_counter()
    if spec.clip is not None:
        low, high = clip_bounds(clients, spec.clip)
        clients, test = [np.clip(rows, low, high) for rows in clients], np.clip(test, low, high)
    if spec.quantile:
        transform = quantile_map(clients)
        clients, test = [transform(rows) for rows in clients], transform(test)
    splits = hold_out([NodeData(f"node_{k + 1}", rows, names) for k, rows in enumerate(clients)],
                      TEST_FRACTION, config.seed)
    detector = run_federated(splits, config, progress=False).detector
    seconds = time.perf_counter() - start
    train_rows = np.concatenate([s.train for s in splits])
    test_scores, train_scores = detector.decision_function(test), detector.decision_function(train_rows)
    second = None  # the score combined with the AE's, if any
    if spec.ensemble == "norm":
        second = partial(squared_norm, detector.scaler)
    elif spec.ensemble == "latent":
        second = latent_distance(detector, [s.train for s in splits])
    elif spec.ensemble in ("forest", "forest_max"):
        trees = 50 if spec.ensemble == "forest_max" else 100
        forest = FederatedIsolationForest(trees_per_client=trees, max_samples=128, seed=fold.seed)
        second = forest.fit([s.train for s in splits]).decision_function
    if second is not None:
        if spec.ensemble != "norm":  # a fitted second score is part of the training time
            seconds = time.perf_counter() - start
        client_second = [second(s.train) for s in splits]
        train_second, test_second = np.concatenate(client_second), second(test)
        if spec.ensemble == "forest_max":
            ranks = [training_rank(train_scores), training_rank(train_second)]
            test_scores = np.maximum(ranks[0](test_scores), ranks[1](test_second))
            train_scores = np.maximum(ranks[0](train_scores), ranks[1](train_second))
        else:
            calibrations = [RobustCalibration.of(detector.score_histogram),
                            RobustCalibration.of(federated_histogram(client_second))]
            test_scores = z_sum([test_scores, test_second], calibrations)
            train_scores = z_sum([train_scores, train_second], calibrations)
    thresholds = {"default": float(np.percentile(train_scores, config.threshold_percentile)),
                  "p99": float(np.percentile(train_scores, BUDGET_PERCENTILE)),
                  **fence_thresholds(lambda q: float(np.percentile(train_scores, q)))}
    return {**_metrics(fold.test_labels, test_scores, thresholds), "seconds": seconds}


# --- combination rules of the AE + forest ensemble, measured through the library -----------------------------------

#: Rules that combine the default AE's score with the federated forest's into one, each score first calibrated on
#: the federation's training-score histogram (no parameter fitted to labels). Chosen before the panel was run.
ENSEMBLE_RULES: dict[str, str] = {
    "mean_z": "mean of the two robust z-scores, (score - median) / IQR of the training scores",
    "max_z": "the larger of the two robust z-scores",
    "mean_rank": "mean of the two training percentiles (share of the training scores below, from the histogram)",
    "max_rank": "the larger of the two training percentiles",
}


def histogram_rank(histogram, scores: np.ndarray) -> np.ndarray:
    """Each score's share of the training scores below it, in [0, 1], read from the federation's histogram
    (linear inside a bin; 1 above the largest training score): the calibration a rank rule needs."""
    from fedad_tutorial.thresholds import bin_edges

    cumulative = np.concatenate([[0.0], np.cumsum(histogram.counts)]) / histogram.total
    return np.interp(np.asarray(scores, dtype=np.float64), bin_edges(), cumulative)


def combine(rule: str, pair: Sequence[np.ndarray], histograms: Sequence) -> np.ndarray:
    """The ensemble score of rule ``rule`` (see :data:`ENSEMBLE_RULES`) from two detectors' scores and the
    histograms of their training scores."""
    from fedad_tutorial.ensemble import RobustCalibration

    if rule.endswith("_z"):
        calibrated = [RobustCalibration.of(h).z(s) for s, h in zip(pair, histograms, strict=True)]
    else:
        calibrated = [histogram_rank(h, s) for s, h in zip(pair, histograms, strict=True)]
    return np.mean(calibrated, axis=0) if rule.startswith("mean") else np.max(calibrated, axis=0)


def ensemble_rules(fold: Fold) -> dict[str, dict]:
    """The default AE (as ``fedad simulate`` trains it: :data:`SIMULATE`, 30 % of each client's rows held out)
    and chapter 07's federated forest (100 trees per client, 128-row sub-samples) on the same clients' training
    rows, alone (``rule:ae``, ``rule:iforest``) and combined by every rule of :data:`ENSEMBLE_RULES`
    (``rule:NAME``); each trained once, the rules scored from the same scores. Time: AE training, forest
    fitting, their sum for the rules."""
    from fedad_tutorial.federated import run_federated
    from fedad_tutorial.thresholds import federated_histogram

    names = [f"x{j + 1}" for j in range(fold.dim)]
    splits = hold_out([NodeData(f"node_{k + 1}", rows, names) for k, rows in enumerate(fold.clients)],
                      TEST_FRACTION, SIMULATE.seed)
    start = time.perf_counter()
    detector = run_federated(splits, SIMULATE, progress=False).detector
    ae_seconds = time.perf_counter() - start
    start = time.perf_counter()
    forest = FederatedIsolationForest(trees_per_client=100, max_samples=128, seed=SIMULATE.seed)
    forest.fit([s.train for s in splits])
    forest_seconds = time.perf_counter() - start
    scorers = (detector.decision_function, forest.decision_function)
    histograms = [federated_histogram([score(s.train) for s in splits]) for score in scorers]
    test = [score(fold.test) for score in scorers]
    out = {"rule:ae": {**_metrics(fold.test_labels, test[0]), "seconds": ae_seconds},
           "rule:iforest": {**_metrics(fold.test_labels, test[1]), "seconds": forest_seconds}}
    for rule in ENSEMBLE_RULES:
        out[f"rule:{rule}"] = {**_metrics(fold.test_labels, combine(rule, test, histograms)),
                               "seconds": ae_seconds + forest_seconds}
    return out


# --- the panel and its tables -------------------------------------------------------------------------------------


def run_panel(paths: Sequence[Path], seeds: Sequence[int], max_train: int | None, candidates: Sequence[str] = (),
              models: Sequence[str] = (SIMULATE.model,), rules: bool = False, say: Callable[[str], None] = print
              ) -> pd.DataFrame:
    """One row per data set, seed and method: ``dataset, seed, method, roc_auc, pr_auc, f1_*, alarms_*, seconds,
    train_rows, train_rows_full``."""
    rows = []
    for i, path in enumerate(paths, start=1):
        table = load_npz(path)
        for seed in seeds:
            start = time.perf_counter()
            fold = make_fold(path.stem, table.features, table.labels, seed, max_train)
            results = baselines(fold)
            for model in models:
                results[cli_method(model)] = command_line(
                    fold, *(() if model == SIMULATE.model else ("--model", model)))
            for name in candidates:
                results[f"cand:{name}"] = candidate(fold, name)
            if rules:
                results.update(ensemble_rules(fold))
            for method, values in results.items():
                rows.append({"dataset": fold.dataset, "seed": seed, "method": method, **values,
                             "train_rows": len(fold.train), "train_rows_full": fold.train_rows_full})
            shown = " ".join(f"{m}={v['roc_auc']:.3f}" for m, v in results.items())
            sub = f", training subsampled {fold.train_rows_full}->{len(fold.train)}" \
                if len(fold.train) < fold.train_rows_full else ""
            say(f"[{i}/{len(paths)}] {fold.dataset} seed {seed} ({time.perf_counter() - start:.0f} s{sub}): {shown}")
    return pd.DataFrame(rows)


def frame_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """Any table as markdown, floats with ``digits`` decimals."""
    def cell(value) -> str:
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|---" * len(frame.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def machine() -> str:
    """The CPU, its core count and the load average (timings on a shared machine are inflated)."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, load average {load} (1/5/15 min)"


def plot(roc: pd.DataFrame, path: Path, methods: Sequence[str], title: str) -> None:
    """Per data set ROC-AUC of ``methods`` as a dot plot, saved to ``path``."""
    from fedad_tutorial.plots import plot_panel

    plot_panel(roc, methods, title).savefig(path, dpi=110)


def versus_forest(results: pd.DataFrame) -> pd.DataFrame:
    """One row per method: mean ROC-AUC over data sets (each the mean over seeds), the spread of that mean over
    seeds (std of the per-seed means), the worst data set's difference to the central isolation forest and its
    name, data sets won against it, mean PR-AUC and mean seconds per run (one data set and seed)."""
    roc, _ = per_dataset(results, "roc_auc")
    pr, _ = per_dataset(results, "pr_auc")
    by_seed = results.groupby(["method", "seed"])["roc_auc"].mean().unstack()
    seconds = results.groupby("method")["seconds"].mean()
    rows = []
    for method in roc.columns:
        gap = roc[method] - roc["IF central"]
        rows.append({"method": method, "roc_auc": roc[method].mean(), "seed_std": by_seed.loc[method].std(),
                     "worst_vs_IF": gap.min(), "worst_table": gap.idxmin(), "wins_vs_IF": int((gap > 0).sum()),
                     "pr_auc": pr[method].mean(), "seconds": seconds[method]})
    return pd.DataFrame(rows)


def report(results: pd.DataFrame, header: str, timing: pd.DataFrame | None = None) -> str:
    """The markdown page: every method against the central forest, ROC-AUC, PR-AUC, F1 tables, wins, cost and
    (if any) the candidates' summary."""
    roc, roc_std = per_dataset(results, "roc_auc")
    pr, pr_std = per_dataset(results, "pr_auc")
    parts = [header, "## Against the central isolation forest\n",
             "Means over data sets; `seed_std`: std over seeds of the mean over data sets; `worst_vs_IF`: the "
             "largest shortfall of a data set's mean ROC-AUC below the central forest's (`worst_table`); "
             "`seconds`: mean wall time per data set and seed (the baselines: fit and scoring; `fedad`: "
             "`simulate`; `rule:*`: training).\n",
             frame_markdown(versus_forest(results)),
             "\n## ROC-AUC (mean ± std over seeds)\n", markdown_table(roc, roc_std),
             "\n## PR-AUC (average precision)\n", markdown_table(pr, pr_std)]
    neural = [m for m in roc.columns if m not in BASELINES]
    for method in neural:
        won, below = wins(roc, method)
        parts.append(f"\n`{method}` beats the central isolation forest on {won} of {len(roc)} data sets "
                     f"(ROC-AUC), is more than 0.05 below it on {below}; mean ROC-AUC {roc[method].mean():.3f} vs "
                     f"{roc['IF central'].mean():.3f} (IF central), {roc['norm'].mean():.3f} (norm).")
    f1_cols = [f"{kind}_{rule}" for rule in RULES for kind in ("f1", "alarms") if f"f1_{rule}" in results]
    if neural and f1_cols:
        parts.append("\n## F1 and alarm rate on the test part: saved threshold (95th percentile of the "
                     f"federation's training scores), {BUDGET_PERCENTILE:g}th percentile, Tukey's fences "
                     f"Q3 + k IQR of the training scores (k = {', '.join(f'{k:g}' for k in FENCES.values())})\n")
        rate = results.groupby("dataset")["test_rate"].first() if "test_rate" in results else None
        for method in (m for m in neural if results.loc[results["method"] == m, f1_cols].notna().any(axis=None)):
            sub = results[results["method"] == method]
            table = sub.groupby("dataset")[f1_cols].mean().loc[roc.index]
            if rate is not None:
                table.insert(0, "anomaly rate (%)", 100 * rate.loc[roc.index])
            parts += [f"\n`{method}`\n", markdown_table(table)]
    cost = results.groupby("method")["seconds"].sum()
    parts.append("\n## Cost\n\nWall time summed over data sets and seeds (training for the neural methods, "
                 "`fedad simulate` for `fedad`):\n")
    parts.append("\n".join(f"- `{m}`: {cost[m]:.0f} s" for m in neural) + "\n")
    if any(m.startswith("cand:") for m in roc.columns):
        table = candidate_table(results, timing=timing)
        parts += ["\n## Candidates (means over data sets; time ratio vs `cand:default`)\n",
                  frame_markdown(table)]
    return "\n".join(parts)


# --- the README's "Which model" block, from the command line's run of the panel ---------------------------------

#: The lines around README.md's "Which model" block (:func:`which_model` writes what goes between them).
WHICH_BEGIN = "<!-- which model: begin (generated by `python benchmarks/real_panel.py --which-model`) -->"
WHICH_END = "<!-- which model: end -->"
#: The run the block is generated from (``--models ae iforest ensemble``, see the module's usage).
MODELS_RUN = Path(__file__).parent / "results" / "real_panel_models.csv"
#: The command line's models the block compares, in its order.
WHICH_MODELS = ("ae", "iforest", "ensemble")


def which_model(results: pd.DataFrame) -> str:
    """README.md's "Which model" block: the command line's models on the panel against the central forest
    (mean ROC-AUC and its spread over seeds, worst data set, PR-AUC, ``simulate``'s time) and, in words,
    which model leads on each measure and on which data sets each is the best of the three."""
    columns = {cli_method(m): m for m in WHICH_MODELS if cli_method(m) in set(results["method"])}
    table = versus_forest(results).set_index("method")
    models = table.loc[list(columns)]
    n = results["dataset"].nunique()
    lines = [f"| `--model` | mean ROC-AUC ± spread over seeds | worst data set vs central forest | data sets "
             f"ahead of it (of {n}) | mean PR-AUC | seconds per `simulate` |", "| --- | --- | --- | --- | --- | --- |"]
    for method, model in columns.items():
        row = table.loc[method]
        lines.append(f"| `{model}` | {row.roc_auc:.3f} ± {row.seed_std:.3f} | {row.worst_vs_IF:+.3f} "
                     f"(`{row.worst_table}`) | {row.wins_vs_IF} | {row.pr_auc:.3f} | {row.seconds:.1f} |")
    forest = table.loc["IF central"]
    lines.append(f"| isolation forest on the pooled rows (not federated: the reference) | {forest.roc_auc:.3f} ± "
                 f"{forest.seed_std:.3f} | | | {forest.pr_auc:.3f} | |")
    name = lambda method: f"`{columns[method]}`"  # noqa: E731
    lines += ["", f"Highest mean ROC-AUC: {name(models['roc_auc'].idxmax())}; smallest shortfall on its worst "
              f"data set: {name(models['worst_vs_IF'].idxmax())}; highest mean PR-AUC: "
              f"{name(models['pr_auc'].idxmax())}; quickest: {name(models['seconds'].idxmin())}."]
    roc, _ = per_dataset(results[results["method"].isin(list(columns))])
    best = roc.idxmax(axis=1)
    parts = []
    for method in columns:
        tables = [d.split("_", 1)[-1] for d in roc.index[best == method]]
        parts.append(f"{name(method)} on {len(tables)}" + (f" ({', '.join(tables)})" if tables else ""))
    lines.append(f"Best of the {len(columns)} on a data set (its mean ROC-AUC over the seeds; a tie goes to the first "
                 f"listed): {'; '.join(parts)}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, nargs="?", help="folder with the ADBench .npz files")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=None, help="file stems (default: every .npz)")
    parser.add_argument("--max-train", type=int, default=DEFAULT_MAX_TRAIN,
                        help="subsample larger training parts to this many rows (0: never)")
    parser.add_argument("--candidates", nargs="*", default=[], choices=sorted(CANDIDATES), metavar="NAME",
                        help=f"candidate defaults to measure: {', '.join(CANDIDATES)}")
    parser.add_argument("--rules", action="store_true",
                        help="the AE + forest ensemble's combination rules (rule:NAME columns, see ENSEMBLE_RULES)")
    parser.add_argument("--models", nargs="+", default=[SIMULATE.model], choices=MODEL_KINDS, metavar="MODEL",
                        help=f"the command line's models to run ({', '.join(MODEL_KINDS)}; default: "
                             f"{SIMULATE.model}, the `fedad` column)")
    parser.add_argument("--no-cli", dest="cli", action="store_false", help="skip the command line's columns")
    parser.add_argument("--tables-from", type=Path, nargs="+", default=None, metavar="CSV",
                        help="no run: the tables of earlier runs' CSVs, merged (the first file's row wins)")
    parser.add_argument("--plot", nargs="+", default=None, metavar="METHOD",
                        help="methods in the figure (default: IF central, norm, fedad and up to 3 candidates)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default="real_panel", help="output file stem")
    parser.add_argument("--which-model", action="store_true",
                        help=f"no run: print README.md's 'Which model' block from {MODELS_RUN.name}")
    args = parser.parse_args(argv)
    if args.which_model:
        print(WHICH_BEGIN, which_model(pd.read_csv(MODELS_RUN)), WHICH_END, sep="\n")
        return 0
    command = f"python benchmarks/real_panel.py {' '.join(argv if argv is not None else sys.argv[1:])}"
    before = machine()
    timing = None
    if args.tables_from:
        timing = read_runs(args.tables_from)
        results = timing.drop_duplicates(["dataset", "seed", "method"])
        header = (f"# Real-data panel: ADBench Classical data sets, merged runs\n\nProduced by `{command}` from "
                  f"{', '.join(f'`{p.name}`' for p in args.tables_from)} (protocol, machine and load: their .md "
                  f"files).\n\n")
    else:
        if args.data_dir is None:
            parser.error("give DATA_DIR (or --tables-from)")
        results, header = _run(args, command, before)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.tables_from:
        results.to_csv(args.out / f"{args.name}.csv", index=False, float_format="%.5g")
    text = report(results, header, timing)
    (args.out / f"{args.name}.md").write_text(text)
    roc, _ = per_dataset(results)
    shown = args.plot or ["IF central", "norm"] + [m for m in roc.columns if m.startswith(FEDAD)] \
        + [m for m in roc.columns if m.startswith("cand:")][:3]
    seeds = sorted(results["seed"].unique())
    plot(roc, args.out / f"{args.name}.png", shown,
         f"ADBench Classical, {CLIENTS} non-IID clients, seeds {', '.join(map(str, seeds))}\n"
         + ("merged runs (machines and loads: their reports)" if args.tables_from else before))
    print(text)
    return 0


def _run(args: argparse.Namespace, command: str, before: str) -> tuple[pd.DataFrame, str]:
    """The panel of ``args``: its results and the report's header (protocol, subsampling, machine)."""
    from fedad_tutorial.threads import set_threads

    set_threads(None)
    paths = sorted(args.data_dir.glob("*.npz"), key=lambda p: int(p.stem.split("_")[0]) if p.stem[0].isdigit() else 0)
    if args.datasets:
        paths = [p for p in paths if p.stem in args.datasets]
    if not paths:
        raise SystemExit(f"no matching .npz in {args.data_dir}")
    max_train = args.max_train or None
    start = time.perf_counter()
    results = run_panel(paths, args.seeds, max_train, args.candidates, args.models if args.cli else (), args.rules,
                        say=lambda line: print(line, flush=True))
    rates = {p.stem: float(load_npz(p).labels.mean()) for p in paths}
    results["test_rate"] = results["dataset"].map(rates)
    subsampled = results.loc[results["train_rows"] < results["train_rows_full"], "dataset"].unique()
    models = args.models if args.cli and args.models != [SIMULATE.model] else []  # the default run: no subtitle
    what = ([f"the command line's --model {', '.join(models)}"] if models else []) + \
        (["the ensemble's candidate rules"] if args.rules else []) + \
        ([f"candidates {', '.join(args.candidates)}"] if args.candidates else [])
    header = (f"# Real-data panel: ADBench Classical data sets{': ' + '; '.join(what) if what else ''}\n\n"
              f"Produced by `{command}` in "
              f"{time.perf_counter() - start:.0f} s.\n\n"
              f"Protocol: stratified 70/30 split per seed (seeds {', '.join(map(str, args.seeds))}); every method fits "
              f"on the training part without labels; ROC-AUC and PR-AUC on the test part. Federation: {CLIENTS} "
              f"non-IID clients (k-means profiles of the standardised training rows, each row moved to a random "
              f"other client with probability {MIX}). `fedad` = `fedad simulate` + `fedad score` with every "
              f"default (`fedad --model M`: the same with `--model M`). Training parts subsampled to {max_train} rows: "
              f"{', '.join(subsampled) if len(subsampled) else 'none'}.\n\n"
              f"Machine: {before} at the start; {machine()} at the end (shared: timings are inflated).\n\n")
    return results, header

if __name__ == "__main__":
    sys.exit(main())
