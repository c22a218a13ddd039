"""Detection metrics on held-out rows, from scikit-learn where it already does the job."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

METRIC_NAMES = ("precision", "recall", "f1", "roc_auc", "pr_auc", "fpr")


def detection_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall, F1 and false-positive rate at ``threshold``; ROC-AUC and PR-AUC of the scores.

    A row is flagged when its score is strictly above the threshold. Ranking metrics are NaN when
    the rows hold a single class (they are undefined then); ratios with an empty denominator are 0.

    >>> m = detection_metrics(np.array([0, 0, 1]), np.array([0.1, 0.2, 0.9]), threshold=0.5)
    >>> m["f1"], m["roc_auc"]
    (1.0, 1.0)
    """
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    pred = (s > threshold).astype(int)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    both = 0 < y.sum() < y.size
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": float(roc_auc_score(y, s)) if both else math.nan,
        "pr_auc": float(average_precision_score(y, s)) if both else math.nan,
        "fpr": fp / (fp + tn) if fp + tn else 0.0,
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
    }
