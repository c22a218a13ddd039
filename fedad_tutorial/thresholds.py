"""Turning anomaly scores into alarms: where to put the threshold.

- :func:`percentile_threshold`: flag the top ``100 - q`` % of a client's own training scores
  (a *local* threshold, PyOD's "contamination" setting).
- :class:`ScoreHistogram` and :func:`federated_percentile`: the same percentile over *all*
  clients' training scores, computed from histograms on fixed, shared bin edges, so no client
  reveals a single score. With geometric bins the result is within about 0.1 % of the exact
  pooled percentile.
- :func:`fpr_threshold`: the threshold that gives a target false-positive rate on rows known (or
  assumed) to be normal.
- :func:`federated_feature_range`: each metric's 1st-99th percentile over all clients' training
  rows, from per-metric counts on shared bins (the normal range an explanation shows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedad_tutorial.errors import UserError

# Shared bin edges: 0, then geometric from 1e-6 to 1e6 (scores are non-negative errors).
_EDGES = np.concatenate([[0.0], np.geomspace(1e-6, 1e6, 8192)])


def _check_percentile(q: float) -> None:
    if not 0.0 < q < 100.0:
        raise UserError(f"threshold percentile must be between 0 and 100 (exclusive), got {q}")


def percentile_threshold(scores: np.ndarray, q: float = 95.0) -> float:
    """The ``q``-th percentile of ``scores``: rows above it are flagged."""
    _check_percentile(q)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise UserError("cannot compute a threshold from zero scores")
    return float(np.percentile(scores, q))


@dataclass(frozen=True)
class ScoreHistogram:
    """Counts of scores on fixed bin edges; clients share these instead of their scores."""

    counts: np.ndarray

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> ScoreHistogram:
        """A histogram from counts received or loaded (one per shared bin, whole, non-negative, not all zero);
        raises ValueError otherwise."""
        counts = np.asarray(counts)
        if counts.shape != (len(_EDGES) - 1,):
            raise ValueError(f"a score histogram needs {len(_EDGES) - 1} counts, got shape {counts.shape}")
        if counts.dtype.kind not in "iu" or (counts < 0).any() or counts.sum() == 0:
            raise ValueError("a score histogram needs whole, non-negative counts, not all zero")
        return cls(counts.astype(np.int64))

    @classmethod
    def of(cls, scores: np.ndarray) -> ScoreHistogram:
        clipped = np.clip(np.asarray(scores, dtype=np.float64), 0.0, _EDGES[-1])
        counts, _ = np.histogram(clipped, bins=_EDGES)
        return cls(counts.astype(np.int64))

    def __add__(self, other: ScoreHistogram) -> ScoreHistogram:
        return ScoreHistogram(self.counts + other.counts)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def quantile(self, q: float) -> float:
        """The ``q``-th percentile, interpolated linearly inside the bin that contains it."""
        _check_percentile(q)
        if self.total == 0:
            raise UserError("cannot compute a threshold from an empty histogram")
        return _interpolated_quantile(self.counts, _EDGES, q)

    def bin_width_at(self, value: float) -> float:
        """The width of the shared bin holding ``value``: how far :meth:`quantile` may be from the exact one."""
        b = int(np.clip(np.searchsorted(_EDGES, value, side="right") - 1, 0, len(_EDGES) - 2))
        return float(_EDGES[b + 1] - _EDGES[b])


def _interpolated_quantile(counts: np.ndarray, edges: np.ndarray, q: float) -> float:
    """The ``q``-th percentile of values counted on ``edges``, interpolated linearly inside the bin that holds it."""
    target = q / 100.0 * counts.sum()
    cum = np.cumsum(counts)
    b = int(np.searchsorted(cum, target, side="left"))
    below = cum[b - 1] if b > 0 else 0
    inside = (target - below) / max(counts[b], 1)
    return float(edges[b] + inside * (edges[b + 1] - edges[b]))


def federated_histogram(client_scores: list[np.ndarray]) -> ScoreHistogram:
    """The sum of each client's histogram (what a server receives: counts, never scores)."""
    if not client_scores:
        raise UserError("no client scores to aggregate")
    return total_histogram([ScoreHistogram.of(scores) for scores in client_scores])


def total_histogram(histograms: list[ScoreHistogram]) -> ScoreHistogram:
    """The federation's histogram: the clients' counts added in client order (a server's only view of scores)."""
    if not histograms:
        raise UserError("no client histograms to aggregate")
    total = histograms[0]
    for histogram in histograms[1:]:
        total = total + histogram
    return total


def federated_percentile(client_scores: list[np.ndarray], q: float = 95.0) -> float:
    """The global ``q``-th percentile from each client's histogram (what a server would compute)."""
    return federated_histogram(client_scores).quantile(q)


# Shared bins for standardised metric values: 0.05 standard deviations wide, from -20 to 20.
_Z_EDGES = np.linspace(-20.0, 20.0, 801)


def feature_counts(scaled_rows: np.ndarray) -> np.ndarray:
    """One client's counts of each standardised metric on the shared bins, shape ``(features, bins)``;
    values beyond the outer bins are counted in them."""
    z = np.clip(np.asarray(scaled_rows, dtype=np.float64), _Z_EDGES[0], _Z_EDGES[-1])
    bins = np.clip(np.searchsorted(_Z_EDGES, z, side="right") - 1, 0, len(_Z_EDGES) - 2)
    d = z.shape[1]
    flat = (bins + np.arange(d) * (len(_Z_EDGES) - 1)).ravel()
    return np.bincount(flat, minlength=d * (len(_Z_EDGES) - 1)).reshape(d, -1)


def federated_feature_range(client_scaled_rows: list[np.ndarray], quantiles: tuple[float, float] = (1.0, 99.0)
                            ) -> np.ndarray:
    """Each metric's ``quantiles`` over every client's standardised training rows, shape ``(2, features)``
    (standardised units), from the sum of the clients' :func:`feature_counts`: within 0.05 standard
    deviations of the pooled percentiles."""
    return feature_range_from_counts(sum(feature_counts(rows) for rows in client_scaled_rows), quantiles)


def feature_range_from_counts(counts: np.ndarray, quantiles: tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """:func:`federated_feature_range` from the clients' summed :func:`feature_counts` (what a server receives)."""
    for q in quantiles:
        _check_percentile(q)
    return np.array([[_interpolated_quantile(metric, _Z_EDGES, q) for metric in counts] for q in quantiles])


def fpr_threshold(normal_scores: np.ndarray, fpr: float = 0.05) -> float:
    """The threshold at which a share ``fpr`` of known-normal rows would raise an alarm."""
    if not 0.0 < fpr < 1.0:
        raise UserError(f"target false-positive rate must be between 0 and 1, got {fpr}")
    return percentile_threshold(normal_scores, 100.0 * (1.0 - fpr))


# --- Helpers for notebook 05: inspect the bins, sweep thresholds, price mistakes. -----------------


def bin_edges() -> np.ndarray:
    """A copy of the fixed bin edges every :class:`ScoreHistogram` uses (shared by all clients).

    >>> edges = bin_edges()
    >>> float(edges[0]), float(edges[1]), len(edges)
    (0.0, 1e-06, 8193)
    """
    return _EDGES.copy()


def threshold_sweep(labels: np.ndarray, scores: np.ndarray, percentiles: np.ndarray,
                    reference_scores: np.ndarray | None = None) -> pd.DataFrame:  # noqa: F821
    """Detection metrics at a range of percentile thresholds: one row per percentile.

    Args:
        labels: 0/1 labels of the rows in ``scores`` (held-out rows; evaluation only).
        scores: anomaly scores of those rows.
        percentiles: the percentiles (in (0, 100)) at which to put the threshold.
        reference_scores: the (unlabelled) scores the threshold is computed from, e.g. training
            rows; default ``scores`` themselves.

    Returns:
        A DataFrame with columns ``percentile, threshold, alarm_rate, precision, recall, f1, fpr,
        tp, fp, tn, fn``.

    >>> sweep = threshold_sweep(np.array([0, 0, 0, 1]), np.array([0.1, 0.2, 0.3, 0.9]), [50, 80])
    >>> sweep[["percentile", "recall", "fpr"]].round(3).values.tolist()
    [[50.0, 1.0, 0.333], [80.0, 1.0, 0.0]]
    """
    import pandas as pd

    from fedad_tutorial.metrics import detection_metrics

    scores = np.asarray(scores, dtype=np.float64)
    reference = scores if reference_scores is None else np.asarray(reference_scores, dtype=np.float64)
    rows = []
    for q in np.asarray(percentiles, dtype=np.float64):
        thr = percentile_threshold(reference, float(q))
        m = detection_metrics(labels, scores, thr)
        rows.append({"percentile": float(q), "threshold": thr, "alarm_rate": float((scores > thr).mean()),
                     **{k: m[k] for k in ("precision", "recall", "f1", "fpr", "tp", "fp", "tn", "fn")}})
    return pd.DataFrame(rows)


def expected_cost(labels: np.ndarray, scores: np.ndarray, threshold: float,
                  cost_false_alarm: float = 1.0, cost_missed: float = 20.0) -> float:
    """Mean cost per row of flagging rows above ``threshold``.

    Every false alarm (a normal row flagged) costs ``cost_false_alarm`` (someone looks at it for
    nothing); every missed anomaly costs ``cost_missed`` (an incident nobody saw). Correct
    decisions cost nothing.

    >>> expected_cost(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.9, 0.2]), 0.5, 1.0, 10.0)
    2.75
    """
    y = np.asarray(labels).astype(int)
    flagged = np.asarray(scores, dtype=np.float64) > threshold
    if y.size == 0:
        raise UserError("cannot compute a cost on zero rows")
    false_alarms = int((flagged & (y == 0)).sum())
    missed = int((~flagged & (y == 1)).sum())
    return float((cost_false_alarm * false_alarms + cost_missed * missed) / y.size)
