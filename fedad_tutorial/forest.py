"""The federated isolation forest as a model of the command line: trees as arrays, scored without scikit-learn.

Chapter 07 (:mod:`fedad_tutorial.chapters.forest`) grows the forest: every client fits scikit-learn's
:class:`~sklearn.ensemble.IsolationForest` on its own rows (standardised with the federation's global
scaler) with ``random_state = seed + k``, and the server pools the trees. Pooling is exact when all
clients share the sub-sample size :math:`\\psi`, and needs no training rounds: one message each way.

Here a forest travels and is saved as plain arrays (:class:`Trees`), never as a pickled scikit-learn
object: per tree and node the split ``feature``, the ``threshold`` (a row goes left when its value is
``<=`` it, as in scikit-learn), the ``left``/``right`` child (``-1`` at a leaf) and the node ``size``
(training rows that reached it), padded to the largest tree, plus :math:`\\psi` itself. The same
arrays are what a client sends, what the model file holds and what :class:`ForestModel` scores with.

A row's path length in one tree is the depth of the leaf it reaches plus :math:`c(n)` for the
leaf's ``size`` :math:`n` (the expected depth of the rows the tree did not split apart); its anomaly
score is scikit-learn's ``-score_samples``:

.. math:: s(x) = 2^{-E[h(x)] / c(\\psi)}

in (0, 1], higher = more anomalous. :meth:`ForestModel.score` walks every tree for a chunk of rows at
once (a bounded number of rows times trees per pass: :data:`SCORE_ELEMENTS`), one level per step.

A file or a message can hold anything, so :meth:`Trees.check` refuses arrays that do not form trees
(a child index outside the tree, a child that is not after its parent, which rules out cycles, a node
with two parents, a split on a feature the model does not have, a size outside ``[1, psi]``) and
absurd sizes (:data:`MAX_TREES`, :data:`MAX_SAMPLES`, nodes beyond ``2 psi - 1``) before anything
is scored.

>>> from fedad_tutorial.scaling import Scaler
>>> rows = np.random.default_rng(0).normal(size=(300, 4)).astype("float32")
>>> trees = grow_trees(rows, n_trees=10, max_samples=64, seed=0)
>>> trees.n_trees, trees.max_samples
(10, 64)
>>> model = ForestModel(4, trees)
>>> scores = model.score(torch.from_numpy(rows))
>>> bool(((scores > 0) & (scores <= 1)).all())
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedad_tutorial.errors import UserError
from fedad_tutorial.limits import check_fits
from fedad_tutorial.params import TRAINING

#: The largest forest a model file or a federation may hold (pooled trees).
MAX_TREES = 1_000_000
#: The largest sub-sample size (the flag's own upper bound).
MAX_SAMPLES = int(TRAINING["max_samples"].high)
#: Rows x trees walked per pass of :meth:`ForestModel.score` (bounds its temporary memory).
SCORE_ELEMENTS = 1 << 21
#: The arrays of a :class:`Trees`, in the order a file and a message hold them.
ARRAYS = ("feature", "threshold", "left", "right", "size")
#: The state-dict key of the sub-sample size.
MAX_SAMPLES_KEY = "max_samples"


def average_path_length(n: int) -> float:
    """:math:`c(n)`: the average path length of an unsuccessful search in a binary tree of ``n`` rows.

    >>> round(average_path_length(256), 4), average_path_length(2), average_path_length(1)
    (10.2448, 1.0, 0.0)
    """
    if n <= 1:
        return 0.0
    if n == 2:
        return 1.0
    return float(2.0 * (np.log(n - 1.0) + np.euler_gamma) - 2.0 * (n - 1.0) / n)


def _average_path_lengths(n: np.ndarray) -> np.ndarray:
    """:func:`average_path_length` of every element of ``n`` (whole numbers >= 0)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def fit_client_forest(rows: np.ndarray, n_trees: int = 100, max_samples: int = 128, seed: int = 0):
    """One client's scikit-learn isolation forest on its own (already scaled) rows, ``random_state=seed``."""
    from sklearn.ensemble import IsolationForest

    rows = np.asarray(rows, dtype=np.float32)
    if rows.shape[0] < max_samples:
        raise UserError(f"a client has {rows.shape[0]} rows, fewer than max_samples={max_samples}")
    return IsolationForest(n_estimators=n_trees, max_samples=max_samples, random_state=seed).fit(rows)


@dataclass(frozen=True)
class Trees:
    """A forest as arrays of shape ``(trees, nodes)`` (see the module's description) and its sub-sample size."""

    feature: np.ndarray  # int64, the split's column (any value at a leaf)
    threshold: np.ndarray  # float64, left when value <= threshold
    left: np.ndarray  # int64, -1 at a leaf
    right: np.ndarray  # int64, -1 at a leaf
    size: np.ndarray  # int64, training rows that reached the node (0 on padding)
    max_samples: int

    @property
    def n_trees(self) -> int:
        return int(self.feature.shape[0])

    @classmethod
    def from_sklearn(cls, forest) -> Trees:
        """The trees of a fitted :class:`~sklearn.ensemble.IsolationForest` (features mapped back to the
        forest's columns if its trees saw a subset)."""
        trees = [(e.tree_, np.asarray(f)) for e, f in zip(forest.estimators_, forest.estimators_features_,
                                                             strict=True)]
        width = max(t.node_count for t, _ in trees)
        out = {name: np.full((len(trees), width), fill, dtype=dtype) for name, fill, dtype in
               (("feature", 0, np.int64), ("threshold", 0.0, np.float64), ("left", -1, np.int64),
                ("right", -1, np.int64), ("size", 0, np.int64))}
        for i, (t, features) in enumerate(trees):
            n = t.node_count
            leaf = t.children_left[:n] < 0
            out["feature"][i, :n] = np.where(leaf, 0, features[np.maximum(t.feature[:n], 0)])
            out["threshold"][i, :n] = np.where(leaf, 0.0, t.threshold[:n])
            out["left"][i, :n] = t.children_left[:n]
            out["right"][i, :n] = t.children_right[:n]
            out["size"][i, :n] = t.n_node_samples[:n]
        return cls(**out, max_samples=int(forest.max_samples_))

    @classmethod
    def pool(cls, parts: Sequence[Trees]) -> Trees:
        """The server's step: every client's trees in one forest (padded to the widest tree), in client order.
        All parts must share the sub-sample size, else pooling is not exact."""
        if not parts:
            raise UserError("no client forests to pool")
        psis = sorted({p.max_samples for p in parts})
        if len(psis) != 1:
            raise UserError(f"client forests must share the sub-sample size, got {psis}")
        width = max(p.feature.shape[1] for p in parts)
        total = sum(p.n_trees for p in parts)
        check_fits(total * width * 40.0, f"a forest of {total} trees of up to {width} nodes")

        def padded(name: str, fill) -> np.ndarray:
            return np.concatenate([np.pad(getattr(p, name), ((0, 0), (0, width - p.feature.shape[1])),
                                          constant_values=fill) for p in parts])

        return cls(padded("feature", 0), padded("threshold", 0.0), padded("left", -1), padded("right", -1),
                   padded("size", 0), psis[0])

    def check(self, n_features: int) -> np.ndarray:
        """Raise :class:`ValueError` (the reason) unless the arrays form a forest on ``n_features`` columns;
        return each node's depth (``-1`` where no path from the root reaches it)."""
        psi = self.max_samples
        if isinstance(psi, bool) or not isinstance(psi, int | np.integer) or not 2 <= psi <= MAX_SAMPLES:
            raise ValueError(f"the sub-sample size {psi!r} is not a whole number in [2, {MAX_SAMPLES}]")
        shapes = {name: getattr(self, name).shape for name in ARRAYS}
        shape = shapes["feature"]
        if len(shape) != 2 or any(s != shape for s in shapes.values()):
            raise ValueError(f"the tree arrays do not share one (trees, nodes) shape: {shapes}")
        trees, nodes = shape
        if not 1 <= trees <= MAX_TREES:
            raise ValueError(f"{trees} trees; a forest holds 1 to {MAX_TREES}")
        if not 1 <= nodes <= 2 * psi - 1:
            raise ValueError(f"{nodes} nodes per tree; a tree on {psi} rows has 1 to {2 * psi - 1}")
        for name, kind in (("feature", "i"), ("left", "i"), ("right", "i"), ("size", "i"), ("threshold", "f")):
            if getattr(self, name).dtype.kind != kind:
                raise ValueError(f"the {name} array holds {getattr(self, name).dtype}, not "
                                 f"{'whole numbers' if kind == 'i' else 'floating-point numbers'}")
        left, right = self.left.astype(np.int64), self.right.astype(np.int64)
        leaf = left == -1
        if not np.array_equal(leaf, right == -1):
            raise ValueError("a node has one child (both children are -1 at a leaf, neither elsewhere)")
        index = np.arange(nodes)
        for name, child in (("left", left), ("right", right)):
            bad = ~leaf & ((child <= index) | (child >= nodes))
            if bad.any():
                t, n = (int(i) for i in np.argwhere(bad)[0])
                raise ValueError(f"tree {t}, node {n}: {name} child {int(child[t, n])} is not a later node "
                                 f"of the tree (1 to {nodes - 1}, after its parent)")
        rows = np.repeat(np.arange(trees), nodes)[~leaf.ravel()]
        flat = np.concatenate([rows * nodes + left[~leaf], rows * nodes + right[~leaf]])
        parents = np.bincount(flat, minlength=trees * nodes).reshape(trees, nodes)
        if (parents > 1).any():
            t, n = (int(i) for i in np.argwhere(parents > 1)[0])
            raise ValueError(f"tree {t}, node {n} has two parents")
        depth = _depths(left, right, leaf)
        reached = depth >= 0
        inner = reached & ~leaf
        if ((self.feature < 0) | (self.feature >= n_features))[inner].any():
            raise ValueError(f"a split is on a feature outside 0 to {n_features - 1}")
        if not np.isfinite(self.threshold[inner]).all():
            raise ValueError("a split threshold is NaN or infinite")
        if ((self.size < 1) | (self.size > psi))[reached].any():
            raise ValueError(f"a node's size is outside 1 to the sub-sample size {psi}")
        return depth

    def state(self) -> dict[str, torch.Tensor]:
        """The arrays as tensors (what :class:`ForestModel` keeps and a model file holds)."""
        return {**{name: torch.from_numpy(np.ascontiguousarray(getattr(self, name))) for name in ARRAYS},
                MAX_SAMPLES_KEY: torch.tensor(int(self.max_samples), dtype=torch.int64)}

    @classmethod
    def from_state(cls, state: dict) -> Trees:
        """The trees in a state dict or a message (tensors or arrays under :data:`ARRAYS` and
        :data:`MAX_SAMPLES_KEY`); raises ``KeyError``/``ValueError`` on a missing or malformed entry."""
        def array(value) -> np.ndarray:
            if isinstance(value, torch.Tensor):
                return value.detach().cpu().numpy()
            if isinstance(value, np.ndarray):
                return value
            raise ValueError(f"expected an array, got {type(value).__name__}")

        psi = array(state[MAX_SAMPLES_KEY])
        if psi.shape not in ((), (1,)) or psi.dtype.kind != "i":
            raise ValueError("the sub-sample size is not one whole number")
        return cls(*(array(state[name]) for name in ARRAYS), int(psi.reshape(-1)[0]))


def _depths(left: np.ndarray, right: np.ndarray, leaf: np.ndarray) -> np.ndarray:
    """Each node's depth below its tree's root (``-1`` if unreached), by pointer doubling: children come after
    their parent and every node has at most one (checked before), so the chains end at a root."""
    trees, nodes = left.shape
    parent = np.full((trees, nodes), -1, dtype=np.int64)
    t = np.repeat(np.arange(trees)[:, None], nodes, axis=1)
    idx = np.broadcast_to(np.arange(nodes), (trees, nodes))
    for child in (left, right):
        parent[t[~leaf], child[~leaf]] = idx[~leaf]
    ancestor = np.where(parent < 0, idx, parent)  # a node without a parent is its own ancestor
    dist = (parent >= 0).astype(np.int64)
    rows = np.arange(trees)[:, None]
    for _ in range(max(1, int(np.ceil(np.log2(nodes))) + 1)):
        dist = dist + dist[rows, ancestor]
        ancestor = ancestor[rows, ancestor]
    return np.where(ancestor == 0, dist, -1)  # reached only if the chain ends at the root, node 0


def grow_trees(rows: np.ndarray, n_trees: int, max_samples: int, seed: int) -> Trees:
    """A client's step: ``n_trees`` isolation trees on its own scaled rows (chapter 07's
    :func:`fit_client_forest`, ``random_state=seed``), as arrays."""
    return Trees.from_sklearn(fit_client_forest(rows, n_trees, max_samples, seed))


def shared_max_samples(max_samples: int, row_counts: Sequence[int]) -> int:
    """The sub-sample size every client uses: ``max_samples``, lowered to the smallest client's rows
    (one size for all keeps pooling exact; chapter 07's rule). A client with fewer than 2 rows: :class:`UserError`."""
    psi = int(min(max_samples, *row_counts))
    if psi < 2:
        raise UserError(f"a client has {psi} training row(s); each client needs at least 2 to grow isolation trees")
    return psi


class ForestModel(nn.Module):
    """A pooled forest as a model: its :class:`Trees` as buffers (the model file's state dict), and
    :meth:`score`, the isolation score of scaled rows. ``spec`` says ``iforest`` and the feature count."""

    def __init__(self, input_dim: int, trees: Trees) -> None:
        super().__init__()
        from fedad_tutorial.models import ModelSpec

        self.spec = ModelSpec(kind="iforest", input_dim=input_dim)
        depth = trees.check(input_dim)
        for name, tensor in trees.state().items():
            self.register_buffer(name, tensor)
        leaf = trees.left == -1
        # a leaf's path length (depth + c(size)); a row never stops at an inner node, whose value is unused
        value = np.where(leaf, depth + _average_path_lengths(trees.size), 0.0)
        nodes = trees.feature.shape[1]
        base = np.arange(trees.n_trees)[:, None] * nodes
        self.register_buffer("_value", torch.from_numpy(value.ravel()), persistent=False)
        # the next node of a row at each node, left children then right ones, flat; a leaf leads to itself
        here = np.arange(trees.n_trees * nodes).reshape(trees.n_trees, nodes)
        children = np.stack([np.where(leaf, here, trees.left + base), np.where(leaf, here, trees.right + base)])
        self.register_buffer("_next", torch.from_numpy(children.reshape(-1)), persistent=False)
        self._steps = int(depth.max())  # the deepest reachable node: no path is longer
        self._norm = trees.n_trees * average_path_length(trees.max_samples)

    @property
    def trees(self) -> Trees:
        return Trees.from_state(self.state_dict())

    def path_lengths(self, x: torch.Tensor) -> torch.Tensor:
        """Each row's path length summed over the trees (float64), rows on dim 0. The walk is NumPy's ``take``
        on flat arrays (several times faster than PyTorch's gathers at this size)."""
        trees, nodes = self.feature.shape
        feature, threshold = self.feature.numpy().reshape(-1), self.threshold.numpy().reshape(-1)
        following, value = self._next.numpy(), self._value.numpy()
        rows = x.detach().numpy().astype(np.float64)
        out = np.zeros(rows.shape[0], dtype=np.float64)
        start = np.arange(trees, dtype=np.int64)[:, None] * nodes
        step = max(1, SCORE_ELEMENTS // trees)
        for lo in range(0, rows.shape[0], step):
            chunk = rows[lo:lo + step]
            node = np.repeat(start, chunk.shape[0], axis=1)  # (trees, rows): every row at every root
            row_start = (np.arange(chunk.shape[0], dtype=np.int64) * chunk.shape[1])[None, :]
            for _ in range(self._steps):  # one level per step; a row at a leaf stays there
                right = np.take(chunk, row_start + np.take(feature, node)) > np.take(threshold, node)
                node = np.take(following, right * (trees * nodes) + node)
            # a running sum, tree after tree (as scikit-learn adds them): a row's score never depends on its chunk
            out[lo:lo + step] = np.cumsum(np.take(value, node), axis=0)[-1]
        return torch.from_numpy(out)

    @torch.no_grad()
    def score(self, x: torch.Tensor, method: str | None = None) -> torch.Tensor:
        """scikit-learn's ``-score_samples``: ``2 ** (-mean path length / c(psi))``, in (0, 1], float64."""
        from fedad_tutorial.models import check_score_method

        check_score_method("iforest", method)
        return torch.exp2(-self.path_lengths(x) / self._norm)


def forest_model(input_dim: int, state: dict) -> ForestModel:
    """A :class:`ForestModel` from a state dict (a model file's): every array checked
    (:meth:`Trees.check`); ``ValueError``/``KeyError`` name what is wrong."""
    extra = sorted(set(state) - {*ARRAYS, MAX_SAMPLES_KEY})
    if extra:
        raise ValueError(f"unexpected forest entries {extra[:3]}")
    return ForestModel(input_dim, Trees.from_state(state))

