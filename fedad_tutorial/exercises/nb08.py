"""Exercises of notebook 08 (time-series anomalies): windows in, events out.

- Exercise 8.1: flattened sliding windows of a metric stream.
- Exercise 8.2: event recall (an event counts as detected if any window overlapping it alarms).
- Exercise 8.3: false-alarm episodes (runs of alarming windows that touch no event).

Every check runs the learner's function on fresh streams and alarms and compares its behaviour with
:mod:`fedad_tutorial.chapters.timeseries`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedad_tutorial.chapters.timeseries import Event, event_metrics, sliding_windows, window_labels
from fedad_tutorial.exercises.checking import exercise, expect, learner_array, learner_number


def _fresh_alarms(rng: np.random.Generator, n: int, window: int) -> tuple[np.ndarray, np.ndarray, list[Event]]:
    """Window starts, random alarms in short runs, and a few non-overlapping events."""
    starts = np.arange(n)
    alarms = np.zeros(n, dtype=bool)
    for s in rng.choice(n, size=max(1, n // 25), replace=False):
        alarms[s:s + int(rng.integers(1, 5))] = True
    events, t = [], int(rng.integers(0, 20))
    while t < n - 5:
        length = int(rng.integers(1, 8))
        events.append(Event(t, t + length, str(rng.choice(["spike", "stuck", "wrong_time"]))))
        t += length + int(rng.integers(window + 5, 60))
    return starts, alarms, events


@exercise("Exercise 8.1: sliding windows")
def check_sliding_windows(learner_fn: Callable[[np.ndarray, int], np.ndarray], seed: int = 808) -> None:
    """``learner_fn(features, window)`` must return every window of ``window`` consecutive steps,
    flattened step by step (all metrics of the first step, then of the second, ...), stride 1.

    Checked on fresh streams against :func:`fedad_tutorial.chapters.timeseries.sliding_windows` (without
    clock): same shape, same values.
    """
    rng = np.random.default_rng(seed)
    for steps, metrics, window in ((50, 3, 4), (37, 5, 12), (20, 2, 1), (9, 4, 9)):
        features = rng.normal(size=(steps, metrics)).astype(np.float32)
        got = learner_array(learner_fn(features.copy(), window), "the windows", np.float32)
        want, _ = sliding_windows(features, window)
        expect(got.shape == want.shape,
               f"{steps} steps x {metrics} metrics, window {window}: expected shape {want.shape} "
               f"(steps - window + 1 windows of window * metrics values), got {got.shape}")
        if not np.allclose(got, want):
            by_metric = np.stack([features[i:i + window].T.ravel() for i in range(steps - window + 1)])
            hint = ("you flattened metric by metric; flatten step by step (features[i:i + window].ravel())"
                    if np.allclose(got, by_metric) else
                    "window i holds steps i to i + window - 1, flattened with .ravel()")
            expect(False, f"window {window}: values differ; {hint}")


@exercise("Exercise 8.2: event recall")
def check_event_recall(learner_fn: Callable[[np.ndarray, np.ndarray, int, list], float], seed: int = 88) -> None:
    """``learner_fn(alarms, starts, window, events)`` must return the share of events detected.

    An event ``Event(start, stop, kind)`` covers steps ``start`` to ``stop - 1``; window ``i`` covers
    steps ``starts[i]`` to ``starts[i] + window - 1``; an event is detected if at least one
    alarming window overlaps it. Checked on fresh alarms against the ``event_recall`` of
    :func:`fedad_tutorial.chapters.timeseries.event_metrics` (within 1e-4).
    """
    rng = np.random.default_rng(seed)
    for n, window in ((300, 1), (400, 6), (500, 12)):
        starts, alarms, events = _fresh_alarms(rng, n, window)
        got = learner_number(learner_fn(alarms.copy(), starts.copy(), window, list(events)),
                             "the share of events detected")
        want = event_metrics(alarms, starts, window, events, steps_per_day=48)["event_recall"]
        inside = np.mean([alarms[(starts >= e.start) & (starts < e.stop)].any() for e in events])
        hint = ("a window overlaps an event when it starts before the event ends AND ends after the "
                "event starts (starts < e.stop and starts + window > e.start), not only when it starts "
                "inside the event" if np.isclose(got, inside) and not np.isclose(inside, want)
                else "count the events with at least one overlapping alarming window, divide by the events")
        expect(abs(got - want) <= 1e-4, f"{len(events)} events, window {window}: got {got:.4f}, "
                                        f"expected {want:.4f}; {hint}")


@exercise("Exercise 8.3: false-alarm episodes")
def check_false_alarm_episodes(learner_fn: Callable[[np.ndarray, np.ndarray], int], seed: int = 8008) -> None:
    """``learner_fn(alarms, labels)`` must count the false-alarm episodes.

    An episode is a maximal run of consecutive alarming windows; it is false if none of its
    windows has label 1 (overlaps an event). Checked on fresh alarms against ``false_alarms`` of
    :func:`fedad_tutorial.chapters.timeseries.event_metrics`.
    """
    rng = np.random.default_rng(seed)
    for n, window in ((300, 1), (400, 6), (600, 12)):
        starts, alarms, events = _fresh_alarms(rng, n, window)
        labels = window_labels(starts, window, events)
        got = learner_number(learner_fn(alarms.copy(), labels.copy()), "the number of false-alarm episodes")
        want = event_metrics(alarms, starts, window, events, steps_per_day=48)["false_alarms"]
        false_windows = int(np.sum(alarms & (labels == 0)))
        hint = ("you counted windows; count runs of consecutive alarms (an operator is paged once per run)"
                if got == false_windows and false_windows != want else
                "split the alarms into runs of consecutive True values; count the runs whose labels are all 0")
        expect(got == want, f"{n} windows: got {got:g}, expected {want}; {hint}")
