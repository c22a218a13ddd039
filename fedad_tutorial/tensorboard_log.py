"""TensorBoard logs of a run: ``RUN/tensorboard/events.out.tfevents.*``, written from the run's history.

Every command that trains (``fedad run``, ``simulate``, ``server``) writes its run folder through
:func:`~fedad_tutorial.runs.write_run`, which calls :func:`write_events` once, at the end, with the
per-round history (the same numbers as ``history.csv``). What TensorBoard shows:

- **Scalars**, one chart per tag, step = round: ``loss/mean`` (the mean training loss of the
  clients that trained) and ``loss/<client>``; ``precision/``, ``recall/``, ``f1/``, ``roc_auc/``
  each with ``mean`` and one tag per client (held-out rows, when the data has labels);
  ``threshold/mean`` (and ``threshold/<client>`` when clients use their own); ``threshold/saved``
  (the model file's threshold, at the last round).
- **Histograms**: ``scores/heldout_normal`` and ``scores/heldout_anomalous``, the final model's
  scores of the held-out rows, built from counts on the shared score bins
  (:class:`~fedad_tutorial.thresholds.ScoreHistogram`).
- **Privacy**: with DP-FedAvg (``--dp-clip``, ``--dp-noise-multiplier``), ``privacy/epsilon``: the
  ``epsilon`` of the client-level guarantee of the models released up to each round (at the run's
  ``delta``; :func:`fedad_tutorial.privacy.privacy_summary`), left out where it is infinite (no noise).
- **HParams**: the run's configuration with the final round's mean F1, precision, recall,
  ROC-AUC and loss (and, with DP-FedAvg, ``privacy/epsilon``) as metrics.

Why not ``torch.utils.tensorboard.SummaryWriter``: importing it costs over a second, more than a
small ``fedad simulate`` spends training. The events are the same protocol buffers, built with
TensorBoard's own message classes (a few tens of milliseconds to import), framed as TFRecords here
(length, masked CRC-32C, data, masked CRC-32C), which TensorBoard's reader checks.
"""

from __future__ import annotations

import math
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fedad_tutorial.thresholds import ScoreHistogram, bin_edges

#: The run folder's subfolder for TensorBoard.
FOLDER = "tensorboard"
#: Per-client metrics logged each round (``<metric>/mean`` and ``<metric>/<client>``).
METRICS = ("loss", "precision", "recall", "f1", "roc_auc")
#: The hyper-parameters' metrics: the final round's means.
HPARAM_METRICS = ("f1/mean", "precision/mean", "recall/mean", "roc_auc/mean", "loss/mean", "privacy/epsilon")
#: At most this many buckets per histogram (the shared bins are merged to fit).
HISTOGRAM_BUCKETS = 60


def _crc32c_tables() -> list[list[int]]:
    """CRC-32C lookup tables for slicing-by-8 (8 bytes per step: a pure-Python CRC several times faster)."""
    base = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        base.append(c)
    tables = [base]
    for _ in range(7):
        tables.append([(c >> 8) ^ base[c & 0xFF] for c in tables[-1]])
    return tables


_T0, _T1, _T2, _T3, _T4, _T5, _T6, _T7 = _crc32c_tables()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, the checksum TFRecords use.

    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    """
    crc = 0xFFFFFFFF
    whole = len(data) - len(data) % 8
    for (x,) in struct.iter_unpack("<Q", data[:whole]):
        x ^= crc
        crc = (_T7[x & 0xFF] ^ _T6[(x >> 8) & 0xFF] ^ _T5[(x >> 16) & 0xFF] ^ _T4[(x >> 24) & 0xFF]
               ^ _T3[(x >> 32) & 0xFF] ^ _T2[(x >> 40) & 0xFF] ^ _T1[(x >> 48) & 0xFF] ^ _T0[x >> 56])
    for byte in data[whole:]:
        crc = _T0[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The masked CRC of a TFRecord: rotated and offset so that CRCs of CRCs stay strong."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """``data`` framed as one TFRecord."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


def _number(value) -> float:
    """A history cell as a float: missing or empty cells are NaN."""
    return math.nan if value is None else float(value)


def _finite(value) -> bool:
    return value is not None and isinstance(value, int | float | np.floating | np.integer) and math.isfinite(value)


def round_scalars(history: Sequence[Mapping[str, object]]) -> dict[int, dict[str, float]]:
    """The scalars of each round: ``{round: {tag: value}}``, NaN values left out.

    ``history`` is the run's rows (:meth:`~fedad_tutorial.federated.FederationResult.records`, one
    per round and client, the rows of ``history.csv``).

    ``<metric>/mean`` is the NaN-aware mean over the round's clients, as in the printed table and
    ``summary.json``; per-client thresholds are logged only when they differ between clients.
    """
    rounds = np.array([int(r["round"]) for r in history])
    clients = np.array([str(r["client"]) for r in history])
    present = {key for r in history for key in r}
    columns = {m: np.array([_number(r.get(m)) for r in history], dtype=np.float64)
               for m in METRICS + ("threshold",) if m in present}
    order = np.unique(rounds)
    masks = [rounds == rnd for rnd in order]
    thresholds = columns.get("threshold")
    per_client_threshold = thresholds is not None and any(
        np.unique(thresholds[m][np.isfinite(thresholds[m])]).size > 1 for m in masks)
    out: dict[int, dict[str, float]] = {}
    for rnd, mask in zip(order.tolist(), masks, strict=True):
        values: dict[str, float] = {}
        names = clients[mask].tolist()
        for metric, column in columns.items():
            part = column[mask]
            finite = np.isfinite(part)
            if finite.any():
                values[f"{metric}/mean"] = float(part[finite].mean())
            if metric != "threshold" or per_client_threshold:
                values.update((f"{metric}/{name}", value) for name, value, ok in
                              zip(names, part.tolist(), finite.tolist(), strict=True) if ok)
        out[int(rnd)] = values
    return out


def _histogram_proto(summary_pb2, counts: np.ndarray):
    """A HistogramProto of counts on the shared score bins, merged into at most
    :data:`HISTOGRAM_BUCKETS` buckets between the first and the last non-empty bin."""
    edges = bin_edges()
    nonzero = np.flatnonzero(counts)
    first, last = int(nonzero[0]), int(nonzero[-1]) + 1
    group = max(1, math.ceil((last - first) / HISTOGRAM_BUCKETS))
    starts = np.arange(first, last, group)
    merged = np.add.reduceat(counts[first:last], starts - first).astype(np.float64)
    limits = edges[np.minimum(starts + group, last)]
    middles = (edges[:-1] + edges[1:]) / 2
    return summary_pb2.HistogramProto(
        min=float(edges[first]), max=float(edges[last]), num=float(counts.sum()),
        sum=float((counts * middles).sum()), sum_squares=float((counts * middles**2).sum()),
        bucket_limit=limits.tolist(), bucket=merged.tolist())


def _hparam_value(value):
    """A hyper-parameter as TensorBoard takes it: a number, a string or a boolean (lists become text,
    an unset value the word ``default``)."""
    if value is None:
        return "string_value", "default"
    if isinstance(value, bool):
        return "bool_value", value
    if isinstance(value, int | float) and math.isfinite(value):
        return "number_value", float(value)
    return "string_value", str(value) if not isinstance(value, list | tuple) else ",".join(map(str, value))


def _hparams_summaries(summary_pb2, hparams: Mapping[str, object], metrics: list[str], wall: float) -> list:
    """The three summaries of TensorBoard's HParams plugin: the experiment (hyper-parameters and
    metrics), this run's values (session start) and its end."""
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    def summary(tag: str, data) -> object:
        content = plugin_data_pb2.HParamsPluginData(version=0, **data).SerializeToString()
        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="hparams", content=content))
        return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=metadata)])

    kinds = {"bool_value": api_pb2.DATA_TYPE_BOOL, "number_value": api_pb2.DATA_TYPE_FLOAT64,
             "string_value": api_pb2.DATA_TYPE_STRING}
    infos, start = [], plugin_data_pb2.SessionStartInfo(start_time_secs=wall)
    for name, value in hparams.items():
        field, typed = _hparam_value(value)
        infos.append(api_pb2.HParamInfo(name=name, type=kinds[field]))
        setattr(start.hparams[name], field, typed)
    experiment = api_pb2.Experiment(
        hparam_infos=infos, metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m)) for m in metrics])
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=wall)
    return [summary("_hparams_/experiment", {"experiment": experiment}),
            summary("_hparams_/session_start_info", {"session_start_info": start}),
            summary("_hparams_/session_end_info", {"session_end_info": end})]


def write_events(folder: str | Path, history: Sequence[Mapping[str, object]], hparams: Mapping[str, object],
                 saved_threshold: float | None = None,
                 heldout: Mapping[str, ScoreHistogram] | None = None,
                 privacy: Mapping[str, object] | None = None) -> Path:
    """Write one TensorBoard event file into ``folder`` (created): the scalars of every round
    (:func:`round_scalars`, and ``privacy/epsilon`` from ``privacy["epsilon_per_round"]``, a run's
    :func:`~fedad_tutorial.privacy.privacy_summary`), ``threshold/saved``, the ``heldout`` score
    histograms (``{"normal": ..., "anomalous": ...}``, empty ones left out) at the last round, and the
    hyper-parameters."""
    from tensorboard.compat.proto import event_pb2, summary_pb2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wall = time.time()
    path = folder / f"events.out.tfevents.{int(wall)}.{socket.gethostname() or 'fedad'}"

    def event(step: int, values: list) -> bytes:
        return record(event_pb2.Event(wall_time=wall, step=step, summary=summary_pb2.Summary(value=values))
                      .SerializeToString())

    chunks = [record(event_pb2.Event(wall_time=wall, file_version="brain.Event:2").SerializeToString())]
    scalars = round_scalars(history)
    for rnd, eps in enumerate((privacy or {}).get("epsilon_per_round", []), start=1):
        if _finite(eps) and rnd in scalars:
            scalars[rnd]["privacy/epsilon"] = float(eps)
    for rnd, values in scalars.items():
        chunks.append(event(rnd, [summary_pb2.Summary.Value(tag=tag, simple_value=value)
                                  for tag, value in values.items()]))
    last = max(scalars, default=0)
    final: list = []
    if saved_threshold is not None and _finite(saved_threshold):
        final.append(summary_pb2.Summary.Value(tag="threshold/saved", simple_value=float(saved_threshold)))
    for name, histogram in (heldout or {}).items():
        if histogram.total:
            final.append(summary_pb2.Summary.Value(tag=f"scores/heldout_{name}",
                                                   histo=_histogram_proto(summary_pb2, histogram.counts)))
    if final:
        chunks.append(event(last, final))
    metrics = [m for m in HPARAM_METRICS if m in scalars.get(last, {})]
    for summary in _hparams_summaries(summary_pb2, hparams, metrics, wall):
        chunks.append(record(event_pb2.Event(wall_time=wall, step=0, summary=summary).SerializeToString()))
    path.write_bytes(b"".join(chunks))
    return path


def heldout_histograms(detector, splits) -> dict[str, ScoreHistogram]:
    """The final ``detector``'s scores of the clients' held-out rows as counts on the shared bins,
    normal and anomalous rows apart (each client would send its counts; summed, they are the
    counts of all rows); empty without labels."""
    if detector is None or not splits or any(s.test_labels is None for s in splits):
        return {}
    scores = detector.decision_function(np.concatenate([s.test for s in splits]))  # one pass: scores are per row
    labels = np.concatenate([np.asarray(s.test_labels) for s in splits])
    return {"normal": ScoreHistogram.of(scores[labels == 0]), "anomalous": ScoreHistogram.of(scores[labels == 1])}
