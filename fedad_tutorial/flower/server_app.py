"""The Flower ``ServerApp``: the package's round loop over SuperNodes, message by message.

The rounds are :func:`~fedad_tutorial.federated.federated_rounds`, the loop ``fedad simulate`` runs,
and the model file is :func:`~fedad_tutorial.federated.model_detector`'s: here the loop reaches its
clients through :class:`FlowerTransport`, whose requests are Flower messages (:class:`~flwr.app.Message`) through
the ``Grid``. A run:

1. wait until ``min_clients`` nodes are connected (at most ``wait_timeout`` seconds);
2. ``query.stats`` -> each node's row count, sum and sum of squares -> the global scaler
   (:func:`~fedad_tutorial.scaling.federated_scaler`), and the federation's checks
   (:func:`~fedad_tutorial.federated.check_federation`); for Deep SVDD, then ``query.center`` with
   the initial weights -> each node's embedding sum and row count -> the centre;
3. per round r: ``train`` -> new weights, loss and row count per node -> the loop's checks and
   :func:`~fedad_tutorial.federated.fedavg`. From round 2 on, the same ``train`` message also asks each
   node to evaluate the weights it receives (round r - 1's global model) before training on them: its
   metrics on its held-out rows come back with its new weights, and nodes not sampled for training get
   an ``evaluate`` message in the same send. With a global threshold, ``query.histogram`` comes first
   -> score histograms of round r - 1's model -> one threshold. So a round is one message round trip
   (two with a global threshold);
4. after the last round, ``evaluate`` (after ``query.histogram`` for a global threshold) -> the last
   round's metrics, each node's training-score histogram (the saved threshold and histogram) and its
   standardised metrics' counts (the saved normal ranges); its config marks the last message, so a
   deployed node knows it is done.

A node that does not answer within ``round_timeout`` is dropped: the run goes on if at least
``min_clients`` nodes remain, and stops with an error naming the missing nodes otherwise.

In a deployment with node authentication, ``allowed`` maps the Flower node ids of the registered
keys to those keys: any other node connected to the SuperLink is never sent a message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from logging import INFO, WARNING
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from fedad_tutorial.errors import UserError
from fedad_tutorial.federated import (
    Evaluations,
    FederationResult,
    ModelFileCounts,
    Update,
    check_federation,
    federated_rounds,
    model_detector,
    round_means,
)
from fedad_tutorial.flower.settings import (
    CENTER,
    EVALUATE,
    EVALUATION,
    HISTOGRAM,
    STATS,
    SUBSAMPLE,
    THRESHOLD,
    TRAIN,
    TREES,
    FlowerRunError,
    FlowerSettings,
    message_config,
)
from fedad_tutorial.flower.weights import from_record, model_to_record, to_record
from fedad_tutorial.forest import Trees
from fedad_tutorial.runs import write_run
from fedad_tutorial.scaling import FeatureStats, Scaler, federated_scaler
from fedad_tutorial.thresholds import ScoreHistogram

#: The per-round means a deployment reports (progress lines).
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


class FlowerTransport:
    """The round loop's clients (:class:`~fedad_tutorial.federated.Transport`) as Flower nodes: each request
    of :func:`~fedad_tutorial.federated.federated_rounds` becomes one message per node through the ``Grid``.

    Round ``r``'s evaluation rides on round ``r + 1``'s messages: :meth:`evaluate` only remembers it, and
    :meth:`fit` asks the trainers to evaluate the weights they receive before training on them (the other
    nodes get an ``evaluate`` message in the same send), so a round costs one message round trip (two with
    a global threshold, whose histograms must come first). The last round's evaluation goes out at once,
    marked ``last``, and its replies carry what the model file needs (:meth:`model_file_counts`).

    A node that does not answer within ``round_timeout`` is dropped (:meth:`_collect`)."""

    def __init__(self, grid: Grid, settings: FlowerSettings, nodes: list[Node], scaler: Scaler) -> None:
        self.grid, self.settings, self.scaler = grid, settings, scaler
        self.nodes = sorted(nodes, key=lambda n: n.index)
        self.names = [n.name for n in self.nodes]
        self.trainer_names = [f"client {n.name}" for n in self.nodes]
        self.position = {n.node_id: k for k, n in enumerate(self.nodes)}
        self.alive = {n.node_id for n in self.nodes}
        self.missing: list[str] = []  # "name (why)"
        self.missing_names: list[str] = []
        self.errors: dict[int, str] = {}  # node id -> the reason of its last error reply
        self._sent_at = time.monotonic()
        self._pending: tuple[ConfigRecord, Callable[[Evaluations], None]] | None = None
        self._final: ModelFileCounts | None = None

    def _alive_ids(self) -> list[int]:
        return [n.node_id for n in self.nodes if n.node_id in self.alive]

    def _messages(self, node_ids, record: RecordDict, message_type: str) -> list[Message]:
        return [Message(content=record, message_type=message_type, dst_node_id=i) for i in node_ids]

    def _send(self, messages: list[Message], what: str) -> dict[int, Message]:
        """Send, wait at most ``round_timeout`` s; the successful replies by node id, in node order."""
        self._sent_at = time.monotonic()
        got = _replies(self.grid, messages, self.settings.round_timeout, self.errors)
        ok = self._collect([m.metadata.dst_node_id for m in messages], got, what)
        return {i: got[i] for i in sorted(ok, key=self.position.__getitem__)}

    def _collect(self, sent: list[int], replies: dict[int, Message], what: str) -> list[int]:
        """Drop the nodes that did not answer; stop the run if fewer than ``min_clients`` are left."""
        by_id = {n.node_id: n for n in self.nodes}
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

    def _evaluations(self, replies: dict[int, Message]) -> Evaluations:
        """What each node reported in its reply's evaluation record
        (:func:`~fedad_tutorial.federated.client_record`), by client position."""
        out = {}
        for i, reply in replies.items():
            numbers = dict(reply.content[EVALUATION])
            numbers.pop("num-examples", None)
            out[self.position[i]] = numbers
        return out

    # -- the Transport interface ---------------------------------------------------------------------
    def center_sums(self, model: torch.nn.Module) -> list[tuple[torch.Tensor, int]]:
        record = RecordDict({"arrays": to_record(model.state_dict()),
                             "config": message_config(self.settings, 0, self.scaler)})
        got = self._send(self._messages(self._alive_ids(), record, CENTER), "center")
        return [(torch.from_numpy(r.content["center"]["sum"].numpy()), int(r.content["metrics"]["num-examples"]))
                for r in got.values()]

    def fit(self, model: torch.nn.Module, chosen: list[int], rnd: int) -> dict[int, Update]:
        train_ids = [self.nodes[k].node_id for k in chosen if self.nodes[k].node_id in self.alive]
        log(INFO, "round %d: %d of %d nodes train", rnd, len(train_ids), len(self.alive))
        arrays = to_record(model.state_dict())
        pending, self._pending = self._pending, None
        config = message_config(self.settings, rnd, self.scaler)
        messages = []
        if pending is not None:  # the previous round's weights are these: evaluate them first
            evaluate, report = pending
            config = message_config(self.settings, rnd, self.scaler, evaluate.get(THRESHOLD))
            config["evaluate"] = True
            others = [i for i in self._alive_ids() if i not in train_ids]
            messages = self._messages(others, RecordDict({"arrays": arrays, "config": evaluate}), EVALUATE)
        messages = self._messages(train_ids, RecordDict({"arrays": arrays, "config": config}), TRAIN) + messages
        got = self._send(messages, "train")
        if pending is not None:
            report(self._evaluations(got))
        template = model.state_dict()
        updates = {self.position[i]: (from_record(r.content["arrays"], template), float(r.content["metrics"]["loss"]),
                                      int(r.content["metrics"]["num-examples"]))
                   for i, r in got.items() if i in train_ids}
        if not updates:
            raise FlowerRunError(f"round {rnd}: no training replies")
        return updates

    def histograms(self, model: torch.nn.Module, rnd: int) -> list[ScoreHistogram]:
        record = RecordDict({"arrays": model_to_record(model),
                             "config": message_config(self.settings, rnd, self.scaler)})
        got = self._send(self._messages(self._alive_ids(), record, HISTOGRAM), "histogram")
        return [_histogram(r) for r in got.values()]

    def evaluate(self, model: torch.nn.Module, rnd: int, threshold: float | None, last: bool,
                 report: Callable[[Evaluations], None]) -> None:
        config = message_config(self.settings, rnd, self.scaler, threshold)
        if not last:
            self._pending = (config, report)  # sent with the next round's training
            return
        config["last"] = True
        record = RecordDict({"arrays": model_to_record(model), "config": config})
        got = self._send(self._messages(self._alive_ids(), record, EVALUATE), "evaluate")
        report(self._evaluations(got))
        self._final = ModelFileCounts([_histogram(r) for r in got.values()],
                                      [r.content["feature-counts"]["counts"].numpy() for r in got.values()])

    def model_file_counts(self, model: torch.nn.Module) -> ModelFileCounts:
        if self._final is None:
            raise FlowerRunError("the model file's counts come with the last round's evaluation, which was not sent")
        return self._final

    def train_counts(self) -> list[int]:
        return [n.n_train for n in self.nodes]

    def trees(self, chosen: list[int], n_trees: int, max_samples: int, rnd: int) -> dict[int, Trees]:
        ids = [self.nodes[k].node_id for k in chosen if self.nodes[k].node_id in self.alive]
        log(INFO, "round %d: %d nodes grow %d isolation trees each", rnd, len(ids), n_trees)
        if self._pending is not None:  # the previous round's evaluation goes first (an ensemble's last AE round)
            raise FlowerRunError("an evaluation is pending before the forest's round")
        config = message_config(self.settings, rnd, self.scaler)
        config[SUBSAMPLE] = int(max_samples)
        got = self._send(self._messages(ids, RecordDict({"config": config}), TREES), "trees")
        out = {}
        for i, reply in got.items():
            try:
                arrays = reply.content["arrays"]
                out[self.position[i]] = Trees.from_state({name: arrays[name].numpy() for name in arrays})
            except (KeyError, ValueError, TypeError) as exc:
                raise UserError(f"{self.nodes[self.position[i]].label()} sent trees that are not a forest "
                                f"({str(exc)[:160]})") from None
        if not out:
            raise FlowerRunError(f"round {rnd}: no trees")
        return out


def _histogram(reply: Message) -> ScoreHistogram:
    return ScoreHistogram.from_counts(reply.content["histogram"]["counts"].numpy().astype(np.int64))


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
    indices = [n.index for n in nodes]
    for index in sorted({v for v in indices if indices.count(v) > 1}):
        who = "; ".join(n.label() for n in nodes if n.index == index)
        raise FlowerRunError(f"two clients were started with --node-id {index + 1}: {who}; give each its own")
    try:  # the checks run_federated makes, on what the nodes told
        check_federation([n.name for n in nodes], [n.features for n in nodes], [n.labelled for n in nodes],
                         [n.n_train for n in nodes], lambda k: nodes[k].label())
    except UserError as exc:
        raise FlowerRunError(str(exc)) from None
    return nodes


def run_server(grid: Grid, settings: FlowerSettings, progress=None, allowed: dict | None = None,
               on_count: Callable[[int], None] | None = None, new_output: bool = False) -> FederationResult:
    """The whole run on the ServerApp side: :func:`~fedad_tutorial.federated.federated_rounds` over the nodes,
    :func:`~fedad_tutorial.federated.model_detector` for the model file; writes the run folder if
    ``settings.output_dir`` is set. ``progress(round, means)`` hears each round's means.

    ``allowed`` (node id -> its key, with a ``fingerprint``): only these nodes take part. ``new_output``: the
    run folder must not exist or be empty when it is written, even a former run folder is kept."""
    config = replace(settings.config, engine="loop", scaling="global")
    settings = replace(settings, config=config)
    node_ids = wait_for_nodes(grid, settings.min_clients, settings.wait_timeout, allowed, on_count=on_count)
    keys = {i: k.fingerprint for i, k in allowed.items()} if allowed is not None else {}
    nodes = _query_stats(grid, settings, node_ids, keys)
    scaler = federated_scaler([n.stats for n in nodes])
    features = nodes[0].features
    transport = FlowerTransport(grid, settings, nodes, scaler)

    def on_round(rnd: int, rows: list[dict]) -> None:
        if progress is not None:
            progress(rnd, round_means(rows, _PROGRESS))

    model, records, counts = federated_rounds(transport, config, len(features), on_round=on_round)
    fed = FederationResult(records, model_detector(model, scaler, features, config, counts), {}, config)
    if settings.output_dir:
        data = {"source": "Flower SuperNodes", "clients": [n.name for n in nodes],
                "rows": [n.n_train + n.n_test for n in nodes], "features": features,
                "test_fraction": settings.test_fraction}
        flower = {"min_clients": settings.min_clients, "missing_clients": transport.missing_names,
                  "missing_reasons": transport.missing, "round_timeout": settings.round_timeout,
                  "authentication": allowed is not None,
                  "nodes": {n.name: {"flower_node_id": n.node_id, "node_id": n.index + 1, "key": n.key or None}
                            for n in nodes}}
        if new_output:  # still free after training?
            check_new_output(settings.output_dir)
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


def plain_run_settings(run_config: dict) -> FlowerSettings:
    """The settings of a run started by plain ``flwr run`` (not ``fedad server``), checked before any node is
    asked anything: ``output-dir`` must be a new folder (:func:`check_new_output`)."""
    settings = FlowerSettings.from_run_config(run_config)
    check_new_output(settings.output_dir)
    return settings


def check_new_output(output_dir: str) -> Path:
    """A plain Flower run's run folder: an absolute path (the ServerApp runs in the SuperLink's working folder,
    not the caller's) to a folder that does not exist yet or is empty. Such a run never replaces a folder, not
    even an earlier run folder (whose App folder's run config names that folder). :class:`UserError` otherwise."""
    how = "give a new one: flwr run APP CONNECTION --run-config 'output-dir=\"/absolute/new/folder\"'"
    output = Path(output_dir)
    if not output_dir or not output.is_absolute():
        raise UserError(f"the run config's output-dir {output_dir!r} is not an absolute path; {how}")
    if output.exists() and not (output.is_dir() and not any(output.iterdir())):
        raise UserError(f"{output}: already exists, and a plain Flower run never replaces a folder; {how}")
    return output


#: The ServerApp of a plain Flower deployment (``flwr run`` with an App folder naming it, see
#: docs/deployment.md): the settings come from the run config (:func:`plain_run_settings`).
app = ServerApp()


@app.main()
def _main(grid: Grid, context: Context) -> None:
    run_server(grid, plain_run_settings(dict(context.run_config)), new_output=True)
