"""Exercises of notebook 00 (overview): what a client computes and what it may share.

- Exercise 0.1: compute a client's :class:`~fedad_tutorial.scaling.FeatureStats` by hand, checked
  against :meth:`FeatureStats.of` on fresh client rows, and shown to give the pooled scaler.
- Exercise 0.2: pick, from a list of things a client holds, the ones that leave it in this course's
  protocol; checked against :data:`LEAVES_THE_CLIENT` on shuffled, fresh subsets of
  :data:`CANDIDATES`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from fedad_tutorial.data import make_cloud_federation
from fedad_tutorial.exercises.checking import exercise, expect
from fedad_tutorial.scaling import FeatureStats, Scaler, federated_scaler

#: Things a client holds, with what each one is. Exercise 0.2 asks which of them leave the client.
CANDIDATES: dict[str, str] = {
    "model weights": "the autoencoder's weights after local training (sent to the server every round)",
    "row count": "how many training rows the client has (the FedAvg weight)",
    "feature sums": "per-feature count, sum and sum of squares of the training rows (for the global scaler)",
    "score histogram": "counts of the client's training scores on bins shared by all clients (for a "
    "global threshold)",
    "raw rows": "the metric rows themselves (CPU, memory, requests, ...)",
    "labels": "which rows are anomalies (known only for evaluation, if at all)",
    "row scores": "the anomaly score of each individual row",
    "test rows": "the held-out rows the client evaluates the detector on",
}

#: The course's answer to Exercise 0.2: what a client sends to the server (everything else stays).
#: Weights and the row count (FedAvg, notebook 04), summary statistics for the global scaler
#: (:func:`~fedad_tutorial.scaling.federated_scaler`) and a score histogram on shared bins for a
#: global threshold (:func:`~fedad_tutorial.thresholds.federated_percentile`, notebook 05).
LEAVES_THE_CLIENT: frozenset[str] = frozenset({"model weights", "row count", "feature sums", "score histogram"})

_WHY: dict[str, str] = {
    "model weights": "the server averages them (FedAvg)",
    "row count": "FedAvg weights each client's update by its number of rows",
    "feature sums": "the server adds them up to build the global scaler",
    "score histogram": "the server adds histograms to set a federation-wide threshold",
    "raw rows": "raw rows never leave a client: that is the point of federated learning",
    "labels": "labels never leave a client (and are never used for training)",
    "row scores": "individual scores stay local; only a histogram on shared bins is sent",
    "test rows": "held-out rows are raw rows too: they are evaluated where they live",
}


@exercise("Exercise 0.1: a client's feature statistics")
def check_feature_stats(learner_fn: Callable[[np.ndarray], FeatureStats], seed: int = 2024) -> None:
    """Compare ``learner_fn(rows)`` with :meth:`FeatureStats.of` on fresh nodes' rows.

    ``learner_fn`` takes one client's rows (``(n, d)`` array) and returns a :class:`FeatureStats`
    with ``count`` (rows), ``total`` (per-feature sum) and ``total_sq`` (per-feature sum of squares).
    """
    nodes = make_cloud_federation(num_nodes=3, samples_per_node=(40, 90), num_features=6, seed=seed)
    mine = []
    for node in nodes:
        got = learner_fn(node.features.copy())
        want = FeatureStats.of(node.features)
        expect(isinstance(got, FeatureStats),
               f"return a FeatureStats(count=..., total=..., total_sq=...), got {type(got).__name__}")
        expect(np.ndim(got.count) == 0 and got.count == want.count,
               f"{node.name}: count should be the number of rows ({want.count}), got {got.count!r}")
        total, total_sq = np.asarray(got.total, dtype=np.float64), np.asarray(got.total_sq, dtype=np.float64)
        expect(total.shape == want.total.shape,
               f"{node.name}: total should hold one sum per feature (shape {want.total.shape}), "
               f"got shape {total.shape}; sum over rows (axis=0)")
        expect(np.allclose(total, want.total, rtol=1e-5),
               f"{node.name}: total should be the per-feature sum of the rows")
        expect(total_sq.shape == want.total_sq.shape and np.allclose(total_sq, want.total_sq, rtol=1e-5),
               f"{node.name}: total_sq should be the per-feature sum of squared values (x * x summed over rows)")
        mine.append(FeatureStats(int(got.count), total, total_sq))
    pooled = Scaler.fit(np.vstack([n.features for n in nodes]))
    federated = federated_scaler(mine)
    expect(np.allclose(federated.mean, pooled.mean, rtol=1e-4) and np.allclose(federated.std, pooled.std, rtol=1e-4),
           "your statistics are close, but added up they do not give the pooled scaler: the server computes "
           "std from total_sq / n - mean**2, a difference of two close numbers that magnifies small rounding "
           "errors; sum in float64 (rows.astype(np.float64))")


@exercise("Exercise 0.2: what leaves the client")
def check_leaves_the_client(learner_fn: Callable[[list[str]], Iterable[str]], seed: int = 7) -> None:
    """Call ``learner_fn(items)`` on shuffled subsets of :data:`CANDIDATES`; compare with the course's answer.

    ``learner_fn`` takes a list of item names and returns the (set of) names that leave the client.
    """
    rng = np.random.default_rng(seed)
    names = list(CANDIDATES)
    subsets = [names] + [list(rng.choice(names, size=int(rng.integers(3, len(names))), replace=False))
                         for _ in range(5)]
    for items in subsets:
        items = [str(i) for i in rng.permutation(items)]
        answer = learner_fn(list(items))
        expect(answer is not None, "return a value, got None (did you forget `return`?)")
        expect(not isinstance(answer, str) and hasattr(answer, "__iter__"),
               f"return a set of item names, got {type(answer).__name__}")
        got = {str(item) for item in answer}
        want = set(items) & LEAVES_THE_CLIENT
        unknown = got - set(items)
        expect(not unknown, f"return only items from the list you were given; {sorted(unknown)} was not in it")
        wrong = sorted(got - want)
        expect(not wrong, f"{wrong[0]!r} does not leave the client: {_WHY[wrong[0]]}" if wrong else "")
        missing = sorted(want - got)
        expect(not missing, f"{missing[0]!r} does leave the client: {_WHY[missing[0]]}" if missing else "")
