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
``min_clients`` nodes remain, and stops with an error naming the missing nodes otherwise. A dropped node
that connects again (the same ``--node-id``, data and key) takes part again from the next round
(:meth:`FlowerTransport._readmit`).

``fedad server`` keeps a checkpoint of every completed round in the run folder, and continues a killed
server's run from it (:mod:`~fedad_tutorial.flower.checkpoint`, ``--resume``).

In a deployment with node authentication, ``allowed`` maps the Flower node ids of the registered
keys to those keys: any other node connected to the SuperLink is never sent a message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
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
    fedavg_aggregator,
    federated_rounds,
    model_detector,
    round_means,
)
from fedad_tutorial.flower.checkpoint import Checkpoint, NodeRecord, save_checkpoint, served
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
from fedad_tutorial.flower.weights import from_record, model_to_record, state_from_record, to_record
from fedad_tutorial.forest import Trees
from fedad_tutorial.runs import write_run
from fedad_tutorial.scaling import FeatureStats, Scaler, federated_scaler
from fedad_tutorial.thresholds import ScoreHistogram

#: Seconds a round waits at most for the answers of nodes that may be rejoining (:meth:`FlowerTransport._readmit`).
PROBE_WAIT = 2.0
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

    def __init__(self, grid: Grid, settings: FlowerSettings, nodes: list[Node], scaler: Scaler,
                 allowed: dict | None = None, say: Callable[[str], None] | None = None) -> None:
        self.grid, self.settings, self.scaler = grid, settings, scaler
        self.allowed, self.say = allowed, say
        self.keys = {i: k.fingerprint for i, k in allowed.items()} if allowed is not None else {}
        self.probes: dict[str, int] = {}  # message id of a query.stats sent to a node that may be rejoining -> node id
        self.probed: set[int] = set()
        self.nodes = sorted(nodes, key=lambda n: n.index)
        self.names = [n.name for n in self.nodes]
        self.trainer_names = [f"client {n.name}" for n in self.nodes]
        self.position = {n.node_id: k for k, n in enumerate(self.nodes)}
        self.alive = {n.node_id for n in self.nodes}
        self.missing: list[str] = []  # "name (why)"
        self.missing_names: list[str] = []
        self.errors: dict[int, str] = {}  # node id -> the reason of its last error reply
        self.rejoined: list[str] = []  # "name (round r)"
        self.round = 0  # the round being sent (0: before round 1)
        self._sent_at = time.monotonic()
        self._pending: tuple[ConfigRecord, Callable[[Evaluations], None]] | None = None
        self._final: ModelFileCounts | None = None
        #: The global weights the last :meth:`fit` started from: the round whose evaluation it reports.
        self.evaluated_state: dict[str, torch.Tensor] | None = None

    def _tell(self, level: int, text: str) -> None:
        """One line to Flower's log and, in ``fedad server``, to its console."""
        log(level, "%s", text)
        if self.say is not None:
            self.say(text)

    def _readmit(self, rnd: int) -> None:
        """Let dropped nodes back in: every connected (authorized) node the run is not using is asked
        ``query.stats`` once; a reply from a dropped node's ``--node-id`` with the same data (and key) makes
        it take part again from this round. The replies are awaited :data:`PROBE_WAIT` s at most, and
        collected again at each later round (a node restarted under the same key takes its query then)."""
        fresh = [i for i in _connected(self.grid, self.allowed) if i not in self.alive and i not in self.probed]
        if fresh:
            record = RecordDict({"config": message_config(self.settings, 0)})
            ids = self.grid.push_messages(self._messages(fresh, record, STATS))
            self.probes.update({m: i for m, i in zip(ids, fresh, strict=True) if m})
            self.probed.update(fresh)
        end = time.monotonic() + (min(PROBE_WAIT, self.settings.round_timeout) if fresh else 0.0)
        while self.probes:
            for reply in self.grid.pull_messages(list(self.probes)):
                node_id = self.probes.pop(reply.metadata.reply_to_message_id, None)
                if node_id is None:
                    continue
                if reply.has_error():  # Flower's word that the node is gone: it may be asked again later
                    self.probed.discard(node_id)
                    continue
                self._rejoin(_node(node_id, reply, self.keys), rnd)
            if time.monotonic() >= end:
                break
            time.sleep(0.1)

    def _rejoin(self, node: Node, rnd: int) -> None:
        known = next((n for n in self.nodes if n.index == node.index), None)
        if known is None or known.node_id in self.alive or _identity(known) != _identity(node):
            why = ("it is not part of this run" if known is None else "its --node-id already takes part"
                   if known.node_id in self.alive else "its data or key differ from the node's that was dropped")
            self._tell(WARNING, f"{node.label()} connected but does not take part: {why}")
            return
        del self.position[known.node_id]
        known.node_id = node.node_id
        self.position[node.node_id] = self.nodes.index(known)
        self.alive.add(node.node_id)
        self.missing_names.remove(known.name)
        self.rejoined.append(f"{known.name} (round {rnd})")
        self._tell(INFO, f"{known.label()} rejoined at round {rnd}")

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
                self._tell(WARNING, f"round {self.round}: dropped {by_id[i].label()}: {why[i]} to {what}; "
                                    "continuing without it")
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
        self.round = rnd
        self._readmit(rnd)
        train_ids = [self.nodes[k].node_id for k in chosen if self.nodes[k].node_id in self.alive]
        self.evaluated_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
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
        self.round = rnd
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
        self.round = rnd
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
        self.round = rnd
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
                out[self.position[i]] = Trees.from_state(state_from_record(reply.content["arrays"]))
            except (KeyError, ValueError, TypeError) as exc:
                raise UserError(f"{self.nodes[self.position[i]].label()} sent trees that are not a forest "
                                f"({str(exc)[:160]})") from None
        if not out:
            raise FlowerRunError(f"round {rnd}: no trees")
        return out


def _histogram(reply: Message) -> ScoreHistogram:
    return ScoreHistogram.from_counts(reply.content["histogram"]["counts"].numpy().astype(np.int64))


def _node(node_id: int, reply: Message, keys: dict[int, str]) -> Node:
    """The node that sent this ``query.stats`` reply."""
    m, info = reply.content["metrics"], reply.content["info"]
    return Node(node_id, int(info["node-index"]), str(info["client"]), int(m["count"]), int(m["n-test"]),
                [str(f) for f in info["features"]], bool(info["labelled"]),
                FeatureStats(int(m["count"]), np.asarray(m["total"], dtype=np.float64),
                             np.asarray(m["total-sq"], dtype=np.float64)), keys.get(node_id, ""))


def _identity(node: Node | NodeRecord) -> tuple:
    """What must not change when a node comes back (after a drop, or a server's restart): its ``--node-id``,
    its data's name, row counts, features and labels, and its key."""
    return node.index, node.name, node.key, node.n_train, node.n_test, tuple(node.features), node.labelled


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
    nodes = [_node(i, reply, keys) for i, reply in replies.items()]
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


def _resumed_nodes(nodes: list[Node], done: Checkpoint) -> list[Node]:
    """The checkpoint's federation with the Flower node ids of this server's nodes: each node that answered
    must be one the checkpoint lists as still answering, with the same data and key; a node dropped before
    the checkpoint stays dropped (id -1 - index). :class:`FlowerRunError` naming the first mismatch."""
    now = {n.index: n for n in nodes}
    wanted = {r.index for r in done.nodes if r.alive}
    extra = sorted(set(now) - wanted)
    if extra:
        raise FlowerRunError(f"node(s) {', '.join(now[k].label() for k in extra)} joined the resumed run, but its "
                             "checkpoint does not list them as taking part")
    out = []
    for r in done.nodes:
        node = now.get(r.index)
        if node is None:
            out.append(Node(-1 - r.index, r.index, r.name, r.n_train, r.n_test, list(r.features), r.labelled,
                            FeatureStats(r.n_train, np.zeros(len(r.features)), np.zeros(len(r.features))), r.key))
            continue
        if _identity(node) != _identity(r):
            raise FlowerRunError(f"{node.label()} is not the node the checkpoint knows as node {r.index + 1} "
                                 f"(then: {r.name}, key {r.key or 'none'}, {r.n_train} + {r.n_test} rows); start "
                                 "each client with the data and key it had")
        out.append(node)
    return out


def _checkpoint(settings: FlowerSettings, transport: FlowerTransport, scaler: Scaler, authentication: bool,
                rnd: int, records: list[dict]) -> Checkpoint:
    nodes = [NodeRecord(n.index, n.name, n.key, n.n_train, n.n_test, tuple(n.features), n.labelled,
                        n.node_id in transport.alive) for n in transport.nodes]
    return Checkpoint(rnd, settings.to_run_config(), transport.evaluated_state, records, scaler, nodes,
                      list(transport.missing), authentication)


def run_server(grid: Grid, settings: FlowerSettings, progress=None, allowed: dict | None = None,
               on_count: Callable[[int], None] | None = None, new_output: bool = False,
               checkpoints: bool = False, resume: Checkpoint | None = None,
               say: Callable[[str], None] | None = None) -> FederationResult:
    """The whole run on the ServerApp side: :func:`~fedad_tutorial.federated.federated_rounds` over the nodes,
    :func:`~fedad_tutorial.federated.model_detector` for the model file; writes the run folder if
    ``settings.output_dir`` is set. ``checkpoints`` (``fedad server``): while it trains, it replaces the run
    folder's checkpoint after every completed round but the last (:mod:`~fedad_tutorial.flower.checkpoint`).
    ``progress(round, means)`` hears each round's means.

    ``allowed`` (node id -> its key, with a ``fingerprint``): only these nodes take part. ``new_output``: the
    run folder must not exist or be empty when it is written, even a former run folder is kept. ``resume``:
    continue that checkpoint's run after its round, with the nodes it lists as still answering. ``say`` hears
    a line for each node dropped or rejoining."""
    settings = served(settings)
    config = settings.config
    wanted = settings.min_clients if resume is None else sum(r.alive for r in resume.nodes)
    node_ids = wait_for_nodes(grid, wanted, settings.wait_timeout, allowed, on_count=on_count)
    keys = {i: k.fingerprint for i, k in allowed.items()} if allowed is not None else {}
    nodes = _query_stats(grid, settings, node_ids, keys)
    if resume is None:
        scaler, history, first = federated_scaler([n.stats for n in nodes]), [], 1
    else:
        nodes, scaler, history, first = _resumed_nodes(nodes, resume), resume.scaler, list(resume.history), \
            resume.round + 1
    features = nodes[0].features
    transport = FlowerTransport(grid, settings, nodes, scaler, allowed, say)
    if resume is not None:
        transport.alive = {n.node_id for n in nodes if n.node_id >= 0}
        transport.missing = list(resume.missing)
        transport.missing_names = [r.name for r in resume.nodes if not r.alive]
        log(INFO, "resuming after round %d of %d with %d node(s)", resume.round, config.rounds, len(transport.alive))

    def on_round(rnd: int, rows: list[dict]) -> None:
        history.extend(rows)
        if checkpoints and rnd < config.rounds:  # the last round's state is the run folder itself
            save_checkpoint(settings.output_dir, _checkpoint(settings, transport, scaler, allowed is not None,
                                                             rnd, history))
        if progress is not None:
            progress(rnd, round_means(rows, _PROGRESS))

    hooks = (fedavg_aggregator, None, resume.state if resume is not None else None)
    model, _, counts = federated_rounds(transport, config, len(features), on_round=on_round, hooks=hooks,
                                        first_round=first)
    fed = FederationResult(history, model_detector(model, scaler, features, config, counts), {}, config)
    if settings.output_dir:
        data = {"source": "Flower SuperNodes", "clients": [n.name for n in nodes],
                "rows": [n.n_train + n.n_test for n in nodes], "features": features,
                "test_fraction": settings.test_fraction}
        flower = {"min_clients": settings.min_clients, "missing_clients": transport.missing_names,
                  "missing_reasons": transport.missing, "rejoined": transport.rejoined,
                  "round_timeout": settings.round_timeout,
                  "authentication": allowed is not None,
                  "nodes": {n.name: {"flower_node_id": n.node_id, "node_id": n.index + 1, "key": n.key or None}
                            for n in nodes}}
        if new_output:  # still free after training?
            check_new_output(settings.output_dir)
        write_run(settings.output_dir, fed, data, flower=flower, unfinished=True)  # its own checkpoint
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
