"""Network intrusion detection on real connection records: web and mail servers as a federation (chapter 15).

The data are the KDD Cup 1999 connection records as published in ADBench (shipped with the
package, see ``resources/adbench/README.md``): one row per TCP connection with its ``duration``
(seconds), ``src_bytes`` (client to server) and ``dst_bytes`` (server to client), and a label that
says whether the connection belonged to an attack. HTTP: 567,498 connections, 0.39 % attacks; SMTP:
95,156 connections, 0.03 % attacks.

:func:`connection_federation` makes a federation an operator would recognise:

- **web servers** (HTTP): a random sample of the connections (the whole log is large; a sample keeps
  its attack rate) dealt to the servers by traffic profile with ``fedad split``'s non-IID ``cluster``
  rule (:func:`~fedad_tutorial.partition.partition_rows`): every server sees a different mix of
  request and response sizes, as different sites would;
- **mail servers** (SMTP): every connection, dealt out at random (relays behind one DNS name see the
  same mix);
- each server trains on a random sample of ``train_rows`` of its connections, *unlabelled*: the
  attacks among them stay in. All its other connections are its held-out rows; labels are read only
  to evaluate those.

Byte counts span six orders of magnitude, so the features are :func:`log_features`. The detectors
(:func:`detector_scores`) are the federated autoencoder, the federated isolation forest, the scaled
norm (it needs only the federated mean and standard deviation) and PCA on the pooled training rows
(a centralized reference). :func:`evaluate` adds the number an operator plans with,
:func:`alarms_per_10k`: how many alarms per 10,000 connections it costs to catch a given share of
the attacks.

>>> raw, labels = load_connections("smtp")
>>> raw.shape, int(labels.sum()), raw[:2].tolist()
((95156, 3), 30, [[1.0, 1207.0, 329.0], [1.0, 1679.0, 333.0]])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from fedad_tutorial.chapters.baselines import norm_scores, pca_scores
from fedad_tutorial.chapters.datasets import Hospital
from fedad_tutorial.chapters.forest import FederatedIsolationForest
from fedad_tutorial.data import NodeData
from fedad_tutorial.defaults import RECOMMENDED
from fedad_tutorial.errors import UserError
from fedad_tutorial.federated import FederatedConfig, run_federated
from fedad_tutorial.metrics import average_precision, roc_auc
from fedad_tutorial.partition import partition_rows

FEATURES = ["duration", "src_bytes", "dst_bytes"]
#: The packaged files (``numpy.load(..., allow_pickle=False)``), one per service.
FILES = {"http": "16_http.npz", "smtp": "34_smtp.npz"}
DATA_DIR = Path(__file__).resolve().parents[1] / "resources" / "adbench"
#: Shares of the attacks the alarm budget is quoted at: half of them, and nearly all.
RECALLS = (0.5, 0.9)
#: Trees each server adds to the federated isolation forest.
TREES_PER_SERVER = 50
#: The federated autoencoder of the chapter: ``fedad``'s recommended training (trimmed), a bottleneck
#: narrower than the three features (a wider code could copy its input), large batches for long logs.
AE_CONFIG = replace(RECOMMENDED, hidden=(16,), latent_dim=2, batch_size=256, rounds=5, local_epochs=2)
#: Deep SVDD (chapter 14) trained as the autoencoder is: the same encoder sizes, rounds and trimming.
SVDD_CONFIG = replace(AE_CONFIG, model="svdd")


@dataclass
class Server(Hospital):
    """One node: a web or mail server with its (unlabelled) training rows and held-out rows."""

    service: str = "http"

    @property
    def label(self) -> str:
        return f"{self.name} ({'web' if self.service == 'http' else 'mail'})"


def load_connections(service: str) -> tuple[np.ndarray, np.ndarray]:
    """The connection records of ``service`` ("http" or "smtp"): counts (rows x 3, float64) and labels.

    The published values are ``log(count + 0.1)``; they are turned back into whole counts here, so
    that the chapter starts from what a connection log holds.
    """
    if service not in FILES:
        raise UserError(f"service must be one of {sorted(FILES)}, got {service!r}")
    with np.load(DATA_DIR / FILES[service], allow_pickle=False) as archive:
        logged, labels = archive["X"], archive["y"]
    return np.rint(np.exp(logged) - 0.1), labels.astype(np.int64)


def log_features(counts: np.ndarray) -> np.ndarray:
    """``log(1 + count)`` per value, float32: byte counts and durations on a scale where a factor matters.

    A 10 MB download and a 100-byte request differ by 10^5 in raw bytes: standardised raw values are
    dominated by a few huge transfers and squeeze every small connection to the same point. In
    logs, 100 -> 1,000 bytes is the same step as 1 MB -> 10 MB, and zero stays zero.

    >>> log_features(np.array([[0.0, 9.0, 99.0]])).astype(float).round(3).tolist()
    [[0.0, 2.303, 4.605]]
    """
    return np.log1p(np.asarray(counts, dtype=np.float64)).astype(np.float32)


def connection_federation(web_servers: int = 6, mail_servers: int = 2, http_rows: int | None = 60_000,
                          train_rows: int = 3_000, log: bool = True, seed: int = 0) -> list[Server]:
    """Web servers (HTTP, non-IID by traffic profile) and mail servers (SMTP, IID) as one federation.

    Args:
        web_servers, mail_servers: nodes per service (0 leaves a service out); named ``node_1, ...``,
            web servers first, so that :func:`~fedad_tutorial.chapters.datasets.export_hospitals` writes CSVs
            ``fedad simulate`` reads.
        http_rows: random sample of the HTTP connections (None: all 567,498); SMTP is used whole.
        train_rows: connections each server trains on (at most half of its rows); the rest are held out.
        log: features are :func:`log_features` (else the raw counts). Profiles are found on logs either way.
        seed: the sample, the profile split and the training rows.

    Returns:
        One :class:`Server` per node; its ``train`` labels mark the hidden attacks (evaluation only).
    """
    if web_servers + mail_servers < 1 or min(web_servers, mail_servers) < 0:
        raise UserError(f"need at least one server, got {web_servers} web and {mail_servers} mail servers")
    rng = np.random.default_rng(seed)
    servers: list[Server] = []
    for service, count, by in (("http", web_servers, "cluster"), ("smtp", mail_servers, "random")):
        if count == 0:
            continue
        counts, labels = load_connections(service)
        if service == "http" and http_rows is not None and http_rows < len(labels):
            keep = np.sort(rng.choice(len(labels), size=http_rows, replace=False))
            counts, labels = counts[keep], labels[keep]
        logged = log_features(counts)
        features = logged if log else counts.astype(np.float32)
        for rows in partition_rows(logged, count, by, seed):
            rows = rng.permutation(rows)
            cut = min(train_rows, rows.size // 2)
            name = f"node_{len(servers) + 1}"
            part = {p: NodeData(name, features[idx], FEATURES, labels[idx])
                    for p, idx in (("train", rows[:cut]), ("test", np.sort(rows[cut:])))}
            servers.append(Server(name, part["train"], part["test"], service))
    return servers


def federated_autoencoder(servers: Sequence[Server], seed: int = 0,
                          config: FederatedConfig = AE_CONFIG) -> list[np.ndarray]:
    """FedAvg over the servers' training rows; the global model's scores of each server's held-out rows."""
    result = run_federated([s.split() for s in servers], replace(config, seed=seed), feature_names=FEATURES,
                           progress=False)
    return [result.detector.decision_function(s.test.features) for s in servers]


def federated_forest(servers: Sequence[Server], seed: int = 0) -> list[np.ndarray]:
    """Each server grows :data:`TREES_PER_SERVER` trees on its own rows; the pooled trees score
    (:mod:`fedad_tutorial.chapters.forest`)."""
    forest = FederatedIsolationForest(trees_per_client=TREES_PER_SERVER, seed=seed)
    forest.fit([s.train.features for s in servers])
    return [forest.decision_function(s.test.features) for s in servers]


def federated_svdd(servers: Sequence[Server], seed: int = 0) -> list[np.ndarray]:
    """Chapter 14's Deep SVDD with the autoencoder's training (:data:`SVDD_CONFIG`): the distance of each held-out
    row's embedding to the federation's centre."""
    return federated_autoencoder(servers, seed, SVDD_CONFIG)


Scorer = Callable[[Sequence[Server], int], list[np.ndarray]]


def _pooled(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Scorer:
    """A detector fitted on the pooled training rows of the servers it is given."""
    def score(servers: Sequence[Server], seed: int = 0) -> list[np.ndarray]:
        train = np.concatenate([s.train.features for s in servers])
        return [fn(train, s.test.features) for s in servers]

    return score


#: Detector name -> ``(servers, seed) -> held-out scores per server``. The norm needs only the
#: federated mean and standard deviation; PCA pools the training rows (a centralized reference).
DETECTORS: dict[str, Scorer] = {
    "federated AE": federated_autoencoder,
    "federated isolation forest": federated_forest,
    "scaled norm (federated mean/std)": _pooled(norm_scores),
    "PCA reconstruction, 1 comp. (pooled rows)": _pooled(lambda train, test: pca_scores(train, test, 1)),
}
#: Chapter 14's one-class detector, compared in a section of its own.
ONE_CLASS: dict[str, Scorer] = {"federated Deep SVDD": federated_svdd}


def detector_scores(servers: Sequence[Server], seed: int = 0, detectors: Sequence[str] | None = None,
                    per_service: bool = True) -> dict[str, list[np.ndarray]]:
    """Every detector's scores of every server's held-out rows (higher = more suspicious).

    With ``per_service`` (the chapter's choice) web servers federate with web servers and mail
    servers with mail servers: one model per service. Without it, one model for all servers.
    ``detectors`` names some of :data:`DETECTORS` or :data:`ONE_CLASS` (default: the four of :data:`DETECTORS`).
    """
    groups: dict[str, list[int]] = {}
    for k, s in enumerate(servers):
        groups.setdefault(s.service if per_service else "all", []).append(k)
    scores: dict[str, list[np.ndarray]] = {}
    known = {**DETECTORS, **ONE_CLASS}
    for name in detectors or DETECTORS:
        per_server: list[np.ndarray] = [np.empty(0)] * len(servers)
        for members in groups.values():
            for k, s in zip(members, known[name]([servers[k] for k in members], seed), strict=True):
                per_server[k] = s
        scores[name] = per_server
    return scores


def alarms_per_10k(labels: np.ndarray, scores: np.ndarray, recall: float = 0.9) -> float:
    """Alarms per 10,000 connections when the threshold is as high as it can be while catching ``recall``.

    The threshold is the score of the ``ceil(recall * attacks)``-th most suspicious attack; every
    connection scoring at least that much raises an alarm (ties included: an operator cannot split
    them). It reads the labels of the rows it is given, so it measures a detector on held-out rows;
    it is not a way to set a threshold in production (see :func:`budget_threshold` for that).

    >>> alarms_per_10k(np.array([0, 0, 0, 1, 0, 1]), np.array([0.1, 0.5, 0.2, 0.9, 0.4, 0.3]), 0.5)
    1666.666...
    >>> alarms_per_10k(np.array([0, 0, 0, 1, 0, 1]), np.array([0.1, 0.5, 0.2, 0.9, 0.4, 0.3]), 1.0)
    6666.666...
    """
    if not 0.0 < recall <= 1.0:
        raise UserError(f"recall must be in (0, 1], got {recall}")
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if not y.any():
        return math.nan
    attack_scores = np.sort(s[y])[::-1]
    threshold = attack_scores[math.ceil(recall * attack_scores.size - 1e-9) - 1]
    return float(1e4 * (s >= threshold).sum() / s.size)


def budget_threshold(train_scores: np.ndarray, alarms: float) -> float:
    """The threshold that would raise ``alarms`` alarms per 10,000 of these (unlabelled) connections.

    What an operator can set without labels: the team can read so many alarms a day, the traffic is
    so many connections a day, so flag the corresponding top share of the training scores.
    """
    from fedad_tutorial.thresholds import percentile_threshold

    if not 0.0 < alarms < 1e4:
        raise UserError(f"alarms per 10,000 connections must be in (0, 10000), got {alarms}")
    return percentile_threshold(train_scores, 100.0 - alarms / 100.0)


def evaluate(labels: np.ndarray, scores: np.ndarray, recalls: Sequence[float] = RECALLS) -> dict[str, float]:
    """Held-out rows, attacks, ROC-AUC, PR-AUC and :func:`alarms_per_10k` at each of ``recalls``."""
    labels = np.asarray(labels)
    return {"rows": int(labels.size), "attacks": int(labels.sum()), "roc_auc": roc_auc(labels, scores),
            "pr_auc": average_precision(labels, scores),
            **{alarm_column(r): alarms_per_10k(labels, scores, r) for r in recalls}}


def alarm_column(recall: float) -> str:
    """The table column of the alarm budget at ``recall``: ``alarms/10k @ recall 0.9``."""
    return f"alarms/10k @ recall {recall:g}"


def results_table(servers: Sequence[Server], scores: dict[str, list[np.ndarray]],
                  recalls: Sequence[float] = RECALLS, per_node: bool = False) -> pd.DataFrame:
    """:func:`evaluate` per detector on the web servers' and the mail servers' pooled held-out rows
    (a service's base rate is its own: they are not mixed), or per server with ``per_node``."""
    groups: dict[str, list[int]] = {}
    for k, s in enumerate(servers):
        groups.setdefault(s.label if per_node else ("web servers" if s.service == "http" else "mail servers"),
                          []).append(k)
    rows = []
    for method, per_server in scores.items():
        for group, members in groups.items():
            labels = np.concatenate([servers[k].test.labels for k in members])
            rows.append({"method": method, "nodes": group,
                         **evaluate(labels, np.concatenate([per_server[k] for k in members]), recalls)})
    return pd.DataFrame(rows)


#: Short method names for the chapter's tables, so that a column per method fits a notebook's width.
SHORT_NAMES = {"federated AE": "AE", "federated isolation forest": "forest", "scaled norm (federated mean/std)": "norm",
               "PCA reconstruction, 1 comp. (pooled rows)": "PCA", "federated Deep SVDD": "Deep SVDD"}
#: The groups of servers, in the order the chapter's tables show them.
SERVICES = ("web servers", "mail servers")


def summary_table(results: pd.DataFrame, recalls: Sequence[float] = RECALLS) -> pd.DataFrame:
    """``mean ± std`` over the seeds of :func:`results_table` rows, per group of servers and method.

    One row per (servers, method), web servers first and the methods in the order they appear, with
    the :data:`SHORT_NAMES`; AUCs to three decimals, alarms per 10,000 to whole numbers.
    """
    metrics = {"ROC-AUC": "roc_auc", "PR-AUC": "pr_auc",
               **{f"alarms/10k, recall {r:g}": alarm_column(r) for r in recalls}}
    grouped = results.groupby(["nodes", "method"], sort=False)[list(metrics.values())].agg(["mean", "std"])
    methods = list(dict.fromkeys(results["method"]))
    grouped = grouped.reindex(pd.MultiIndex.from_product([SERVICES, methods]))
    table = pd.DataFrame({
        name: [f"{m:.3f} ± {sd:.3f}" if column.endswith("auc") else f"{m:,.0f} ± {sd:,.0f}"
               for m, sd in grouped[column].itertuples(index=False)]
        for name, column in metrics.items()},
        index=pd.MultiIndex.from_tuples([(nodes, SHORT_NAMES.get(m, m)) for nodes, m in grouped.index],
                                        names=["servers", "method"]))
    return table


def recall_curve(labels: np.ndarray, scores: np.ndarray, recalls: Sequence[float]) -> np.ndarray:
    """:func:`alarms_per_10k` at each of ``recalls``: the operator's price list."""
    return np.array([alarms_per_10k(labels, scores, r) for r in recalls])
