"""Explaining alarms: which metrics made a row anomalous.

An autoencoder's score is the mean over features of the squared reconstruction error, so the
score splits exactly into one term per metric: :func:`feature_errors`. The metrics with the
largest terms are the explanation an operator reads (:func:`top_features`); dividing each term by
the metric's typical error on normal (training) rows makes metrics that are always hard to
reconstruct stop dominating (``baseline=``). :func:`gradient_x_input` is a second attribution
(the score's gradient times the scaled input), for comparison.

:func:`score_contributions` is the additive split of *any* detector's score (autoencoder, VAE by
reconstruction or by ELBO) that ``fedad score --explain`` writes, and :func:`normal_range` the
range of each metric that a model file alone can tell (no training rows travel with it).

To *measure* explanations, :func:`perturbed_metrics` says which metrics each injected anomaly
type of :func:`~fedad_tutorial.data.make_cloud_federation` actually changed. The generator does not
record its perturbed columns, so they are recovered from the generator's own rules (evaluation
only, never for training or scoring):

- ``level_shift``: its fixed group (``latency_p50_ms, latency_p99_ms, db_latency_ms, iowait_pct,
  queue_depth``), exact;
- ``flatline``: the metrics that read exactly zero (a normal metric never does), exact;
- ``spike``: the metrics more than ``spike_z`` of the node's normal standard deviations above the
  node's normal mean (the generator adds 6-10), an estimate;
- ``correlation_break``: the side of the system that was made busy or idle changes almost every
  metric, so it is the group of metrics driven mainly by web traffic or batch compute (a loose
  check, documented as such).

>>> import torch
>>> from fedad_tutorial.detector import Detector
>>> from fedad_tutorial.models import ModelSpec
>>> from fedad_tutorial.scaling import Scaler
>>> torch.manual_seed(0) and None
>>> rows = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
>>> det = Detector(ModelSpec("ae", 5, (8,), 2).build(), Scaler.fit(rows), 1.0, list("abcde"))
>>> bool(np.allclose(feature_errors(det, rows).mean(axis=1), det.decision_function(rows), atol=1e-6))
True
>>> top_features(np.array([[0.1, 3.0, 0.2], [5.0, 0.0, 1.0]]), k=2).tolist()
[[1, 2], [0, 2]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from fedad_tutorial.data import FACTORS, LEVEL_SHIFT_METRICS, metric_catalog
from fedad_tutorial.detector import Detector
from fedad_tutorial.errors import UserError
from fedad_tutorial.models import kl_rows

if TYPE_CHECKING:  # pandas and Matplotlib are imported where tables and figures are made
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: z of the 1st and 99th percentiles of a normal distribution: :func:`normal_range`'s default width.
Z_99 = 2.326


def check_reconstruction(detector: Detector, what: str, source: str = "the model") -> None:
    """Raise :class:`UserError` unless ``detector`` reconstructs its input (an autoencoder or a VAE).

    A Deep SVDD score is a distance between embeddings, a forest's a path length through trees whose
    splits depend on one another, and an ensemble's holds a forest's: none splits into one term per
    metric, so ``what`` (an explanation) has nothing honest to show for them.
    """
    why = {"svdd": "Deep SVDD (svdd), whose score is a distance between embeddings",
           "iforest": "an isolation forest (iforest), whose score is a path length through trees",
           "ensemble": "an ensemble (ensemble), whose score holds an isolation forest's path length"}
    if detector.spec.kind in why:
        raise UserError(f"{what}: per-feature contributions need a reconstruction model (ae or vae); {source} is "
                        f"{why[detector.spec.kind]}, not a sum over metrics")


@torch.no_grad()
def feature_errors(detector: Detector, rows: np.ndarray) -> np.ndarray:
    """Squared reconstruction error per row and metric, in scaled units, shape ``(rows, features)``.

    For an autoencoder (and a VAE scored by ``"reconstruction"``) the row mean equals
    ``detector.decision_function(rows)``: the errors are an exact decomposition of the score.
    """
    check_reconstruction(detector, "reconstruction errors")
    scaled = detector.scaled(rows)
    detector.model.eval()
    return ((detector.model(scaled) - scaled) ** 2).numpy().astype(np.float64)


@torch.no_grad()
def score_contributions(detector: Detector, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's score split into one term per metric and a term no metric owns: ``(terms, latent)``,
    shapes ``(rows, features)`` and ``(rows,)``, with ``terms.sum(axis=1) + latent`` equal to
    ``detector.decision_function(rows)`` for every model type and score method.

    - score ``"reconstruction"`` (autoencoder, VAE): the mean squared error over the ``d`` metrics, so
      metric ``j`` owns ``error_j / d`` and ``latent`` is 0;
    - score ``"elbo"`` (VAE): ``sum_j error_j / 2 + beta * KL``, so metric ``j`` owns ``error_j / 2``
      and ``latent`` is ``beta * KL``, the price of the row's unusual latent code.
    """
    errors = feature_errors(detector, rows)
    if detector.score_method == "reconstruction":
        return errors / errors.shape[1], np.zeros(len(errors))
    # the KL term of VAE's ELBO score, as the model computes it (z = mu, as in its score)
    kl = kl_rows(*detector.model.encode(detector.scaled(rows)))
    return errors / 2.0, detector.spec.beta * kl.numpy().astype(np.float64)


def normal_range(detector: Detector, z: float = Z_99) -> tuple[np.ndarray, np.ndarray]:
    """Each metric's normal range in raw units as the model file knows it (it holds no training rows):
    the 1st-99th percentile of the federation's training rows that training stored
    (``detector.feature_range``, from per-metric counts on shared bins), or, for a model file without
    it, the federation's mean plus or minus ``z`` standard deviations (its scaler: the 1st-99th
    percentile of a normal distribution with those moments). Notebook 12's table uses a client's own
    rows instead."""
    if detector.feature_range is not None:
        return np.asarray(detector.feature_range[0], np.float64), np.asarray(detector.feature_range[1], np.float64)
    mean = np.asarray(detector.scaler.mean, dtype=np.float64)
    std = np.asarray(detector.scaler.std, dtype=np.float64)
    return mean - z * std, mean + z * std


def gradient_x_input(detector: Detector, rows: np.ndarray) -> np.ndarray:
    """Gradient of each row's score with respect to its scaled input, times that input.

    A first-order attribution: positive where a metric's value pushes the score up. Unlike
    :func:`feature_errors` it does not sum to the score.
    """
    x = detector.scaled(rows).requires_grad_(True)
    detector.model.eval()
    detector.model.score(x, detector.score_method).sum().backward()
    return (x.grad * x).detach().numpy().astype(np.float64)


def top_features(errors: np.ndarray, k: int = 3, baseline: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` metrics with the largest errors per row, largest first, shape ``(rows, k)``.

    ``baseline``: each metric's typical error on normal rows (e.g. the mean of
    :func:`feature_errors` on training rows); errors are divided by it before ranking, so a metric
    is ranked by how unusual its error is, not by how large.
    """
    e = np.atleast_2d(np.asarray(errors, dtype=np.float64))
    if baseline is not None:
        e = e / np.maximum(np.asarray(baseline, dtype=np.float64), 1e-12)
    if not 1 <= k <= e.shape[1]:
        raise UserError(f"k must be between 1 and {e.shape[1]}, got {k}")
    return np.argsort(-e, axis=1, kind="stable")[:, :k]


def traffic_compute_metrics(feature_names: Sequence[str]) -> set[int]:
    """Indices of the metrics whose largest factor loading is web traffic or batch compute."""
    catalog = metric_catalog(len(feature_names))
    main = catalog[list(FACTORS)].idxmax(axis=1)
    return {j for j, name in enumerate(feature_names) if main[name] in ("web_traffic", "batch_compute")}


def perturbed_metrics(row: np.ndarray, kind: str, feature_names: Sequence[str], normal_mean: np.ndarray,
                      normal_std: np.ndarray, spike_z: float = 5.0) -> set[int]:
    """The metrics an anomaly of type ``kind`` changed in a raw ``row`` (see the module doc).

    ``normal_mean`` / ``normal_std``: the node's normal rows' per-metric mean and std (evaluation only).
    """
    row = np.asarray(row, dtype=np.float64)
    if kind == "level_shift":
        return {j for j, name in enumerate(feature_names) if name in LEVEL_SHIFT_METRICS}
    if kind == "flatline":
        return set(np.flatnonzero(row == 0.0).tolist())
    if kind == "spike":
        z = (row - np.asarray(normal_mean)) / np.maximum(np.asarray(normal_std), 1e-12)
        return set(np.flatnonzero(z > spike_z).tolist())
    if kind == "correlation_break":
        return traffic_compute_metrics(feature_names)
    raise UserError(f"no perturbed metrics for row type {kind!r}")


def hit_rate(top: np.ndarray, truths: Sequence[set[int]]) -> float:
    """Share of rows whose top metrics include at least one of their truly perturbed metrics.

    Rows with an empty truth set are left out (NaN if none is left).
    """
    hits = [bool(set(np.asarray(t).tolist()) & truth) for t, truth in zip(top, truths, strict=True) if truth]
    return float(np.mean(hits)) if hits else float("nan")


def precision_at_k(top: np.ndarray, truths: Sequence[set[int]]) -> float:
    """Mean share of each row's top metrics that were truly perturbed (rows with a truth set only)."""
    shares = [len(set(np.asarray(t).tolist()) & truth) / len(t)
              for t, truth in zip(top, truths, strict=True) if truth]
    return float(np.mean(shares)) if shares else float("nan")


def chance_hit_rate(num_features: int, truth_size: int, k: int) -> float:
    """Probability that ``k`` metrics drawn at random include at least one of ``truth_size`` perturbed ones.

    ``1 - C(d - t, k) / C(d, k)``: the hit rate of an explanation that knows nothing.

    >>> round(chance_hit_rate(30, 3, 3), 4)
    0.2796
    """
    from math import comb

    if not (0 <= truth_size <= num_features and 1 <= k <= num_features):
        raise UserError(f"need 0 <= truth_size <= num_features and 1 <= k <= num_features, "
                        f"got {truth_size}, {num_features}, {k}")
    return 1.0 - comb(num_features - truth_size, k) / comb(num_features, k)


def alarm_table(detector: Detector, row: np.ndarray, normal_rows: np.ndarray | None, k: int = 5,
                baseline: np.ndarray | None = None, quantiles: tuple[float, float] = (1.0, 99.0)) -> pd.DataFrame:
    """What an operator reads for one alarm: its ``k`` top metrics, their values and normal ranges.

    Columns: ``metric``, ``value`` (raw units), ``normal_low`` / ``normal_high`` (the ``quantiles``
    of the metric over ``normal_rows``, e.g. the client's own training rows; with ``normal_rows=None``
    the model's own :func:`normal_range`), ``error`` (squared reconstruction error, scaled units) and,
    with a ``baseline``, ``relative_error`` (``error / baseline``, the ranking then). ``fedad score``'s
    report uses :meth:`fedad_tutorial.scoring.Explainer.table` instead: the CSV's columns.
    """
    import pandas as pd

    row = np.asarray(row, dtype=np.float64).reshape(1, -1)
    errors = feature_errors(detector, row)[0]
    relative = errors / np.maximum(baseline, 1e-12) if baseline is not None else errors
    if normal_rows is None:
        low, high = normal_range(detector)
    else:
        low, high = np.percentile(np.asarray(normal_rows, dtype=np.float64), quantiles, axis=0)
    idx = top_features(relative[None, :], k)[0]
    table = pd.DataFrame({"metric": [detector.feature_names[j] for j in idx], "value": row[0, idx],
                          "normal_low": low[idx], "normal_high": high[idx], "error": errors[idx]})
    if baseline is not None:
        table["relative_error"] = relative[idx]
    return table


#: The bars :func:`plot_alarm` draws, by the first of these columns a table has, and their axis label.
_BARS = {"relative_error": "error / typical error on normal rows",
         "score_term": "the metric's term of the score",
         "error": "squared reconstruction error (scaled units)"}


def plot_alarm(table: pd.DataFrame, ax: Axes | None = None, title: str | None = None) -> Figure:
    """Horizontal bars of an alarm's table (an :func:`alarm_table`: its ranking errors; or ``fedad score``'s
    :meth:`~fedad_tutorial.scoring.Explainer.table`: the score's terms), each labelled with the metric's value
    and its normal range, so the operator sees *what* is off and *by how much*."""
    from fedad_tutorial.plots import new_axes

    fig, ax = new_axes(5.5, 3.2) if ax is None else (ax.figure, ax)
    bar = next(c for c in _BARS if c in table)
    y = np.arange(len(table))
    ax.barh(y, table[bar], color="tab:red", alpha=0.75)
    ax.set_xlim(0, 2.4 * float(table[bar].max()))  # room for the labels on the right
    ax.set_yticks(y, table.iloc[:, 0], fontsize=8)
    ax.invert_yaxis()
    for yi, r in zip(y, table.itertuples(), strict=True):
        ax.text(0.98, yi, f"{r.value:.3g}  (normal {r.normal_low:.3g}-{r.normal_high:.3g})",
                transform=ax.get_yaxis_transform(), ha="right", va="center", fontsize=7)
    ax.set_xlabel(_BARS[bar])
    ax.set_title(title or "top metrics of this alarm", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return fig
