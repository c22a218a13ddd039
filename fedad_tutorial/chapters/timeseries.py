"""Time-series anomalies: metric streams with seasonality, sliding windows, event-level evaluation.

Notebook 08 moves from independent rows to streams. A node's metrics follow the time of day (more
traffic in the afternoon than at night), the day of the week and a slow trend; some anomalies are
only visible in that context: a perfectly normal traffic level at 3 a.m. is not normal at 3 a.m.,
and a metric that stops moving for hours is made of normal values. This module holds:

- :func:`make_metric_streams`: per-node streams with daily and weekly seasonality and trend, and
  labelled anomaly *events* (``spike``, ``wrong_time``, ``stuck``);
- :func:`sliding_windows`: flattened windows of a few metrics (plus a time-of-day clock), the
  input of a windowed autoencoder (a plain ``ModelSpec(input_dim=window * metrics)``);
- :func:`window_labels`, :func:`event_metrics`: point-level (per window) and event-level
  evaluation: an event is detected if any window overlapping it alarms; false alarms are counted
  as episodes per day.

Labels and events are for evaluation only; training reads features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedad_tutorial.data import make_cloud_federation, metric_catalog
from fedad_tutorial.errors import UserError

#: The metrics of a stream by default: traffic-driven, mixed and hardly seasonal ones.
STREAM_METRICS = ("request_rate", "net_out_mbps", "cpu_util_pct", "latency_p99_ms", "mem_util_pct")

#: Anomalous events :func:`make_metric_streams` injects.
EVENT_KINDS: dict[str, str] = {
    "spike": "one step where a few metrics jump far above their range (a point anomaly)",
    "wrong_time": "for a few night steps, traffic-driven metrics sit at their afternoon level: "
    "every value is normal, but not at that time of day",
    "stuck": "all metrics repeat the last reported row for several steps (a stalled agent): "
    "every row is a real normal row, only the sequence is wrong",
}


@dataclass(frozen=True)
class Event:
    """An anomalous event: steps ``start`` to ``stop - 1`` of a stream."""

    start: int
    stop: int
    kind: str


@dataclass
class MetricStream:
    """One node's metric stream, one row per step, in time order."""

    name: str
    features: np.ndarray  # (steps, metrics)
    feature_names: list[str]
    steps_per_day: int
    events: list[Event]

    @property
    def num_steps(self) -> int:
        return int(self.features.shape[0])

    @property
    def step_labels(self) -> np.ndarray:
        """1 on every step inside an event, else 0 (evaluation only)."""
        labels = np.zeros(self.num_steps, dtype=np.int64)
        for e in self.events:
            labels[e.start:e.stop] = 1
        return labels

    def hour_of_day(self) -> np.ndarray:
        """The hour (0-24, fractional) of every step."""
        return 24.0 * (np.arange(self.num_steps) % self.steps_per_day) / self.steps_per_day


def seasonal_profile(num_steps: int, steps_per_day: int, daily_amplitude: float = 0.7,
                     weekend_factor: float = 0.75, trend: float = 0.1) -> np.ndarray:
    """The web-traffic multiplier of every step: daily cycle x weekly cycle x linear trend.

    Daily: ``1 + a * sin`` shifted so traffic is lowest around 03:00 and highest around 15:00;
    days 5 and 6 of every week (weekend) are multiplied by ``weekend_factor``; the trend rises
    linearly from 1 to ``1 + trend`` over the stream.

    >>> p = seasonal_profile(48, 24, daily_amplitude=0.5, weekend_factor=1.0, trend=0.0)
    >>> round(float(p[3]), 2), round(float(p[15]), 2)
    (0.5, 1.5)
    """
    if steps_per_day < 2:
        raise UserError(f"steps_per_day must be at least 2, got {steps_per_day}")
    t = np.arange(num_steps)
    hour = 24.0 * (t % steps_per_day) / steps_per_day
    daily = 1.0 + daily_amplitude * np.sin(2 * np.pi * (hour - 9.0) / 24.0)
    day = t // steps_per_day
    weekly = np.where(day % 7 >= 5, weekend_factor, 1.0)
    growth = 1.0 + trend * t / max(num_steps - 1, 1)
    return daily * weekly * growth


def _web_share(names: list[str]) -> np.ndarray:
    """Each metric's share of web-traffic loading: how strongly it follows the traffic cycle."""
    catalog = metric_catalog(30).loc[names]
    loadings = catalog[["web_traffic", "batch_compute", "storage_io", "memory_pressure"]].to_numpy(float)
    return loadings[:, 0] / loadings.sum(axis=1)


def _persistent(rows: np.ndarray, persistence: float) -> np.ndarray:
    """An exponential moving average of ``rows`` in log space, with the same mean log level."""
    if not 0.0 <= persistence < 1.0:
        raise UserError(f"persistence must be in [0, 1), got {persistence}")
    logs = np.log(np.maximum(rows, 1e-9))
    out = np.empty_like(logs)
    out[0] = logs[0]
    for t in range(1, logs.shape[0]):
        out[t] = persistence * out[t - 1] + (1.0 - persistence) * logs[t]
    return np.exp(out - out.mean(axis=0) + logs.mean(axis=0))


def make_metric_streams(num_nodes: int = 4, days: int = 14, steps_per_day: int = 48,
                        metrics: tuple[str, ...] = STREAM_METRICS, events_per_kind: int = 3,
                        event_from_day: int = 10, daily_amplitude: float = 0.7,
                        weekend_factor: float = 0.75, trend: float = 0.1, persistence: float = 0.7,
                        seed: int = 42) -> list[MetricStream]:
    """Per-node metric streams with daily/weekly seasonality, a trend and labelled events.

    Each node's rows start as normal rows of :func:`~fedad_tutorial.data.make_cloud_federation`
    (the node's own regime). Workload does not jump independently from one minute to the next, so
    the rows are made persistent: an exponential moving average in log space,
    ``log y_t = persistence * log y_{t-1} + (1 - persistence) * log x_t`` (re-centred on the node's
    mean level), which keeps each node's level but shrinks and correlates the jitter. Every metric is then
    multiplied by ``seasonal_profile(...) ** w``, ``w`` its share of web-traffic loading (request
    rate follows traffic fully, memory hardly). Events are injected from day ``event_from_day`` on
    (earlier days are clean history to train on), ``events_per_kind`` of each of
    :data:`EVENT_KINDS` per node, never overlapping:

    - ``spike``: 1 step, 1-2 metrics raised by 6-10 of their standard deviations;
    - ``wrong_time``: 3 hours between 00:00 and 06:00 whose traffic multiplier is the 15:00 one;
    - ``stuck``: 4 hours during the morning rise (06:00-12:00) or the evening fall (18:00-24:00)
      repeating the row before.

    >>> s = make_metric_streams(num_nodes=2, days=7, steps_per_day=24, event_from_day=4, seed=0)
    >>> s[0].features.shape, len(s[0].events), sorted({e.kind for e in s[0].events})
    ((168, 5), 9, ['spike', 'stuck', 'wrong_time'])
    """
    if days <= event_from_day:
        raise UserError(f"days ({days}) must exceed event_from_day ({event_from_day})")
    names = list(metrics)
    unknown = set(names) - set(metric_catalog(30).index)
    if unknown:
        raise UserError(f"unknown metrics {sorted(unknown)}")
    steps = days * steps_per_day
    nodes = make_cloud_federation(num_nodes=num_nodes, samples_per_node=steps, anomaly_rate=0.0, seed=seed)
    cols = [nodes[0].feature_names.index(n) for n in names]
    share = _web_share(names)
    profile = seasonal_profile(steps, steps_per_day, daily_amplitude, weekend_factor, trend)
    rng = np.random.default_rng([seed, 8])
    hour = 24.0 * (np.arange(steps) % steps_per_day) / steps_per_day
    streams = []
    for node in nodes:
        base = _persistent(node.features[:, cols].astype(np.float64), persistence)
        features = base * profile[:, None] ** share[None, :]
        std = features[: event_from_day * steps_per_day].std(axis=0)
        taken = np.zeros(steps, dtype=bool)
        taken[: event_from_day * steps_per_day] = True
        events: list[Event] = []
        hours = max(1, steps_per_day // 24)  # steps per hour
        plans = [("spike", 1, (0.0, 24.0)), ("wrong_time", 3 * hours, (0.0, 6.0)),
                 ("stuck", 4 * hours, (6.0, 12.0)), ("stuck", 4 * hours, (18.0, 24.0))]
        for kind, length, (h0, h1) in plans:
            count = events_per_kind if kind != "stuck" else None
            if kind == "stuck":  # split between the morning and the evening windows
                count = (events_per_kind + (h0 < 12)) // 2
            candidates = [t for t in range(1, steps - length)
                          if h0 <= hour[t] and hour[t + length - 1] < h1 and hour[t + length - 1] >= hour[t]
                          and not taken[max(0, t - 2):t + length + 2].any()]
            for t in rng.permutation(candidates):
                if count == 0:
                    break
                t = int(t)
                if taken[max(0, t - 2):t + length + 2].any():
                    continue
                stop = t + length
                if kind == "spike":
                    hit = rng.choice(len(names), size=int(rng.integers(1, 3)), replace=False)
                    features[t, hit] += rng.uniform(6.0, 10.0, size=hit.size) * std[hit]
                elif kind == "wrong_time":
                    afternoon = profile[t - t % steps_per_day + int(15 * steps_per_day / 24)]
                    lift = (afternoon / profile[t:stop])[:, None] ** share[None, :]
                    features[t:stop] *= lift
                else:
                    features[t:stop] = features[t - 1]
                taken[t:stop] = True
                events.append(Event(t, stop, kind))
                count -= 1
        events.sort(key=lambda e: e.start)
        streams.append(MetricStream(node.name, features.astype(np.float32), names, steps_per_day, events))
    return streams


def sliding_windows(features: np.ndarray, window: int, stride: int = 1,
                    steps_per_day: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Flattened sliding windows of a stream.

    Args:
        features: (steps, metrics) in time order.
        window: steps per window.
        stride: steps between window starts.
        steps_per_day: if given, append the clock of the window's last step, ``sin`` and ``cos``
            of the time of day, so a model can tell 03:00 from 15:00.

    Returns:
        ``(windows, starts)``: ``windows[i]`` is ``features[starts[i]:starts[i] + window]``
        flattened step by step (all metrics of the first step, then the second, ...), followed by
        the two clock values if asked; ``starts`` the first step of each window.

    >>> w, s = sliding_windows(np.arange(10.0).reshape(5, 2), window=3)
    >>> w.shape, s.tolist(), w[1].tolist()
    ((3, 6), [0, 1, 2], [2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise UserError(f"features must be (steps, metrics), got shape {features.shape}")
    if window < 1 or stride < 1:
        raise UserError("window and stride must be at least 1")
    steps = features.shape[0]
    if steps < window:
        raise UserError(f"a stream of {steps} steps is shorter than one window of {window}")
    starts = np.arange(0, steps - window + 1, stride)
    idx = starts[:, None] + np.arange(window)[None, :]
    windows = features[idx].reshape(starts.size, -1)
    if steps_per_day is not None:
        angle = 2 * np.pi * ((starts + window - 1) % steps_per_day) / steps_per_day
        windows = np.hstack([windows, np.sin(angle)[:, None], np.cos(angle)[:, None]]).astype(np.float32)
    return windows, starts


def window_labels(starts: np.ndarray, window: int, events: list[Event]) -> np.ndarray:
    """1 for every window that overlaps an event (point-level labels of windows), else 0.

    >>> window_labels(np.arange(6), 2, [Event(3, 4, "spike")]).tolist()
    [0, 0, 1, 1, 0, 0]
    """
    starts = np.asarray(starts)
    labels = np.zeros(starts.size, dtype=np.int64)
    for e in events:
        labels[(starts < e.stop) & (starts + window > e.start)] = 1
    return labels


def event_metrics(alarms: np.ndarray, starts: np.ndarray, window: int, events: list[Event],
                  steps_per_day: int) -> dict[str, float]:
    """Event-level evaluation of window alarms (and the point-level numbers for comparison).

    Args:
        alarms: one boolean per window (score above threshold).
        starts: first step of each window (from :func:`sliding_windows`, stride 1 or more).
        window: steps per window.
        events: the stream's events that fall inside the evaluated steps.
        steps_per_day: to express false alarms per day.

    Returns:
        ``event_recall``: share of events overlapped by at least one alarming window;
        ``events_detected``, ``events``; ``false_alarms``: episodes (maximal runs of consecutive
        alarming windows) that overlap no event, what an operator would be paged for;
        ``false_alarms_per_day`` over the evaluated span; ``point_precision`` and
        ``point_recall``: per-window precision and recall against :func:`window_labels`.

    >>> m = event_metrics(np.array([0, 1, 1, 0, 0, 1, 0, 0], bool), np.arange(8), 1,
    ...                   [Event(1, 3, "stuck"), Event(6, 7, "spike")], steps_per_day=4)
    >>> m["event_recall"], m["false_alarms"], m["false_alarms_per_day"], m["point_recall"]
    (0.5, 1, 0.5, 0.6667)
    """
    alarms = np.asarray(alarms, dtype=bool)
    starts = np.asarray(starts)
    if alarms.shape != starts.shape:
        raise UserError(f"{alarms.size} alarms for {starts.size} windows")
    labels = window_labels(starts, window, events)
    detected = sum(bool(alarms[(starts < e.stop) & (starts + window > e.start)].any()) for e in events)
    false_windows = alarms & (labels == 0)
    # an episode of consecutive alarms counts once, and only if none of it touches an event
    episodes, k = 0, 0
    while k < alarms.size:
        if not alarms[k]:
            k += 1
            continue
        j = k
        while j + 1 < alarms.size and alarms[j + 1]:
            j += 1
        episodes += int(false_windows[k:j + 1].all())
        k = j + 1
    span_steps = int(starts.max() + window - starts.min()) if starts.size else 0
    days = span_steps / steps_per_day if steps_per_day else float("nan")
    tp = int(np.sum(alarms & (labels == 1)))
    return {
        "event_recall": round(detected / len(events), 4) if events else float("nan"),
        "events_detected": int(detected), "events": len(events),
        "false_alarms": int(episodes),
        "false_alarms_per_day": round(episodes / days, 4) if days else float("nan"),
        "point_precision": round(float(tp / alarms.sum()), 4) if alarms.any() else 0.0,
        "point_recall": round(float(tp / labels.sum()), 4) if labels.any() else float("nan"),
    }
