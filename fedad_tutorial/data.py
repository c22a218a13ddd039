"""Synthetic data for the course: a structured cloud-activity federation and the original tutorial's noise.

Why two generators? An autoencoder detects anomalies by learning the *structure* of normal data
(which metrics move together, and how). :func:`make_cloud_federation` gives it such structure:
every metric is a nonlinear function of a few hidden workload factors, so normal rows lie near a
low-dimensional surface and anomalies leave it. :func:`isotropic_blobs` reproduces the data of
the tutorial this course was commissioned from: normal rows are pure Gaussian noise, there is
nothing to learn, and reconstruction error is no better than chance (notebook 01 shows it).

Labels (0 normal, 1 anomaly) are produced for *evaluation only*; training code never reads them.

Example
-------
>>> nodes = make_cloud_federation(num_nodes=3, samples_per_node=200, seed=0)
>>> [node.name for node in nodes]
['node_1', 'node_2', 'node_3']
>>> nodes[0].features.shape, int(nodes[0].labels.sum())
((200, 30), 10)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fedad_tutorial.errors import UserError
from fedad_tutorial.params import TEST_FRACTION, check

if TYPE_CHECKING:
    import pandas as pd

#: The four hidden workload factors that drive every metric.
FACTORS = ("web_traffic", "batch_compute", "storage_io", "memory_pressure")

# Each named metric: (name, loadings on the four factors, transform, scale).
# Transforms: "linear" a*f, "saturate" 100*(1-exp(-a*f)) for percentages, "power" (a*f)**1.5 for
# quantities that grow faster than load, "queue" latency-like 1/(1-rho) growth near capacity.
_METRICS: tuple[tuple[str, tuple[float, float, float, float], str, float], ...] = (
    ("cpu_util_pct", (0.5, 0.8, 0.1, 0.1), "saturate", 1.0),
    ("mem_util_pct", (0.1, 0.3, 0.0, 0.9), "saturate", 1.0),
    ("disk_read_mbps", (0.1, 0.2, 1.0, 0.0), "linear", 40.0),
    ("disk_write_mbps", (0.0, 0.4, 0.8, 0.0), "linear", 25.0),
    ("net_in_mbps", (1.0, 0.1, 0.2, 0.0), "linear", 60.0),
    ("net_out_mbps", (1.2, 0.0, 0.3, 0.0), "power", 45.0),
    ("request_rate", (1.0, 0.0, 0.0, 0.0), "linear", 300.0),
    ("latency_p50_ms", (0.6, 0.2, 0.1, 0.1), "queue", 12.0),
    ("latency_p99_ms", (0.7, 0.3, 0.2, 0.3), "queue", 45.0),
    ("error_rate_pct", (0.5, 0.1, 0.0, 0.2), "power", 0.4),
    ("active_connections", (0.9, 0.0, 0.0, 0.1), "linear", 120.0),
    ("thread_count", (0.4, 0.6, 0.0, 0.0), "linear", 80.0),
    ("gc_pause_ms", (0.0, 0.3, 0.0, 1.0), "power", 6.0),
    ("cache_hit_pct", (0.2, 0.0, 0.3, 0.6), "saturate", 1.0),
    ("queue_depth", (0.5, 0.5, 0.0, 0.0), "queue", 3.0),
    ("db_query_rate", (0.8, 0.2, 0.3, 0.0), "linear", 150.0),
    ("db_latency_ms", (0.3, 0.1, 0.7, 0.0), "queue", 8.0),
    ("iowait_pct", (0.0, 0.2, 1.0, 0.0), "saturate", 0.3),
    ("load_avg_1m", (0.5, 0.9, 0.2, 0.0), "linear", 2.0),
    ("context_switches_k", (0.7, 0.6, 0.1, 0.0), "linear", 20.0),
    ("page_faults_k", (0.0, 0.3, 0.2, 0.8), "power", 5.0),
    ("swap_used_mb", (0.0, 0.1, 0.0, 1.0), "power", 60.0),
    ("open_files", (0.5, 0.2, 0.6, 0.0), "linear", 400.0),
    ("tcp_retransmits", (0.8, 0.0, 0.0, 0.0), "power", 3.0),
    ("http_5xx_rate", (0.6, 0.0, 0.0, 0.3), "power", 0.8),
    ("http_4xx_rate", (0.9, 0.0, 0.0, 0.0), "linear", 2.0),
    ("cpu_steal_pct", (0.1, 0.6, 0.0, 0.0), "saturate", 0.1),
    ("heap_used_mb", (0.2, 0.4, 0.0, 0.8), "linear", 900.0),
    ("batch_jobs_running", (0.0, 1.0, 0.1, 0.0), "linear", 6.0),
    ("page_cache_mb", (0.0, 0.1, 0.6, 0.5), "saturate", 20.0),
)

#: Names of the built-in metrics, in column order (beyond these, ``metric_31``, ...).
METRIC_NAMES: tuple[str, ...] = tuple(m[0] for m in _METRICS)

#: What each named metric measures.
METRIC_MEANINGS: dict[str, str] = {
    "cpu_util_pct": "CPU utilisation (%)", "mem_util_pct": "memory in use (%)",
    "disk_read_mbps": "disk read throughput (MB/s)", "disk_write_mbps": "disk write throughput (MB/s)",
    "net_in_mbps": "network ingress (Mbit/s)", "net_out_mbps": "network egress (Mbit/s)",
    "request_rate": "requests served per second", "latency_p50_ms": "median request latency (ms)",
    "latency_p99_ms": "tail (99th percentile) request latency (ms)", "error_rate_pct": "failed requests (%)",
    "active_connections": "open client connections", "thread_count": "worker threads",
    "gc_pause_ms": "garbage-collection pause time (ms)", "cache_hit_pct": "cache hit ratio (%)",
    "queue_depth": "requests waiting in the work queue", "db_query_rate": "database queries per second",
    "db_latency_ms": "database query latency (ms)", "iowait_pct": "CPU time waiting for disk I/O (%)",
    "load_avg_1m": "1-minute load average", "context_switches_k": "context switches per second (thousands)",
    "page_faults_k": "page faults per second (thousands)", "swap_used_mb": "swap in use (MB)",
    "open_files": "open file descriptors", "tcp_retransmits": "TCP retransmissions per second",
    "http_5xx_rate": "server errors (5xx) per second", "http_4xx_rate": "client errors (4xx) per second",
    "cpu_steal_pct": "CPU time taken by the hypervisor (%)", "heap_used_mb": "application heap in use (MB)",
    "batch_jobs_running": "batch jobs running", "page_cache_mb": "OS page cache (MB)",
}

#: The anomaly types :func:`make_cloud_federation` injects, with what each one means.
ANOMALY_TYPES: dict[str, str] = {
    "spike": "one to three metrics jump far above their usual range (a burst, a runaway process)",
    "correlation_break": "compute-side metrics are busy while traffic-side metrics are idle, "
    "or the reverse (e.g. CPU high with no requests: a crypto-miner, a stuck loop)",
    "level_shift": "latencies, I/O wait and queue depth sit at a shifted level while the load "
    "that normally drives them is unchanged (a degraded disk, a noisy neighbour)",
    "flatline": "several metrics that are never zero read exactly zero (a crashed agent, a "
    "dead network interface) while the rest look normal",
}

_COMPUTE_FACTOR, _TRAFFIC_FACTOR = 1, 0
#: The metrics a `level_shift` anomaly moves.
LEVEL_SHIFT_METRICS = ("latency_p50_ms", "latency_p99_ms", "db_latency_ms", "iowait_pct", "queue_depth")


@dataclass
class NodeData:
    """One node's (one client's) rows.

    ``labels`` and ``anomaly_types`` exist for evaluation; training must use ``features`` only.
    """

    name: str
    features: np.ndarray
    feature_names: list[str]
    labels: np.ndarray | None = None
    anomaly_types: np.ndarray | None = None
    regime: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        if self.features.ndim != 2 or self.features.shape[1] != len(self.feature_names):
            raise UserError(
                f"{self.name}: features have shape {self.features.shape}, "
                f"expected (rows, {len(self.feature_names)})"
            )
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)

    @property
    def num_rows(self) -> int:
        return int(self.features.shape[0])


def _metric_table(num_features: int) -> list[tuple[str, np.ndarray, str, float]]:
    """The named metrics, extended with generic ones (fixed, seeded loadings) when asked for more."""
    table = [(n, np.array(a, dtype=float), t, s) for n, a, t, s in _METRICS[:num_features]]
    extra_rng = np.random.default_rng(12345)
    transforms = ("linear", "saturate", "power", "queue")
    for j in range(len(_METRICS), num_features):
        loadings = extra_rng.dirichlet(np.full(len(FACTORS), 0.7))
        table.append((f"metric_{j + 1}", loadings, transforms[j % 4], float(extra_rng.uniform(1, 50))))
    return table


def metric_catalog(num_features: int = 30) -> pd.DataFrame:
    """One row per metric: what it measures, its main drivers, its shape and its factor loadings.

    >>> metric_catalog(3)["main drivers"].tolist()
    ['batch_compute, web_traffic', 'memory_pressure', 'storage_io']
    """
    import pandas as pd  # only this table needs it; reading and generating data do not

    rows = []
    for name, loadings, transform, _ in _metric_table(num_features):
        weights = pd.Series(loadings, index=FACTORS)
        main = weights[weights >= 0.5].sort_values(ascending=False).index.tolist() or [weights.idxmax()]
        rows.append({"metric": name, "meaning": METRIC_MEANINGS.get(name, "generic metric"),
                     "main drivers": ", ".join(main), "shape": transform, **weights.round(2).to_dict()})
    return pd.DataFrame(rows).set_index("metric")


def _apply_metric(loadings: np.ndarray, transform: str, scale: float, factors: np.ndarray) -> np.ndarray:
    drive = factors @ loadings  # (rows,) a non-negative mix of the workload factors
    if transform == "linear":
        return scale * drive
    if transform == "saturate":
        return 100.0 * scale * (1.0 - np.exp(-0.8 * drive))
    if transform == "power":
        return scale * drive**1.5
    # "queue": latency grows like 1/(1-rho) as utilisation rho approaches capacity
    rho = np.clip(drive / 3.0, 0.0, 0.95)
    return scale * (1.0 + 0.3 * drive) / (1.0 - rho)


def _metrics_from_factors(
    table: list[tuple[str, np.ndarray, str, float]], factors: np.ndarray, rng: np.random.Generator,
    noise: float,
) -> np.ndarray:
    columns = [_apply_metric(a, t, s, factors) for _, a, t, s in table]
    clean = np.stack(columns, axis=1)
    # Multiplicative measurement noise keeps values non-negative and scales with the metric.
    return clean * np.exp(noise * rng.standard_normal(clean.shape))


def _node_regime(rng: np.random.Generator, heterogeneity: float) -> dict[str, float]:
    """A node's operating regime: its typical level of each workload factor and its spread."""
    regime = {}
    for name in FACTORS:
        regime[f"{name}_level"] = float(np.exp(heterogeneity * rng.normal(0.0, 0.45)))
        regime[f"{name}_spread"] = float(rng.uniform(0.25, 0.45))
    return regime


def _sample_factors(rng: np.random.Generator, regime: dict[str, float], n: int) -> np.ndarray:
    """Workload factors per row: log-normal around the node's levels, web and compute correlated."""
    z = rng.standard_normal((n, len(FACTORS)))
    z[:, 1] = 0.6 * z[:, 0] + 0.8 * z[:, 1]  # more traffic tends to mean more compute
    levels = np.array([regime[f"{f}_level"] for f in FACTORS])
    spreads = np.array([regime[f"{f}_spread"] for f in FACTORS])
    return levels * np.exp(spreads * z)


def _inject(
    kind: str, row_factors: np.ndarray, table: list, rng: np.random.Generator, normal_mean: np.ndarray,
    normal_std: np.ndarray, noise: float,
) -> np.ndarray:
    """One anomalous row of the given kind, built from a normal row's workload factors."""
    names = [m[0] for m in table]
    row = _metrics_from_factors(table, row_factors[None, :], rng, noise)[0]
    d = len(names)
    if kind == "spike":
        cols = rng.choice(d, size=min(d, int(rng.integers(1, 4))), replace=False)
        row[cols] += rng.uniform(6.0, 10.0, size=cols.size) * normal_std[cols]
    elif kind == "correlation_break":
        busy, idle = row_factors.copy(), row_factors.copy()
        if rng.random() < 0.5:  # compute busy, traffic idle
            busy[_COMPUTE_FACTOR] *= 5.0
            idle[_TRAFFIC_FACTOR] *= 0.1
        else:  # traffic busy, compute idle
            busy[_TRAFFIC_FACTOR] *= 5.0
            idle[_COMPUTE_FACTOR] *= 0.1
        busy_row = _metrics_from_factors(table, busy[None, :], rng, noise)[0]
        idle_row = _metrics_from_factors(table, idle[None, :], rng, noise)[0]
        loadings = np.stack([m[1] for m in table])
        compute_side = loadings[:, _COMPUTE_FACTOR] >= loadings[:, _TRAFFIC_FACTOR]
        if busy[_TRAFFIC_FACTOR] > row_factors[_TRAFFIC_FACTOR]:
            compute_side = ~compute_side
        row = np.where(compute_side, busy_row, idle_row)
    elif kind == "level_shift":
        cols = np.array([i for i, n in enumerate(names) if n in LEVEL_SHIFT_METRICS])
        if cols.size == 0:  # fewer features than the named group: shift the last third
            cols = np.arange(d - max(1, d // 3), d)
        row[cols] += rng.uniform(6.0, 10.0) * normal_std[cols]
    elif kind == "flatline":
        never_zero = np.flatnonzero(normal_mean > 3.0 * normal_std)
        pool = never_zero if never_zero.size >= 3 else np.arange(d)
        cols = rng.choice(pool, size=min(pool.size, int(rng.integers(3, 6))), replace=False)
        row[cols] = 0.0
    else:
        raise UserError(f"unknown anomaly type {kind!r}; expected one of {sorted(ANOMALY_TYPES)}")
    return row


def _sizes(samples_per_node: int | tuple[int, int], num_nodes: int, rng: np.random.Generator) -> list[int]:
    if isinstance(samples_per_node, tuple):
        lo, hi = samples_per_node
        if not 2 <= lo <= hi:
            raise UserError(f"samples_per_node range must satisfy 2 <= low <= high, got {samples_per_node}")
        return [int(v) for v in rng.integers(lo, hi + 1, size=num_nodes)]
    if samples_per_node < 2:
        raise UserError(f"samples_per_node must be at least 2, got {samples_per_node}")
    return [int(samples_per_node)] * num_nodes


def make_cloud_federation(
    num_nodes: int = 10,
    samples_per_node: int | tuple[int, int] = (300, 1200),
    num_features: int = 30,
    anomaly_rate: float = 0.05,
    anomaly_types: tuple[str, ...] = tuple(ANOMALY_TYPES),
    heterogeneity: float = 1.0,
    noise: float = 0.03,
    seed: int = 42,
) -> list[NodeData]:
    """Generate one labelled table of cloud-activity metrics per node.

    Args:
        num_nodes: number of nodes (federated clients).
        samples_per_node: rows per node, or a ``(low, high)`` range drawn per node (non-IID sizes).
        num_features: metrics per row; the first 30 have names (``cpu_util_pct``, ...).
        anomaly_rate: share of anomalous rows per node (exactly ``round(rate * rows)``).
        anomaly_types: which of :data:`ANOMALY_TYPES` to inject, in equal shares.
        heterogeneity: how different the nodes' regimes are (0 = identically distributed).
        noise: relative measurement noise on every metric.
        seed: the same seed gives the same data.

    Returns:
        One :class:`NodeData` per node, rows shuffled, with ``labels`` and ``anomaly_types``
        ("normal" or the injected kind).
    """
    if num_nodes < 1:
        raise UserError(f"num_nodes must be at least 1, got {num_nodes}")
    if num_features < 2:
        raise UserError(f"num_features must be at least 2, got {num_features}")
    if not 0.0 <= anomaly_rate < 1.0:
        raise UserError(f"anomaly_rate must be in [0, 1), got {anomaly_rate}")
    unknown = set(anomaly_types) - set(ANOMALY_TYPES)
    if unknown or not anomaly_types:
        raise UserError(f"anomaly_types must be a non-empty subset of {sorted(ANOMALY_TYPES)}")
    rng = np.random.default_rng(seed)
    table = _metric_table(num_features)
    names = [m[0] for m in table]
    nodes = []
    for k, size in enumerate(_sizes(samples_per_node, num_nodes, rng)):
        regime = _node_regime(rng, heterogeneity)
        n_anomalies = int(round(anomaly_rate * size))
        n_normal = size - n_anomalies
        factors = _sample_factors(rng, regime, size)
        normal = _metrics_from_factors(table, factors[:n_normal], rng, noise)
        mean = normal.mean(axis=0) if n_normal else np.zeros(len(names))
        std = normal.std(axis=0) + 1e-6 if n_normal > 1 else np.ones(len(names))
        kinds = [anomaly_types[i % len(anomaly_types)] for i in range(n_anomalies)]
        anomalies = [_inject(kind, factors[n_normal + i], table, rng, mean, std, noise)
                     for i, kind in enumerate(kinds)]
        features = np.vstack([normal, *anomalies]) if anomalies else normal
        types = np.array(["normal"] * n_normal + kinds, dtype=object)
        order = rng.permutation(size)
        nodes.append(NodeData(
            name=f"node_{k + 1}", features=features[order], feature_names=list(names),
            labels=(types[order] != "normal").astype(np.int64), anomaly_types=types[order],
            regime=regime,
        ))
    return nodes


def isotropic_blobs(
    num_nodes: int = 10,
    samples_per_node: int | tuple[int, int] = (420, 650),
    num_features: int = 30,
    anomaly_rate: float = 0.05,
    shift: float = 3.0,
    seed: int = 42,
) -> list[NodeData]:
    """The original tutorial's data: normal rows ~ N(0, I), anomalies ~ N(shift, I).

    Kept as a cautionary example. Normal rows have no structure (every direction is equally
    noisy), so an autoencoder cannot learn what "normal" looks like and its reconstruction error
    ranks anomalies at chance level, while the plain norm of a row separates them perfectly.
    """
    if num_nodes < 1:
        raise UserError(f"num_nodes must be at least 1, got {num_nodes}")
    rng = np.random.default_rng(seed)
    names = [f"x{j + 1}" for j in range(num_features)]
    nodes = []
    for k, size in enumerate(_sizes(samples_per_node, num_nodes, rng)):
        n_anomalies = int(round(anomaly_rate * size))
        features = rng.standard_normal((size, num_features))
        features[size - n_anomalies:] += shift
        labels = np.r_[np.zeros(size - n_anomalies), np.ones(n_anomalies)].astype(np.int64)
        order = rng.permutation(size)
        types = np.where(labels[order] == 1, "shift", "normal").astype(object)
        nodes.append(NodeData(f"node_{k + 1}", features[order], names, labels[order], types))
    return nodes


@dataclass
class Split:
    """A node's rows divided into training rows (labels unused) and held-out test rows."""

    name: str
    train: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray | None
    test_types: np.ndarray | None = None


def train_test_split(node: NodeData, test_fraction: float = TEST_FRACTION.default, seed: int = 42) -> Split:
    """Randomly hold out ``test_fraction`` of a node's rows (not stratified: labels are not used).

    At least one row stays on each side.
    """
    check("test_fraction", test_fraction)
    n = node.num_rows
    if n < 2:
        raise UserError(f"{node.name}: needs at least 2 rows to hold some out, has {n}")
    n_test = min(n - 1, max(1, int(round(test_fraction * n))))
    order = np.random.default_rng(seed).permutation(n)
    test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])

    def pick(values: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
        return None if values is None else values[idx]

    return Split(
        name=node.name, train=node.features[train_idx], test=node.features[test_idx],
        test_labels=pick(node.labels, test_idx), test_types=pick(node.anomaly_types, test_idx),
    )


def hold_out(nodes: list[NodeData], test_fraction: float = TEST_FRACTION.default, seed: int = 42) -> list[Split]:
    """Each node's :func:`train_test_split`, node ``k`` (counting from 0) with seed ``seed + k``.

    The convention of ``fedad simulate`` and ``fedad run`` (and of the Flower client started with
    ``--node-id k+1``), so that anything following it sees the command line's rows.
    """
    return [node_split(node, k, test_fraction, seed) for k, node in enumerate(nodes)]


def node_split(node: NodeData, index: int, test_fraction: float = 0.3, seed: int = 42) -> Split:
    """Node ``index``'s (counting from 0) split in :func:`hold_out`: seed ``seed + index``. A Flower
    client calls it for its own CSV alone, so it holds out the rows ``fedad simulate`` holds out."""
    return train_test_split(node, test_fraction, seed=seed + index)
