"""Detection metrics on held-out rows.

The definitions are scikit-learn's (``roc_auc_score``, ``average_precision_score``, the confusion
matrix) and the tests check equality with them. They are computed here with a few numpy calls
because a federation evaluates every client every round: scikit-learn's per-call input validation
cost 4-8 ms a call, which made evaluation the largest part of a 1,000-client simulation.
"""

from __future__ import annotations

import math

import numpy as np

METRIC_NAMES = ("precision", "recall", "f1", "roc_auc", "pr_auc", "fpr")


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half): the Mann-Whitney U statistic, normalised.

    >>> roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    y = np.asarray(labels).astype(bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return math.nan
    ranks = average_ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve as a step function (scikit-learn's average precision)."""
    y = np.asarray(labels).astype(bool)
    pos = int(y.sum())
    if pos == 0 or pos == y.size:
        return math.nan
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    sorted_scores, sorted_y = s[order], y[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(sorted_scores)), y.size - 1]
    tps = np.cumsum(sorted_y)[last_of_each_score]
    precision = tps / (last_of_each_score + 1)
    recall = tps / pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def detection_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall, F1 and false-positive rate at ``threshold``; ROC-AUC and PR-AUC of the scores.

    A row is flagged when its score is strictly above the threshold. Ranking metrics are NaN when
    the rows hold a single class (they are undefined then); ratios with an empty denominator are 0.

    >>> m = detection_metrics(np.array([0, 0, 1]), np.array([0.1, 0.2, 0.9]), threshold=0.5)
    >>> m["f1"], m["roc_auc"]
    (1.0, 1.0)
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    flagged = s > threshold
    tp = int((flagged & y).sum())
    fp = int((flagged & ~y).sum())
    fn = int((~flagged & y).sum())
    tn = int(y.size - tp - fp - fn)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc(y, s),
        "pr_auc": average_precision(y, s),
        "fpr": fp / (fp + tn) if fp + tn else 0.0,
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
    }

def recall_by_type(types: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    """Share of rows of each anomaly type that were flagged ("normal": the false-positive rate).

    >>> recall_by_type(np.array(["normal", "spike", "spike"]), np.array([0, 1, 0]))
    {'normal': 0.0, 'spike': 0.5}
    """
    types = np.asarray(types)
    flagged = np.asarray(flagged).astype(bool)
    return {str(t): float(flagged[types == t].mean()) for t in sorted(set(types.tolist()))}


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``, ties sharing their average rank (``scipy.stats.rankdata``'s default).

    Written out with NumPy so that scoring does not import SciPy.

    >>> average_ranks(np.array([10.0, 30.0, 20.0, 20.0])).tolist()
    [1.0, 4.0, 2.5, 2.5]
    """
    values = np.asarray(values)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.concatenate([[True], ordered[1:] != ordered[:-1]])  # first element of each tie group
    group = np.cumsum(starts) - 1
    bounds = np.concatenate([np.flatnonzero(starts), [len(values)]])  # group g spans bounds[g]..bounds[g+1]-1
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = 0.5 * (bounds[group] + bounds[group + 1] + 1)
    return ranks
