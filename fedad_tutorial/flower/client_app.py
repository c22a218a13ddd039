"""The Flower ``ClientApp``: one node's side of the federation, on Flower's Message API.

Each handler receives a :class:`~flwr.app.Message` (a ``RecordDict`` of the model's weights,
packed by :mod:`~fedad_tutorial.flower.weights`, and a ``ConfigRecord`` of settings) and returns
a reply. The node's rows never leave it: replies carry weights, a row count, summary statistics,
a score histogram, an embedding sum (Deep SVDD's centre) or metrics on held-out rows. With DP-FedAvg
(``dp-clip`` above 0) a node's new weights are clipped on the node before they leave it
(:func:`dp_clipping_mod`, Flower's ``fixedclipping_mod``).

Where the node's data comes from (``Context.node_config``):

- a deployed SuperNode (``fedad client``): ``data-path`` (its CSV) and ``node-id`` (1, 2, ...;
  node ``k`` uses the same split and training seeds as the ``k``-th CSV in ``fedad simulate``);
- a simulation: ``partition-id`` (0, 1, ...) indexes the list of CSV paths given to
  :func:`make_client_app`.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from fedad_tutorial.center import embedding_sums
from fedad_tutorial.csvio import read_node_csv
from fedad_tutorial.data import Split, node_split
from fedad_tutorial.federated import client_record
from fedad_tutorial.flower.settings import EVALUATION, SUBSAMPLE, MessageConfig, config_from_message, key
from fedad_tutorial.flower.weights import model_from_record, state_to_record, to_record
from fedad_tutorial.forest import grow_trees
from fedad_tutorial.scaling import FeatureStats
from fedad_tutorial.thresholds import ScoreHistogram, feature_counts
from fedad_tutorial.training import client_generator, score_rows, train_local


@functools.lru_cache(maxsize=16)
def _load(path: str, mtime: float, node_index: int, test_fraction: float, seed: int) -> tuple[Split, list[str]]:
    node = read_node_csv(path)
    return node_split(node, node_index, test_fraction, seed), node.feature_names


def _node(context: Context, data_paths: tuple[str, ...] | None) -> tuple[str, int]:
    """The node's CSV path and its 0-based index (which seeds its split and its training)."""
    cfg = context.node_config
    if "data-path" in cfg:
        return str(cfg["data-path"]), int(cfg.get("node-id", 1)) - 1
    if data_paths is not None and "partition-id" in cfg:
        k = int(cfg["partition-id"])
        return data_paths[k], k
    raise ValueError("this SuperNode has no data: start it with --node-config 'data-path=\"FILE.csv\" node-id=N'")


def _split(context: Context, data_paths, mc: MessageConfig) -> tuple[Split, list[str], int]:
    path, k = _node(context, data_paths)
    split, names = _load(path, os.path.getmtime(path), k, mc.test_fraction, mc.seed)
    return split, names, k


def _model(msg: Message, mc: MessageConfig, dim: int) -> torch.nn.Module:
    return model_from_record(msg.content["arrays"], mc.spec(dim))


def _scores(model, rows: np.ndarray, mc: MessageConfig) -> np.ndarray:
    return score_rows(model, torch.from_numpy(mc.scaler.transform(rows)), mc.score_method).numpy()


def _evaluation(model, split: Split, mc: MessageConfig) -> tuple[MetricRecord, np.ndarray]:
    """The node's :func:`~fedad_tutorial.federated.client_record` (the federation's threshold, or the node's own
    percentile of its training scores; metrics on its held-out rows), and those training scores."""
    train_scores = _scores(model, split.train, mc)
    record = client_record(split, train_scores, _scores(model, split.test, mc), mc.threshold,
                           mc.threshold_percentile)
    return MetricRecord({"num-examples": int(split.test.shape[0]), **record}), train_scores


def warm_up() -> None:
    """Do now what PyTorch does on a process's first training step: creating the first optimizer
    imports much of PyTorch's compiler stack, seconds of CPU a deployed node would otherwise spend
    inside its first ``train`` message, which every node of the round waits for. Touches no
    random state and no data."""
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def dp_clipping_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """DP-FedAvg's clipping on the node (a mod of the ``train`` handler): with ``dp-clip`` above 0 in the
    message's configuration, Flower's ``fixedclipping_mod`` clips the node's update (its new weights minus
    the weights it received) to that L2 norm before the reply leaves the node, so the server only ever
    sees clipped updates; without it, the reply is the handler's. The server clips again and adds the
    noise (:func:`fedad_tutorial.privacy.dp_fedavg_aggregator`)."""
    config = msg.content["config"]
    clip = float(config.get(key("dp_clip"), 0.0))
    if clip <= 0:
        return call_next(msg, context)
    config[KEY_CLIPPING_NORM] = clip  # where fixedclipping_mod reads it
    return fixedclipping_mod(msg, context, call_next)


def make_client_app(data_paths: list[str] | None = None) -> ClientApp:
    """A ``ClientApp``; ``data_paths`` (one CSV per simulated node) is only needed in a simulation."""
    paths = tuple(str(p) for p in data_paths) if data_paths is not None else None
    app = ClientApp()

    @app.query("stats")
    def stats(msg: Message, context: Context) -> Message:
        """Round 0: sufficient statistics of the training rows, for the global scaler."""
        mc = config_from_message(msg.content["config"])
        split, names, k = _split(context, paths, mc)
        s = FeatureStats.of(split.train)
        metrics = MetricRecord({"num-examples": s.count, "count": s.count, "total": s.total.tolist(),
                                "total-sq": s.total_sq.tolist(), "n-test": int(split.test.shape[0])})
        info = ConfigRecord({"client": split.name, "features": list(names), "node-index": k,
                             "labelled": split.test_labels is not None})
        return Message(RecordDict({"metrics": metrics, "info": info}), reply_to=msg)

    @app.train(mods=[dp_clipping_mod])
    def train(msg: Message, context: Context) -> Message:
        """FedAvg's local step: start from the global weights, train on the node's training rows.

        With ``evaluate`` in its config, the node first evaluates the global weights it received (the
        previous round's model) as an ``evaluate`` message would: one message per round instead of two."""
        mc = config_from_message(msg.content["config"])
        split, _, k = _split(context, paths, mc)
        model = _model(msg, mc, split.train.shape[1])
        reply = RecordDict()
        if msg.content["config"].get("evaluate", False):
            reply[EVALUATION] = _evaluation(model, split, mc)[0]
        rows = torch.from_numpy(mc.scaler.transform(split.train))
        loss = train_local(model, rows, mc.training, client_generator(mc.seed, mc.server_round, k))
        reply["arrays"] = to_record(model.state_dict())
        reply["metrics"] = MetricRecord({"num-examples": int(split.train.shape[0]), "loss": float(loss)})
        return Message(reply, reply_to=msg)

    @app.train("trees")
    def trees(msg: Message, context: Context) -> Message:
        """A forest's one round: ``trees-per-client`` isolation trees on the node's scaled training rows, each on
        the federation's shared sub-sample size, seeded ``seed + node index`` (as client ``k`` of ``simulate``);
        they go back as arrays (:class:`~fedad_tutorial.forest.Trees`): split features, thresholds, children
        and node sizes, never a row."""
        mc = config_from_message(msg.content["config"])
        split, _, k = _split(context, paths, mc)
        grown = grow_trees(mc.scaler.transform(split.train), mc.config.trees_per_client,
                           int(msg.content["config"][SUBSAMPLE]), mc.seed + k)
        return Message(RecordDict({"arrays": state_to_record(grown.state()),
                                   "metrics": MetricRecord({"num-examples": int(split.train.shape[0])})}),
                       reply_to=msg)

    @app.query("center")
    def center(msg: Message, context: Context) -> Message:
        """Deep SVDD, before round 1: the sum of the training rows' embeddings under the received
        (initial) weights, and their count (never the rows or their embeddings)."""
        mc = config_from_message(msg.content["config"])
        split, _, _ = _split(context, paths, mc)
        total, count = embedding_sums(_model(msg, mc, split.train.shape[1]),
                                      torch.from_numpy(mc.scaler.transform(split.train)))
        return Message(RecordDict({"center": ArrayRecord({"sum": Array(total.numpy())}),
                                   "metrics": MetricRecord({"num-examples": count})}), reply_to=msg)

    @app.query("histogram")
    def histogram(msg: Message, context: Context) -> Message:
        """Counts of the training rows' scores on the shared bins (never the scores themselves)."""
        mc = config_from_message(msg.content["config"])
        split, _, _ = _split(context, paths, mc)
        counts = ScoreHistogram.of(_scores(_model(msg, mc, split.train.shape[1]), split.train, mc)).counts
        return Message(RecordDict({"histogram": ArrayRecord({"counts": Array(counts)}),
                                   "metrics": MetricRecord({"num-examples": int(split.train.shape[0])})}),
                       reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        """Metrics of the received weights on held-out rows. The last round's reply also carries what the
        model file needs: the training scores' histogram and the standardised training rows' counts per
        metric (:func:`~fedad_tutorial.thresholds.feature_counts`: the normal ranges), never the rows."""
        mc = config_from_message(msg.content["config"])
        split, _, _ = _split(context, paths, mc)
        metrics, train_scores = _evaluation(_model(msg, mc, split.train.shape[1]), split, mc)
        reply = RecordDict({EVALUATION: metrics, "info": ConfigRecord({"client": split.name})})
        if msg.content["config"].get("last", False):
            reply["histogram"] = ArrayRecord({"counts": Array(ScoreHistogram.of(train_scores).counts)})
            reply["feature-counts"] = ArrayRecord({"counts": Array(feature_counts(mc.scaler.transform(split.train)))})
        return Message(reply, reply_to=msg)

    return app


#: The ClientApp a deployed SuperNode runs (``fedad_tutorial.flower.client_app:app``).
app = make_client_app()
