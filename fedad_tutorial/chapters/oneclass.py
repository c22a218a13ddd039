"""One-class classification with Deep SVDD (chapter 14): the collapse, and the comparison with the autoencoders.

Deep SVDD (:class:`~fedad_tutorial.models.DeepSVDD`) scores a row by the squared distance of its
embedding to a fixed centre. Its objective has a trivial minimum, a network that sends every row to
the centre, and the package's model is built so that it cannot reach it: no bias terms, ReLU only,
a centre that is a fixed buffer. This module makes the pitfall happen on purpose
(:func:`collapse_experiment`: the same network *with* biases, and with a *trainable* centre) and
gives an unlabelled test for it (:func:`looks_collapsed`). :func:`compare_detectors` trains Deep SVDD,
the autoencoder and the VAE through :func:`~fedad_tutorial.federated.run_federated` on the same
federations and held-out rows.

>>> splits = synthetic_federation(0)
>>> len(splits), splits[0].train.shape[1]
(6, 30)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from fedad_tutorial.center import federated_center
from fedad_tutorial.chapters.datasets import wdbc_hospitals
from fedad_tutorial.data import Split, make_cloud_federation, train_test_split
from fedad_tutorial.federated import FederatedConfig, run_federated
from fedad_tutorial.metrics import average_precision, roc_auc
from fedad_tutorial.models import DeepSVDD, ModelSpec
from fedad_tutorial.scaling import Scaler
from fedad_tutorial.training import LocalTraining, client_generator, score_rows, train_local

# --- the data ---------------------------------------------------------------------------------------


def synthetic_federation(seed: int = 0) -> list[Split]:
    """Notebook 04's federation (six nodes of 150-600 rows, 8 % anomalies, 30 % of each held out);
    ``seed`` 0 is exactly notebook 04's, other seeds draw other nodes and splits."""
    nodes = make_cloud_federation(num_nodes=6, samples_per_node=(150, 600), anomaly_rate=0.08, seed=42 + seed)
    return [train_test_split(node, seed=42 + seed + k) for k, node in enumerate(nodes)]


def wdbc_federation(seed: int = 0) -> list[Split]:
    """Chapter 13's three WDBC hospitals (non-IID by tumour size, 3 % unlabelled malignant training rows)."""
    return [h.split() for h in wdbc_hospitals(seed=seed)]


#: The chapter's two federations, by the name its tables use.
FEDERATIONS: dict[str, Callable[[int], list[Split]]] = {"synthetic": synthetic_federation,
                                                        "WDBC": wdbc_federation}


def pooled_test(splits: Sequence[Split]) -> tuple[np.ndarray, np.ndarray]:
    """Every client's held-out rows and labels, stacked: the rows all detectors are scored on."""
    return np.vstack([s.test for s in splits]), np.concatenate([s.test_labels for s in splits])


# --- the collapse -----------------------------------------------------------------------------------


def with_bias(model: DeepSVDD) -> DeepSVDD:
    """A copy of ``model`` whose linear layers have bias terms, all zero.

    At the start it is the same function as ``model`` (same weights, zero biases, same centre), so
    any difference after training comes from the biases alone. With them the network can reach the
    trivial minimum: shrink the weights and output a bias equal to the centre for every row.
    """
    copied = copy.deepcopy(model)
    for i, layer in enumerate(copied.encoder):
        if isinstance(layer, nn.Linear):
            biased = nn.Linear(layer.in_features, layer.out_features)
            with torch.no_grad():
                biased.weight.copy_(layer.weight)
                biased.bias.zero_()
            copied.encoder[i] = biased
    return copied


def with_trainable_center(model: DeepSVDD) -> DeepSVDD:
    """A copy of ``model`` whose centre is a parameter that training moves, starting where it was.

    The bias-free network maps the zero vector to zero; a centre allowed to move to zero can be met
    by shrinking every weight: the same collapse, reached from the other side.
    """
    copied = copy.deepcopy(model)
    center = copied.center.detach().clone()
    del copied._buffers["center"]
    copied.center = nn.Parameter(center)
    return copied


def train_epochs(model: nn.Module, rows: torch.Tensor, epochs: int, lr: float, seed: int = 0,
                 batch_size: int = 64) -> list[float]:
    """Train ``model`` in place on ``rows`` (one client, or pooled rows); the mean loss of each epoch.

    Each epoch is one :func:`~fedad_tutorial.training.train_local` call (the package's only training
    step) with the batch order of ``client_generator(seed, epoch, 0)``, untrimmed: the chapter shows
    plain training's collapse.
    """
    return [train_local(model, rows, LocalTraining(1, batch_size, lr, trim=0.0), client_generator(seed, epoch, 0))
            for epoch in range(1, epochs + 1)]


#: The three networks of the collapse experiment, in the order its figure shows them.
COLLAPSE_VARIANTS = ("bias-free, fixed centre (the package's)", "with bias terms", "trainable centre")


@dataclass
class CollapseRun:
    """What :func:`collapse_experiment` measured, per variant (:data:`COLLAPSE_VARIANTS`)."""

    losses: pd.DataFrame  # the mean training loss of each epoch (index: epoch 1..E), one column per variant
    scores: dict[str, np.ndarray]  # held-out scores after training
    labels: np.ndarray  # held-out labels (1 = anomaly), for evaluation only
    models: dict[str, nn.Module]

    def table(self) -> pd.DataFrame:
        """Per variant: final training loss, the held-out scores' relative spread, and ROC-AUC."""
        return pd.DataFrame({
            "final training loss": self.losses.iloc[-1],
            "relative spread of held-out scores": {k: relative_spread(s) for k, s in self.scores.items()},
            "ROC-AUC": {k: roc_auc(self.labels, s) for k, s in self.scores.items()},
        }).loc[list(self.scores)]


def collapse_experiment(splits: Sequence[Split], epochs: int = 12, lr: float = 5e-3, seed: int = 0,
                        hidden: tuple[int, ...] = (64, 32), latent_dim: int = 10) -> CollapseRun:
    """Train three Deep SVDD networks on the same pooled, scaled training rows and batches.

    All three start as the same function with the same centre (the mean initial embedding,
    :func:`~fedad_tutorial.center.federated_center`): the package's bias-free network, the same
    network with zero-initialised biases (:func:`with_bias`) and with a trainable centre
    (:func:`with_trainable_center`). Training is centralized: federation neither causes nor prevents
    the collapse, and one client keeps the experiment small. A learning rate larger than the
    reference's lets the collapse happen within a few epochs.
    """
    train = np.vstack([s.train for s in splits])
    test, labels = pooled_test(splits)
    scaler = Scaler.fit(train)
    rows, test_rows = torch.from_numpy(scaler.transform(train)), torch.from_numpy(scaler.transform(test))
    torch.manual_seed(seed)
    base = ModelSpec("svdd", train.shape[1], hidden, latent_dim).build()
    with torch.no_grad():
        base.center.copy_(federated_center(base, [rows]))
    models = dict(zip(COLLAPSE_VARIANTS, (copy.deepcopy(base), with_bias(base), with_trainable_center(base)),
                      strict=True))
    losses = pd.DataFrame({name: train_epochs(model, rows, epochs, lr, seed) for name, model in models.items()},
                          index=pd.RangeIndex(1, epochs + 1, name="epoch"))
    scores = {name: score_rows(model, test_rows).numpy() for name, model in models.items()}
    return CollapseRun(losses, scores, labels, models)


def relative_spread(scores: np.ndarray) -> float:
    """The interquartile range of ``scores`` over their median (0 if the median is 0).

    Scale-free, so a healthy model whose scores are all small is not mistaken for a collapsed one;
    quartiles, not the standard deviation, because a collapsed network still moves the few rows
    far from the data (anomalies) a little, and the standard deviation is all about those.
    """
    q25, median, q75 = np.percentile(np.asarray(scores, dtype=np.float64), [25, 50, 75])
    return float((q75 - q25) / median) if median > 0 else 0.0


#: Below this relative spread, scores say "every row is at the same distance": a collapsed model.
COLLAPSE_TOL = 0.01


def looks_collapsed(scores: np.ndarray, tol: float = COLLAPSE_TOL) -> bool:
    """True if the scores of unlabelled rows are nearly all equal (:func:`relative_spread` below ``tol``).

    A collapsed Deep SVDD maps every row to (almost) the centre, so its distances barely differ:
    no labels are needed to notice. A distance distribution of a working model spreads over its
    median and more (a relative spread of order 1).
    """
    return relative_spread(scores) < tol


# --- the comparison ---------------------------------------------------------------------------------

#: The chapter's models: the course's two autoencoders and Deep SVDD.
MODELS = ("ae", "vae", "svdd")
MODEL_NAMES = {"ae": "autoencoder", "vae": "VAE", "svdd": "Deep SVDD"}


def weights_sent(kind: str, input_dim: int, config: FederatedConfig) -> int:
    """How many numbers a client sends each round for this model: its trained parameters."""
    model = replace(config, model=kind).model_spec(input_dim).build()
    return sum(p.numel() for p in model.parameters())


@dataclass
class Comparison:
    """:func:`compare_detectors`' results as two tidy tables."""

    final: pd.DataFrame  # data, model, seed, roc_auc, pr_auc (pooled held-out rows, final model), seconds
    per_round: pd.DataFrame  # data, model, seed, round, roc_auc (mean over clients, from the run's history)

    def summary(self) -> pd.DataFrame:
        """Mean and standard deviation over seeds of each (data, model), and the weights sent per round."""
        grouped = self.final.groupby(["data", "model"], sort=False)
        table = grouped[["roc_auc", "pr_auc"]].agg(["mean", "std"])
        table.columns = [f"{metric} {stat}" for metric, stat in table.columns]
        table["weights sent per round"] = grouped["weights"].first()
        table["seconds per run"] = grouped["seconds"].mean()
        return table


def compare_detectors(config: FederatedConfig, seeds: Sequence[int] = (0, 1, 2),
                      federations: Mapping[str, Callable[[int], list[Split]]] | None = None,
                      models: Sequence[str] = MODELS) -> Comparison:
    """Train every model of ``models`` federated on every federation and seed; score the same held-out rows.

    Each run is ``run_federated(splits, replace(config, model=kind, seed=config.seed + seed))``: the
    same budget and learning rate for all models (only the model changes), the seed moves both the
    data split and the initial weights. The table's ROC-AUC and PR-AUC are those of the final global
    detector on the pooled held-out rows of all clients; the per-round ROC-AUC is the run's own
    history (the mean over clients of each client's held-out ROC-AUC).
    """
    federations = FEDERATIONS if federations is None else federations
    final, per_round = [], []
    for data, make in federations.items():
        for seed in seeds:
            splits = make(seed)
            test, labels = pooled_test(splits)
            for kind in models:
                start = time.perf_counter()
                result = run_federated(splits, replace(config, model=kind, seed=config.seed + seed), progress=False)
                seconds = time.perf_counter() - start
                scores = result.detector.decision_function(test)
                name = MODEL_NAMES[kind]
                final.append({"data": data, "model": name, "seed": seed, "roc_auc": roc_auc(labels, scores),
                              "pr_auc": average_precision(labels, scores), "seconds": seconds,
                              "weights": weights_sent(kind, test.shape[1], config)})
                curve = result.history.groupby("round")["roc_auc"].mean()
                per_round.extend({"data": data, "model": name, "seed": seed, "round": int(r), "roc_auc": float(v)}
                                 for r, v in curve.items())
    return Comparison(pd.DataFrame(final), pd.DataFrame(per_round))
