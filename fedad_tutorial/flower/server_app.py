"""The Flower ``ServerApp``: FedAvg over SuperNodes, with the package's scaler, threshold and metrics.

A run, message by message (every arrow is a :class:`~flwr.app.Message` through the ``Grid``):

1. wait until ``min_clients`` nodes are connected (at most ``wait_timeout`` seconds);
2. ``query.stats`` -> each node's row count, sum and sum of squares -> the global scaler
   (:func:`~fedad_tutorial.scaling.federated_scaler`); for Deep SVDD, then ``query.center`` with
   the initial weights -> each node's embedding sum and row count -> the centre
   (:func:`~fedad_tutorial.center.center_from_sums`), put into the weights round 1 starts from;
3. per round r (Flower's :class:`~flwr.serverapp.strategy.FedAvg` loop, ``Strategy.start``):
   ``train`` -> new weights and row counts -> :func:`~fedad_tutorial.federated.fedavg`. From round 2
   on, the same ``train`` message also asks each node to evaluate the weights it receives (round
   r - 1's global model) before training on them: its metrics on its held-out rows come back with its
   new weights (one history row per node), and nodes not sampled for training get an ``evaluate``
   message in the same send. With a global threshold, ``query.histogram`` comes first -> score
   histograms of round r - 1's model -> one threshold. So a round is one message round trip (two
   with a global threshold), the least FedAvg with per-round evaluation needs;
4. after the last round, ``evaluate`` (after ``query.histogram`` for a global threshold) -> the last
   round's metrics, and each node's training-score histogram -> the saved detector's threshold (the
   federation's percentile); its config marks the last message, so a deployed node knows it is done.

A node that does not answer within ``round_timeout`` is dropped: the run goes on if at least
``min_clients`` nodes remain, and stops with an error naming the missing nodes otherwise.

In a deployment with node authentication, ``allowed`` maps the Flower node ids of the registered
keys to those keys: any other node connected to the SuperLink is never sent a message.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from logging import INFO, WARNING

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedad_tutorial.center import center_from_sums
from fedad_tutorial.detector import Detector
from fedad_tutorial.federated import FederationResult, fedavg, round_means, sample_clients
from fedad_tutorial.flower.settings import (
    CENTER,
    EVALUATE,
    EVALUATION,
    HISTOGRAM,
    STATS,
    THRESHOLD,
    TRAIN,
    FlowerRunError,
    FlowerSettings,
    message_config,
)
from fedad_tutorial.flower.weights import from_record, to_record
from fedad_tutorial.models import fixed_buffers
from fedad_tutorial.runs import write_run
from fedad_tutorial.scaling import FeatureStats, Scaler, federated_scaler
from fedad_tutorial.thresholds import ScoreHistogram

_FIRST = ["round", "client", "n_train", "n_test", "selected", "loss", "threshold", "alarm_rate"]
#: The per-round means a deployment reports (progress lines, the round's MetricRecord).
_PROGRESS = ("loss", "threshold", "precision", "recall", "f1", "roc_auc")


@dataclass
class Node:
    """What the server knows about a connected node after ``query.stats``."""

    node_id: int
    index: int  # 0-based position in the federation (seeds its split and training)
    name: str
    n_train: int
    n_test: int
    features: list[str]
    labelled: bool
    stats: FeatureStats
    key: str = ""  # the fingerprint of the node's authorized key ("" without authentication)

    def label(self) -> str:
        key = f", key {self.key}" if self.key else ""
        return f"{self.name} (node {self.index + 1}, Flower node id {self.node_id}{key})"


def _ok(replies, errors: dict[int, str] | None = None) -> dict[int, Message]:
    """The successful replies by node id; the others' error reasons go to ``errors``."""
    out = {}
    for reply in replies:
        src = reply.metadata.src_node_id
        if reply.has_error():
            log(WARNING, "node %s replied with an error: %s", src, reply.error.reason)
            if errors is not None:
                errors[src] = reply.error.reason
        else:
            out[src] = reply
    return out


def _replies(grid: Grid, messages: list[Message], timeout: float, errors: dict[int, str] | None = None
             ) -> dict[int, Message]:
    """Send, wait at most ``timeout`` s, and return the successful replies by node id."""
    if not messages:
        return {}
    return _ok(grid.send_and_receive(messages, timeout=timeout), errors)


def _connected(grid: Grid, allowed: dict | None) -> list[int]:
    return sorted(i for i in grid.get_node_ids() if allowed is None or i in allowed)


def wait_for_nodes(grid: Grid, min_clients: int, timeout: float, allowed: dict | None = None,
                   settle: float = 1.0, on_count: Callable[[int], None] | None = None) -> list[int]:
    """The ids of the connected (and, with ``allowed``, authorized) nodes once at least
    ``min_clients`` are there (error after ``timeout`` s); ``on_count`` hears how many are there."""
    start = time.monotonic()
    while True:
        nodes = _connected(grid, allowed)
        if on_count is not None:
            on_count(len(nodes))
        if len(nodes) >= min_clients:  # nodes that start together: wait until none joined for ``settle`` s
            while True:
                time.sleep(settle)
                now = _connected(grid, allowed)
                if now == nodes:
                    return nodes
                nodes = now
        if time.monotonic() - start > timeout:
            raise FlowerRunError(f"only {len(nodes)} of the {min_clients} required clients connected "
                                 f"within {timeout:g} s (--wait-timeout)")
        time.sleep(0.5)


class DetectorFedAvg(FedAvg):
    """Flower's FedAvg with the package's client sampling and averaging, and per-node history rows."""

    def __init__(self, settings: FlowerSettings, nodes: list[Node], scaler: Scaler,
                 progress=None, template: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__(fraction_train=settings.config.fraction, min_available_nodes=settings.min_clients,
                         min_train_nodes=1, min_evaluate_nodes=1)
        self.settings = settings
        self.nodes = sorted(nodes, key=lambda n: n.index)
        self.alive = {n.node_id for n in self.nodes}
        self.missing: list[str] = []  # "name (why)"
        self.missing_names: list[str] = []
        self.scaler = scaler
        self.template = template  # the global model's state dict: names and shapes of the packed weights
        self.fixed: dict[str, torch.Tensor] = {}  # buffers (Deep SVDD's centre): never trained
        self.records: list[dict] = []
        self.losses: dict[int, float] = {}
        self.progress = progress
        self.errors: dict[int, str] = {}  # node id -> the reason of its last error reply
        self._sent_at = time.monotonic()

    # -- helpers -------------------------------------------------------------------------------
    def _by_id(self) -> dict[int, Node]:
        return {n.node_id: n for n in self.nodes}

    def _config(self, rnd: int, threshold: float | None = None) -> ConfigRecord:
        return message_config(self.settings, rnd, self.scaler, threshold)

    def _messages(self, node_ids, record: RecordDict, message_type: str) -> list[Message]:
        self._sent_at = time.monotonic()
        return [Message(content=record, message_type=message_type, dst_node_id=i) for i in node_ids]

    def _collect(self, sent: list[int], replies: dict[int, Message], what: str) -> list[int]:
        """Drop the nodes that did not answer; stop the run if fewer than ``min_clients`` are left."""
        by_id = self._by_id()
        lost = [i for i in sent if i not in replies]
        if lost:
            waited = time.monotonic() - self._sent_at
            why = {i: f"replied with an error: {self.errors[i]}" if i in self.errors else
                   f"no reply after {waited:.0f} s (--round-timeout {self.settings.round_timeout:g} s)"
                   for i in lost}
            for i in lost:
                log(WARNING, "%s: %s to %s; continuing without it", by_id[i].label(), why[i], what)
            self.alive -= set(lost)
            self.missing += [f"{by_id[i].name} ({why[i]})" for i in lost]
            self.missing_names += [by_id[i].name for i in lost]
        if len(self.alive) < self.settings.min_clients:
            raise FlowerRunError(
                f"only {len(self.alive)} client(s) still answer, fewer than --min-clients "
                f"{self.settings.min_clients}; missing: {'; '.join(self.missing)}")
        return [i for i in sent if i in replies]

    def _histogram(self, replies: dict[int, Message], ok: list[int]) -> ScoreHistogram:
        """The federation's training-score histogram: the sum of the nodes' counts (never raw scores)."""
        total = None
        for i in ok:  # in node order, like federated_histogram
            h = ScoreHistogram(replies[i].content["histogram"]["counts"].numpy().astype(np.int64))
            total = h if total is None else total + h
        return total

    def _quantile(self, replies: dict[int, Message], ok: list[int]) -> float:
        """The federation's percentile from the nodes' score histograms."""
        return self._histogram(replies, ok).quantile(self.settings.config.threshold_percentile)

    def global_threshold(self, grid: Grid, arrays: ArrayRecord, rnd: int) -> float:
        """Ask the nodes for their training-score histograms under ``arrays``; return the percentile."""
        ids = [n.node_id for n in self.nodes if n.node_id in self.alive]
        record = RecordDict({"arrays": arrays, "config": self._config(rnd)})
        replies = _replies(grid, self._messages(ids, record, HISTOGRAM), self.settings.round_timeout, self.errors)
        return self._quantile(replies, self._collect(ids, replies, "histogram"))

    def center(self, grid: Grid, arrays: ArrayRecord) -> torch.Tensor:
        """Deep SVDD's centre for the weights ``arrays``: from each node's embedding sum and row count."""
        ids = [n.node_id for n in self.nodes if n.node_id in self.alive]
        record = RecordDict({"arrays": arrays, "config": self._config(0)})
        replies = _replies(grid, self._messages(ids, record, CENTER), self.settings.round_timeout, self.errors)
        ok = self._collect(ids, replies, "center")  # in node order, like federated_center
        return center_from_sums([torch.from_numpy(replies[i].content["center"]["sum"].numpy()) for i in ok],
                                [int(replies[i].content["metrics"]["num-examples"]) for i in ok])

    # -- the Strategy interface ------------------------------------------------------------------
    # Evaluating round r's global weights rides on round r + 1's messages: its ``train`` messages ask
    # the nodes to evaluate the weights they receive before training on them (nodes not sampled for
    # training get an ``evaluate`` message in the same send), so a round costs one message round trip.
    # Only the last round's weights need ``evaluate`` messages of their own.
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        chosen = sample_clients(len(self.nodes), self.settings.config.fraction, self.settings.config.seed,
                                server_round)
        train_ids = [self.nodes[k].node_id for k in chosen if self.nodes[k].node_id in self.alive]
        log(INFO, "configure_train: %d of %d nodes", len(train_ids), len(self.alive))
        if server_round == 1:  # the initial weights are not evaluated
            self._sent, self._train_ids = train_ids, train_ids
            return self._messages(train_ids, RecordDict({"arrays": arrays, "config": self._config(1)}), TRAIN)
        evaluate = self._evaluate_config(server_round - 1, grid, arrays)
        train = self._config(server_round, evaluate.get(THRESHOLD))
        train["evaluate"] = True
        others = [n.node_id for n in self.nodes if n.node_id in self.alive and n.node_id not in train_ids]
        self._sent, self._train_ids = train_ids + others, train_ids
        return (self._messages(train_ids, RecordDict({"arrays": arrays, "config": train}), TRAIN)
                + self._messages(others, RecordDict({"arrays": arrays, "config": evaluate}), EVALUATE))

    def aggregate_train(self, server_round: int, replies):
        got = _ok(replies, self.errors)
        ok = self._collect(self._sent, got, "train")
        if server_round > 1:
            self._record_evaluation(server_round - 1, got, ok)
        ok = [i for i in ok if i in self._train_ids]
        if not ok:
            raise FlowerRunError(f"round {server_round}: no training replies")
        states = [from_record(got[i].content["arrays"], self.template) for i in ok]  # node order
        weights = [int(got[i].content["metrics"]["num-examples"]) for i in ok]
        self.losses = {i: float(got[i].content["metrics"]["loss"]) for i in ok}
        averaged = {**fedavg(states, weights), **self.fixed}
        mean_loss = float(np.average(list(self.losses.values()), weights=weights))
        return to_record(averaged), MetricRecord({"loss": mean_loss})

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        if server_round < self.settings.config.rounds:
            return []  # evaluated by the next round's messages
        ids = [n.node_id for n in self.nodes if n.node_id in self.alive]
        self._sent = ids
        config = self._evaluate_config(server_round, grid, arrays)
        config["last"] = True
        return self._messages(ids, RecordDict({"arrays": arrays, "config": config}), EVALUATE)

    def aggregate_evaluate(self, server_round: int, replies):
        if server_round < self.settings.config.rounds:
            return None
        got = _ok(replies, self.errors)
        ok = self._collect(self._sent, got, "evaluate")
        self.final_histogram = self._histogram(got, ok)  # kept in the model file
        self.final_threshold = self.final_histogram.quantile(self.settings.config.threshold_percentile)
        return self._record_evaluation(server_round, got, ok)

    def _evaluate_config(self, rnd: int, grid: Grid, arrays: ArrayRecord) -> ConfigRecord:
        """The config that evaluates round ``rnd``'s weights ``arrays``; a global threshold is asked for first."""
        threshold = None
        if self.settings.config.threshold == "global":
            threshold = self.global_threshold(grid, arrays, rnd)
        return self._config(rnd, threshold)

    def _record_evaluation(self, rnd: int, got: dict[int, Message], ok: list[int]) -> MetricRecord:
        """One history row per node that evaluated round ``rnd``'s weights (``self.losses`` is that round's)."""
        by_id = self._by_id()
        rows = []
        for i in ok:
            numbers = dict(got[i].content[EVALUATION])
            numbers.pop("num-examples", None)
            row = {"round": rnd, "client": by_id[i].name, "selected": i in self.losses,
                   "loss": self.losses.get(i, math.nan), **numbers}
            rows.append({**{k: row[k] for k in _FIRST if k in row}, **row})
        self.records += rows
        means = round_means(rows, _PROGRESS)
        if self.progress is not None:
            self.progress(rnd, means)
        return MetricRecord({k: v for k, v in means.items() if math.isfinite(v)})


def _query_stats(grid: Grid, settings: FlowerSettings, node_ids: list[int], keys: dict[int, str]) -> list[Node]:
    record = RecordDict({"config": message_config(settings, 0)})
    messages = [Message(content=record, message_type=STATS, dst_node_id=i) for i in node_ids]
    errors: dict[int, str] = {}
    replies = _replies(grid, messages, settings.round_timeout, errors)
    silent = [f"{i} ({errors.get(i, 'no reply')})" for i in node_ids if i not in replies]
    if len(replies) < settings.min_clients:
        raise FlowerRunError(f"only {len(replies)} of {len(node_ids)} connected nodes answered the first "
                             f"message within {settings.round_timeout:g} s; silent Flower node ids: "
                             f"{', '.join(silent)}")
    nodes = []
    for i, reply in replies.items():
        m, info = reply.content["metrics"], reply.content["info"]
        nodes.append(Node(i, int(info["node-index"]), str(info["client"]), int(m["count"]), int(m["n-test"]),
                          [str(f) for f in info["features"]], bool(info["labelled"]),
                          FeatureStats(int(m["count"]), np.asarray(m["total"], dtype=np.float64),
                                       np.asarray(m["total-sq"], dtype=np.float64)), keys.get(i, "")))
    nodes.sort(key=lambda n: n.index)
    for attr, flag in (("index", "--node-id"), ("name", "a data file named")):
        values = [getattr(n, attr) for n in nodes]
        for value in sorted({v for v in values if values.count(v) > 1}, key=str):
            who = "; ".join(n.label() for n in nodes if getattr(n, attr) == value)
            shown = value + 1 if attr == "index" else value
            raise FlowerRunError(f"two clients were started with {flag} {shown}: {who}; give each its own")
    for n in nodes[1:]:
        if n.features != nodes[0].features:
            raise FlowerRunError(f"{n.name}: feature columns differ from {nodes[0].name} "
                                 f"({len(n.features)} vs {len(nodes[0].features)} columns; every node needs the same)")
    if len({n.labelled for n in nodes}) > 1:
        raise FlowerRunError("some node CSVs have a 'label' column and some do not")
    return nodes


def run_server(grid: Grid, settings: FlowerSettings, progress=None, allowed: dict | None = None,
               on_count: Callable[[int], None] | None = None) -> FederationResult:
    """The whole run on the ServerApp side; writes the run folder if ``settings.output_dir`` is set.

    ``allowed`` (node id -> its key, with a ``fingerprint``): only these nodes take part."""
    config = replace(settings.config, engine="loop", scaling="global")
    settings = replace(settings, config=config)
    node_ids = wait_for_nodes(grid, settings.min_clients, settings.wait_timeout, allowed, on_count=on_count)
    keys = {i: k.fingerprint for i, k in allowed.items()} if allowed is not None else {}
    nodes = _query_stats(grid, settings, node_ids, keys)
    scaler = federated_scaler([n.stats for n in nodes])
    features = nodes[0].features
    torch.manual_seed(config.seed)  # the same initial weights as run_federated
    model = config.model_spec(len(features)).build().eval()
    strategy = DetectorFedAvg(settings, nodes, scaler, progress, template=model.state_dict())
    if config.model == "svdd":  # the centre, from the initial weights, before round 1
        with torch.no_grad():
            model.center.copy_(strategy.center(grid, to_record(model.state_dict())))
        strategy.fixed = fixed_buffers(model)
    result = strategy.start(grid, to_record(model.state_dict()), num_rounds=config.rounds,
                            timeout=settings.round_timeout)
    model.load_state_dict(from_record(result.arrays, model.state_dict()))
    threshold = strategy.final_threshold  # from the last round's evaluate replies
    detector = Detector(model.eval(), scaler, threshold, features, config.score_method, strategy.final_histogram)
    fed = FederationResult(strategy.records, detector, {}, config)
    if settings.output_dir:
        data = {"source": "Flower SuperNodes", "clients": [n.name for n in nodes],
                "rows": [n.n_train + n.n_test for n in nodes], "features": features,
                "test_fraction": settings.test_fraction}
        flower = {"min_clients": settings.min_clients, "missing_clients": strategy.missing_names,
                  "missing_reasons": strategy.missing, "round_timeout": settings.round_timeout,
                  "authentication": allowed is not None,
                  "nodes": {n.name: {"flower_node_id": n.node_id, "node_id": n.index + 1, "key": n.key or None}
                            for n in nodes}}
        write_run(settings.output_dir, fed, data, flower=flower)
    return fed


def make_server_app(settings: FlowerSettings, results: list | None = None) -> ServerApp:
    """A ``ServerApp`` for a simulation; finished runs' :class:`~fedad_tutorial.federated.FederationResult`
    are appended to ``results``. (A deployment runs :func:`run_server` in ``fedad server`` itself.)"""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        fed = run_server(grid, settings)
        if results is not None:
            results.append(fed)

    return server_app


#: The ServerApp of a plain Flower deployment (``flwr run`` with the app folder ``fedad server`` writes):
#: the settings come from the run config.
app = ServerApp()


@app.main()
def _main(grid: Grid, context: Context) -> None:
    run_server(grid, FlowerSettings.from_run_config(dict(context.run_config)))
