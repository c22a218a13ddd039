"""Concept drift: when *normal* changes, a detector trained on yesterday raises alarms all day.

Notebook 09 builds per-node metric streams in time order, lets normal behaviour drift on some
nodes, detects the drift in the distribution of anomaly scores, and adapts. This module holds the
reusable pieces:

- :func:`apply_drift`: a documented drift from step ``start`` on (a deploy that shifts one metric
  group, or traffic growth that scales the traffic-driven metrics, ramped in);
- :func:`window_node`: a window of a stream as a :class:`~fedad_tutorial.data.NodeData`, ready for
  :func:`~fedad_tutorial.data.train_test_split` and :func:`~fedad_tutorial.federated.run_federated`;
- :func:`score_drift`, :func:`psi`, :func:`histogram_drift`: two-sample tests of "recent scores
  look like the reference scores" (Kolmogorov-Smirnov and the population stability index), the last
  one from :class:`~fedad_tutorial.thresholds.ScoreHistogram` counts only, so a server can run it
  without seeing a score;
- :func:`alarm_rate_per_window`: the alarm rate (and false-alarm rate) per time window.

To continue federated training on recent windows from the previous global model, pass its
``state_dict()`` as :func:`~fedad_tutorial.federated.run_federated`'s ``initial_state``.

Rows of a stream are one step each (say one row a minute). Labels are for evaluation only.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from fedad_tutorial.data import NodeData
from fedad_tutorial.errors import UserError
from fedad_tutorial.thresholds import ScoreHistogram

#: Metric groups a drift can act on (names from :data:`fedad_tutorial.data.METRIC_NAMES`).
DRIFT_GROUPS: dict[str, tuple[str, ...]] = {
    # a release that needs more memory: heap, GC and paging all run higher
    "memory": ("mem_util_pct", "heap_used_mb", "gc_pause_ms", "page_faults_k", "swap_used_mb"),
    # slower dependencies after a deploy: latencies and the queue sit higher
    "latency": ("latency_p50_ms", "latency_p99_ms", "db_latency_ms", "queue_depth"),
    # metrics driven mostly by web traffic: they grow with the number of users
    "traffic": ("net_in_mbps", "net_out_mbps", "request_rate", "active_connections", "db_query_rate",
                "http_4xx_rate", "tcp_retransmits", "context_switches_k"),
}

DRIFT_KINDS = ("deploy", "growth")


def drift_multiplier(num_steps: int, start: int, magnitude: float, ramp: int = 0) -> np.ndarray:
    """Per-step multiplier ``1 + magnitude * r(t)``: ``r`` is 0 before ``start``, then rises
    linearly to 1 over ``ramp`` steps (``ramp=0``: a step change).

    >>> drift_multiplier(6, 2, 0.5, ramp=2).tolist()
    [1.0, 1.0, 1.25, 1.5, 1.5, 1.5]
    """
    if num_steps < 0 or start < 0 or ramp < 0:
        raise UserError("num_steps, start and ramp must be non-negative")
    t = np.arange(num_steps, dtype=np.float64)
    r = np.clip((t - start + 1) / ramp, 0.0, 1.0) if ramp > 0 else (t >= start).astype(np.float64)
    r[t < start] = 0.0
    return 1.0 + magnitude * r


def apply_drift(node: NodeData, start: int, kind: str = "deploy", magnitude: float = 0.5,
                group: str | None = None, ramp: int = 0) -> NodeData:
    """A copy of ``node`` (rows in time order) whose normal behaviour changes from step ``start``.

    Args:
        node: one node's stream, one row per time step.
        start: the first step that drifts.
        kind: ``"deploy"``: a new release multiplies one metric group by ``1 + magnitude`` from
            ``start`` on (a step change; default group ``"memory"``). ``"growth"``: traffic grows,
            the traffic-driven metrics are multiplied by a factor rising linearly from 1 to
            ``1 + magnitude`` over ``ramp`` steps (default group ``"traffic"``).
        magnitude: relative size of the change (0.5 = +50 %).
        group: a key of :data:`DRIFT_GROUPS`, or ``None`` for the kind's default.
        ramp: steps over which the change ramps in (``deploy`` ignores it: a deploy is a step).

    Every row from ``start`` on is changed, anomalous rows included; labels and anomaly types are
    unchanged (the drifted rows are the *new normal*). Only metrics present in the node are touched.
    Multiplying a subset of metrics also breaks their ratios to the untouched ones, which is exactly
    what a detector trained before the change notices.

    >>> from fedad_tutorial.data import make_cloud_federation
    >>> node = make_cloud_federation(1, 10, seed=0)[0]
    >>> drifted = apply_drift(node, start=5, kind="deploy", magnitude=1.0, group="memory")
    >>> col = node.feature_names.index("heap_used_mb")
    >>> (drifted.features[:, col] / node.features[:, col]).round(3).tolist()
    [1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    """
    if kind not in DRIFT_KINDS:
        raise UserError(f"drift kind must be one of {DRIFT_KINDS}, got {kind!r}")
    group = group or ("memory" if kind == "deploy" else "traffic")
    if group not in DRIFT_GROUPS:
        raise UserError(f"drift group must be one of {sorted(DRIFT_GROUPS)}, got {group!r}")
    cols = [j for j, name in enumerate(node.feature_names) if name in DRIFT_GROUPS[group]]
    if not cols:
        raise UserError(f"{node.name}: none of the {group!r} metrics is present")
    factor = drift_multiplier(node.num_rows, start, magnitude, 0 if kind == "deploy" else ramp)
    features = node.features.astype(np.float64).copy()
    features[:, cols] *= factor[:, None]
    return replace(node, features=features,
                   regime={**node.regime, "drift_kind": kind, "drift_start": float(start),
                           "drift_magnitude": float(magnitude)})


def window_node(node: NodeData, start: int, stop: int) -> NodeData:
    """Steps ``start`` to ``stop - 1`` of a stream, as a node of its own (same name).

    >>> from fedad_tutorial.data import make_cloud_federation
    >>> window_node(make_cloud_federation(1, 50, seed=0)[0], 10, 30).num_rows
    20
    """
    if not 0 <= start < stop <= node.num_rows:
        raise UserError(f"{node.name}: window [{start}, {stop}) outside the stream's {node.num_rows} steps")

    def cut(values: np.ndarray | None) -> np.ndarray | None:
        return None if values is None else values[start:stop]

    return NodeData(node.name, node.features[start:stop], list(node.feature_names), cut(node.labels),
                    cut(node.anomaly_types), dict(node.regime))


class DriftTest(NamedTuple):
    """A two-sample comparison of recent scores with reference scores."""

    statistic: float  # Kolmogorov-Smirnov: the largest gap between the two empirical CDFs
    p_value: float  # probability of a gap at least this large if nothing changed
    psi: float  # population stability index (0: same; > 0.25 is conventionally a major shift)


def psi(reference: np.ndarray, recent: np.ndarray, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index of ``recent`` against ``reference``.

    Bins are the ``bins`` quantile bins of the reference (equal reference shares, open-ended at
    both ends); with shares ``p`` (reference) and ``q`` (recent), each floored at ``eps``:
    ``PSI = sum((q - p) * ln(q / p))``. Rules of thumb: < 0.1 stable, 0.1-0.25 moderate,
    > 0.25 a major shift.

    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal(size=5000)
    >>> round(psi(ref, rng.normal(size=5000)), 3) < 0.01 < round(psi(ref, rng.normal(1.0, size=5000)), 3)
    True
    """
    reference = np.asarray(reference, dtype=np.float64)
    recent = np.asarray(recent, dtype=np.float64)
    if reference.size == 0 or recent.size == 0 or bins < 2:
        raise UserError("PSI needs non-empty score arrays and at least 2 bins")
    inner = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    p = np.bincount(np.searchsorted(inner, reference, side="right"), minlength=bins) / reference.size
    q = np.bincount(np.searchsorted(inner, recent, side="right"), minlength=bins) / recent.size
    return _psi_of_shares(p, q, eps)


def _psi_of_shares(p: np.ndarray, q: np.ndarray, eps: float = 1e-4) -> float:
    """``sum((q - p) * ln(q / p))`` of bin shares ``p`` (reference) and ``q`` (recent), floored at ``eps``."""
    p, q = np.maximum(p, eps), np.maximum(q, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def score_drift(reference_scores: np.ndarray, recent_scores: np.ndarray, bins: int = 10) -> DriftTest:
    """Has the score distribution moved? A two-sample Kolmogorov-Smirnov test, plus the PSI.

    Run it on one node's scores: the reference window (scored by the current model right after it
    was trained, before anything changed) against a recent window. A small p-value says the recent
    scores are unlikely to come from the reference distribution.

    >>> rng = np.random.default_rng(1)
    >>> ref = rng.lognormal(size=400)
    >>> score_drift(ref, rng.lognormal(size=200)).p_value > 0.05
    True
    >>> score_drift(ref, 1.5 * rng.lognormal(size=200)).p_value < 0.01
    True
    """
    reference_scores = np.asarray(reference_scores, dtype=np.float64)
    recent_scores = np.asarray(recent_scores, dtype=np.float64)
    if reference_scores.size == 0 or recent_scores.size == 0:
        raise UserError("drift test needs non-empty reference and recent scores")
    ks = stats.ks_2samp(reference_scores, recent_scores)
    return DriftTest(float(ks.statistic), float(ks.pvalue), psi(reference_scores, recent_scores, bins))


def histogram_drift(reference: ScoreHistogram, recent: ScoreHistogram, bins: int = 10) -> DriftTest:
    """:func:`score_drift` from histogram counts on the shared bins (what a server can compute).

    Each node sends :class:`~fedad_tutorial.thresholds.ScoreHistogram` counts of its reference and
    recent scores; the server adds them per window and compares the sums. The KS statistic is the
    largest CDF gap at the shared bin edges (a bin is about 0.3 % wide, so this is the exact gap up
    to within-bin ties); its p-value uses the asymptotic Kolmogorov distribution with the effective
    size ``n * m / (n + m)``. The PSI groups the fine bins into ``bins`` groups of about equal
    reference share.
    """
    n, m = reference.total, recent.total
    if n == 0 or m == 0:
        raise UserError("drift test needs non-empty reference and recent histograms")
    cdf_ref = np.cumsum(reference.counts) / n
    cdf_new = np.cumsum(recent.counts) / m
    d = float(np.max(np.abs(cdf_ref - cdf_new)))
    p_value = float(stats.kstwobign.sf(d * np.sqrt(n * m / (n + m))))
    # group fine bins at the reference's quantiles
    cuts = np.searchsorted(cdf_ref, np.linspace(0, 1, bins + 1)[1:-1], side="left")
    group = np.searchsorted(cuts, np.arange(cdf_ref.size), side="left")
    p = np.bincount(group, weights=reference.counts, minlength=bins) / n
    q = np.bincount(group, weights=recent.counts, minlength=bins) / m
    return DriftTest(d, p_value, _psi_of_shares(p, q))


def alarm_rate_per_window(scores: np.ndarray, threshold: float | np.ndarray, window: int,
                          labels: np.ndarray | None = None) -> pd.DataFrame:
    """Alarm rate in consecutive windows of ``window`` steps (the last one may be shorter).

    Args:
        scores: one node's scores in time order.
        threshold: one threshold, or one per step (a threshold that is re-calibrated over time).
        window: steps per window.
        labels: optional 0/1 labels (evaluation only) to split alarms into false and true ones.

    Returns:
        One row per window: ``window`` (0, 1, ...), ``start``, ``stop``, ``alarm_rate`` (share of
        steps above the threshold) and, with labels, ``false_alarm_rate`` (share of *normal* steps
        flagged, NaN if none) and ``recall`` (share of anomalous steps flagged, NaN if none).

    >>> alarm_rate_per_window(np.array([0.1, 0.9, 0.2, 0.3, 0.8]), 0.5, 2)["alarm_rate"].tolist()
    [0.5, 0.0, 1.0]
    """
    scores = np.asarray(scores, dtype=np.float64)
    if window < 1:
        raise UserError(f"window must be at least 1 step, got {window}")
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), scores.shape)
    flagged = scores > thr
    y = None if labels is None else np.asarray(labels).astype(int)
    rows = []
    for k, start in enumerate(range(0, scores.size, window)):
        stop = min(start + window, scores.size)
        row = {"window": k, "start": start, "stop": stop, "alarm_rate": float(flagged[start:stop].mean())}
        if y is not None:
            f, yy = flagged[start:stop], y[start:stop]
            row["false_alarm_rate"] = float(f[yy == 0].mean()) if (yy == 0).any() else float("nan")
            row["recall"] = float(f[yy == 1].mean()) if (yy == 1).any() else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def first_drift_window(reference_scores: np.ndarray, scores: np.ndarray, window: int, start: int = 0,
                       alpha: float = 1e-3) -> pd.DataFrame:
    """Run :func:`score_drift` on every window of ``scores`` from step ``start`` on.

    Returns one row per window with ``start``, ``stop``, ``ks``, ``p_value``, ``psi`` and
    ``drift`` (``p_value < alpha``). A small ``alpha`` keeps a node that tests every window from
    raising drift by chance (with 20 windows and ``alpha=1e-3`` the chance is about 2 %).
    """
    scores = np.asarray(scores, dtype=np.float64)
    rows = []
    for lo in range(start, scores.size, window):
        hi = min(lo + window, scores.size)
        test = score_drift(reference_scores, scores[lo:hi])
        rows.append({"start": lo, "stop": hi, "ks": test.statistic, "p_value": test.p_value,
                     "psi": test.psi, "drift": bool(test.p_value < alpha)})
    return pd.DataFrame(rows)
