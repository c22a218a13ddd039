"""Time-series streams: seasonality where asked, events where and as labelled, windows in the right
order, and event-level metrics that count events and false-alarm episodes like an operator would."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedad_tutorial.chapters.timeseries import (
    Event,
    event_metrics,
    make_metric_streams,
    seasonal_profile,
    sliding_windows,
    window_labels,
)
from fedad_tutorial.data import Split
from fedad_tutorial.errors import UserError
from fedad_tutorial.federated import FederatedConfig, run_federated


@pytest.fixture(scope="module")
def streams():
    return make_metric_streams(num_nodes=3, days=12, steps_per_day=48, events_per_kind=2, event_from_day=8, seed=1)


def test_profile_has_daily_weekly_and_trend():
    p = seasonal_profile(14 * 24, 24, daily_amplitude=0.5, weekend_factor=0.5, trend=0.0)
    assert p[3] == pytest.approx(0.5) and p[15] == pytest.approx(1.5)  # 03:00 low, 15:00 high
    assert p[5 * 24 + 15] == pytest.approx(0.75)  # Saturday afternoon: halved
    grown = seasonal_profile(10 * 24, 24, daily_amplitude=0.0, weekend_factor=1.0, trend=0.2)
    assert grown[0] == pytest.approx(1.0) and grown[-1] == pytest.approx(1.2)


def test_streams_follow_the_day_and_events_are_where_labelled(streams):
    s = streams[0]
    assert s.features.shape == (12 * 48, 5) and len(s.events) == 6
    assert all(e.start >= 8 * 48 for e in s.events)
    assert sorted({e.kind for e in s.events}) == ["spike", "stuck", "wrong_time"]
    assert int(s.step_labels.sum()) == sum(e.stop - e.start for e in s.events)
    hour = s.hour_of_day()
    rate = s.features[: 8 * 48, s.feature_names.index("request_rate")]
    assert rate[(hour[: 8 * 48] >= 13) & (hour[: 8 * 48] < 17)].mean() > 2.5 * rate[hour[: 8 * 48] < 5].mean()
    for e in s.events:
        if e.kind == "stuck":
            np.testing.assert_array_equal(s.features[e.start:e.stop], np.repeat(s.features[e.start - 1:e.start],
                                                                               e.stop - e.start, axis=0))
        if e.kind == "wrong_time":
            assert hour[e.start] < 6 and hour[e.stop - 1] < 6


def test_streams_are_seeded():
    a = make_metric_streams(num_nodes=2, days=6, steps_per_day=24, event_from_day=3, seed=7)
    b = make_metric_streams(num_nodes=2, days=6, steps_per_day=24, event_from_day=3, seed=7)
    np.testing.assert_array_equal(a[1].features, b[1].features)
    assert a[1].events == b[1].events
    with pytest.raises(UserError):
        make_metric_streams(days=5, event_from_day=5)


def test_sliding_windows_flatten_step_by_step_and_add_a_clock():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    w, starts = sliding_windows(x, 3, stride=2)
    assert starts.tolist() == [0, 2, 4, 6] and w.shape == (4, 6)
    np.testing.assert_array_equal(w[1], x[2:5].ravel())
    wc, _ = sliding_windows(x, 3, steps_per_day=4)
    angle = 2 * np.pi * (2 % 4) / 4  # the first window ends at step 2
    np.testing.assert_allclose(wc[0, -2:], [np.sin(angle), np.cos(angle)], atol=1e-6)
    with pytest.raises(UserError):
        sliding_windows(x, 11)


def test_window_labels_and_event_metrics_by_hand():
    starts = np.arange(12)
    events = [Event(2, 4, "stuck"), Event(9, 10, "spike")]
    np.testing.assert_array_equal(window_labels(starts, 2, events), [0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0])
    alarms = np.array([0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1], dtype=bool)
    m = event_metrics(alarms, starts, 2, events, steps_per_day=13)
    # the run 2-5 touches the first event (not false); the run 10-11 does not touch any: one false episode
    assert m["event_recall"] == 0.5 and m["events_detected"] == 1 and m["false_alarms"] == 1
    assert m["false_alarms_per_day"] == 1.0  # 13 steps = one day
    assert m["point_precision"] == pytest.approx(round(2 / 6, 4)) and m["point_recall"] == 0.4


@pytest.mark.slow
def test_windowed_autoencoder_finds_context_events_a_point_model_misses(streams):
    torch.set_num_threads(1)
    cut, spd = 8 * 48, 48

    def run(window, clock):
        splits, metas = [], []
        for s in streams:
            w, st = sliding_windows(s.features, window, steps_per_day=spd if clock else None)
            train, test = st + window <= cut, st >= cut
            splits.append(Split(s.name, w[train], w[test], window_labels(st[test], window, s.events)))
            metas.append(st[test])
        small = window == 1
        cfg = FederatedConfig(rounds=10, local_epochs=2, lr=5e-3, threshold="local", threshold_percentile=99.0,
                              hidden=(16, 8) if small else (64, 32), latent_dim=3 if small else 8, seed=1,
                              trim=0.0, engine="loop")
        result = run_federated(splits, cfg, progress=False)
        found = []
        for s, sp, st in zip(streams, splits, metas, strict=True):
            det = result.client_detectors[s.name]
            alarms = det.decision_function(sp.test) > det.threshold
            found += [alarms[(st < e.stop) & (st + window > e.start)].any() for e in s.events if e.kind != "spike"]
        return float(np.mean(found))

    point, windowed = run(1, False), run(12, True)
    assert windowed >= point + 0.25, (point, windowed)


def test_the_event_recall_plot_reads_the_grouped_table():
    """Notebook 08's table has two-level columns; the right panel compares window-level and event-level recall."""
    import pandas as pd

    from fedad_tutorial.plots import plot_event_recall

    columns = pd.MultiIndex.from_tuples([("windows", "recall"), ("events", "recall"), ("events", "false alarms / day")])
    table = pd.DataFrame([[0.2, 0.4, 0.5], [0.5, 0.7, 0.1]], index=["point AE", "windowed AE"], columns=columns)
    by_kind = pd.DataFrame({"spike": [1.0, 0.8], "stuck": [0.1, 0.5]}, index=table.index)
    right = plot_event_recall(by_kind, table).axes[1]
    assert sorted(round(p.get_height(), 3) for p in right.patches) == [0.2, 0.4, 0.5, 0.7]
