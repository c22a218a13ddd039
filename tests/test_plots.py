"""The course's plot helpers draw what the notebooks describe: the right bars, lines and panels."""

import ast
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from fedad_tutorial import plots
from fedad_tutorial.chapters.timeseries import make_metric_streams, seasonal_profile
from fedad_tutorial.data import ANOMALY_TYPES, make_cloud_federation


def test_every_public_name_of_every_plots_module_is_exported_from_the_package():
    found = {}
    for path in Path(plots.__file__).parent.glob("*.py"):
        if path.name == "__init__.py":
            continue
        for node in ast.parse(path.read_text()).body:
            name = getattr(node, "name", None) or (node.targets[0].id if isinstance(node, ast.Assign) else None)
            if name and not name.startswith("_"):
                found[name] = path.stem
    assert plots._EXPORTS == found
    assert all(getattr(plots, name) is not None for name in plots.__all__) and "plot_roc_pr" in dir(plots)
    with pytest.raises(AttributeError, match="no_such_plot"):
        plots.no_such_plot  # noqa: B018


def test_importing_the_package_loads_no_plotting_library():
    """The modules load on first use of one of their names: ``import fedad_tutorial.plots`` stays cheap."""
    probe = "import sys, fedad_tutorial.plots; print(sorted({'matplotlib', 'pandas'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "[]\n"


def _history(clients: int = 3, rounds: int = 4, offset: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame([{"round": r, "client": f"node_{k}", "f1": offset + 0.1 * r + 0.01 * k, "roc_auc": 0.9}
                         for r in range(1, rounds + 1) for k in range(clients)])


def test_grouped_bars_draw_one_bar_per_cell_centred_on_each_column():
    table = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]}, index=["x", "y", "z"])
    fig, ax = plots.new_figure()
    plots.plot_grouped_bars(table, ax, ylabel="value")
    heights = [p.get_height() for p in ax.patches]
    centres = [p.get_x() + p.get_width() / 2 for p in ax.patches]
    assert heights == [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]  # row by row (one legend entry per row)
    np.testing.assert_allclose(centres, [-0.27, 0.73, 0.0, 1.0, 0.27, 1.27], atol=1e-12)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"] and ax.get_ylabel() == "value"


def test_mean_per_round_draws_each_runs_mean_over_clients():
    runs = {"slow": _history(), "fast": _history(offset=0.2)}
    fig = plots.plot_mean_per_round(runs, "f1")
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["slow", "fast"]
    np.testing.assert_allclose(lines[1].get_ydata(), 0.2 + 0.1 * np.arange(1, 5) + 0.01)
    assert fig.axes[0].get_ylim() == (0, 1.02)


def test_modes_per_client_puts_the_smallest_client_first():
    final = pd.concat({mode: pd.DataFrame({"n_train": [300, 100, 200], "roc_auc": [0.9, 0.8, 0.95],
                                           "f1": [0.7, 0.6, 0.8]}, index=["node_1", "node_2", "node_3"])
                       for mode in ("federated", "centralized", "local")}, axis=1)
    fig = plots.plot_modes_per_client(final)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["node_2\n(100 rows)", "node_3\n(200 rows)", "node_1\n(300 rows)"]
    assert len(fig.axes[1].patches) == 9 and fig.axes[1].patches[0].get_height() == 0.6


@pytest.mark.parametrize("draw", [
    lambda nodes: plots.plot_anomaly_profiles(nodes[0]),
    lambda nodes: plots.plot_federation_overview(nodes),
    lambda nodes: plots.plot_metric_correlations(nodes[0]),
])
def test_data_figures_have_their_panels(draw):
    nodes = make_cloud_federation(num_nodes=3, samples_per_node=200, anomaly_rate=0.1, seed=0)
    fig = draw(nodes)
    assert len(fig.axes) >= 1 and all(ax.has_data() for ax in fig.axes if ax.get_label() != "<colorbar>")


def test_stream_figure_shades_every_event():
    stream = make_metric_streams(num_nodes=1, days=6, steps_per_day=48, events_per_kind=1, event_from_day=2,
                                 seed=0)[0]
    fig = plots.plot_stream(stream, 48, 2, seasonal_profile(stream.num_steps, 48))
    top = fig.axes[0]
    assert len(top.patches) == len(stream.events) and len(top.get_lines()) == 3  # stream, profile, training end


def test_budget_curves_draw_every_split_and_the_mean():
    rounds = pd.Index(range(1, 11), name="round")
    auc = pd.DataFrame({0: np.linspace(0.9, 0.8, 10), 1: np.linspace(0.95, 0.85, 10)}, index=rounds)
    fig = plots.plot_budget_curves(auc, auc * 0.1)
    mean = [line for line in fig.axes[0].get_lines() if line.get_label() == "mean"][0]
    np.testing.assert_allclose(mean.get_ydata(), auc.mean(axis=1))


def test_bar_figure_labels_each_bar_and_colours_the_named_rows():
    table = pd.DataFrame({"spike": [0.25, 0.9], "flatline": [0.1, 0.8]}, index=["chance", "model"])
    fig = plots.bar_figure(table, width=0.3, bar_labels="%.2f", colors={"chance": "lightgrey"}, ylim=(0, 1.3))
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["0.10", "0.25", "0.80", "0.90"]
    assert ax.patches[0].get_facecolor() != ax.patches[2].get_facecolor()  # grey chance bars, coloured model bars
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["chance", "model"] and ax.get_ylim() == (0, 1.3)


def test_training_curve_draws_each_column_on_a_log_scale():
    curve = pd.DataFrame({"train": [1.0, 0.5, 0.25], "validation": [1.2, 0.7, 0.4]}, index=[1, 2, 3])
    ax = plots.plot_training_curve(curve).axes[0]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["train", "validation"]
    assert [line.get_linestyle() for line in lines] == ["-", "--"]
    np.testing.assert_allclose(lines[1].get_ydata(), [1.2, 0.7, 0.4])
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "epoch"


def test_recall_by_type_draws_one_bar_per_type_and_the_normal_rate():
    by_type = {"normal": 0.05, "spike": 0.9, "flatline": 0.3}
    ax = plots.plot_recall_by_type(by_type, {"spike": 12, "flatline": 7}).axes[0]
    assert [p.get_height() for p in ax.patches] == [0.9, 0.3]
    assert [t.get_text() for t in ax.texts] == ["0.90 (n=12)", "0.30 (n=7)"]
    normal = ax.get_lines()[0]
    assert list(normal.get_ydata()) == [0.05, 0.05] and normal.get_label() == "normal rows flagged (0.050)"


def test_rows_feature_errors_draw_one_panel_per_row_with_its_verdict():
    errors = np.arange(40, dtype=float).reshape(4, 10)
    names = [f"m{j}" for j in range(10)]
    rows = {"spike": 0, "flatline": 1, "level_shift": 2, "correlation_break": 3}
    fig = plots.plot_rows_feature_errors(errors, names, rows, scores=np.array([1.0, 3.0, 0.5, 2.5]), threshold=2.0)
    assert [ax.get_title() for ax in fig.axes] == ["spike: score 1.00 (missed)", "flatline: score 3.00 (flagged)",
                                                   "level_shift: score 0.50 (missed)",
                                                   "correlation_break: score 2.50 (flagged)"]
    first = fig.axes[1]
    assert [p.get_width() for p in first.patches] == [19.0, 18.0, 17.0, 16.0, 15.0, 14.0, 13.0, 12.0]
    assert first.get_yticklabels()[0].get_text() == "m9"


def test_score_histogram_takes_a_title():
    scores, labels = np.array([0.1, 0.2, 5.0, 0.3]), np.array([0, 0, 1, 0])
    assert plots.plot_score_histogram(scores, labels, 1.0, title="errors").axes[0].get_title() == "errors"


def test_epsilon_curves_draw_one_line_per_column_on_a_log_scale():
    rounds = np.arange(1, 4)
    curves = pd.DataFrame({"sigma 0.5": [1.0, 2.0, 3.0], "sigma 1.0": [0.2, 0.4, 0.6]}, index=rounds)
    ax = plots.plot_epsilon_curves(curves, q=0.5, delta=1e-3).axes[0]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["sigma 0.5", "sigma 1.0"]
    np.testing.assert_allclose(lines[1].get_xdata(), rounds)
    np.testing.assert_allclose(lines[1].get_ydata(), [0.2, 0.4, 0.6])
    assert ax.get_yscale() == "log" and ax.get_title() == "privacy loss over rounds (q = 0.5, delta = 0.001)"


def test_utility_vs_epsilon_draws_the_noisy_runs_and_both_references():
    utility = pd.DataFrame({"sigma": [None, 0.0, 0.5, 1.0], "epsilon": [np.inf, np.inf, 8.0, 2.0],
                            "ROC-AUC": [0.95, 0.93, 0.9, 0.8]},
                           index=["FedAvg (no DP)", "clipping only", "sigma 0.5", "sigma 1.0"])
    ax = plots.plot_utility_vs_epsilon(utility, "epsilon", title="utility").axes[0]
    dp, no_dp, clipped = ax.get_lines()
    np.testing.assert_allclose(dp.get_xdata(), [8.0, 2.0])
    np.testing.assert_allclose(dp.get_ydata(), [0.9, 0.8])
    assert list(no_dp.get_ydata()) == [0.95, 0.95] and list(clipped.get_ydata()) == [0.93, 0.93]
    assert [t.get_text() for t in ax.texts] == ["sigma 0.5", "sigma 1.0"]
    assert ax.get_xscale() == "log" and ax.get_title() == "utility"


def test_protocol_draws_the_server_and_each_client_with_an_arrow_each_way():
    ax = plots.plot_protocol(clients=4).axes[0]
    boxes = [t.get_text() for t in ax.texts if "stay here" in t.get_text()]
    assert len(boxes) == 4 and len(ax.patches) == 5  # four clients and the server
    assert sum(t.get_text() == "" for t in ax.texts) == 8  # one arrow up and one down per client
    assert not ax.axison and ax.get_title() == "What crosses the network in this course"


def test_runs_coincide_draws_each_run_with_its_own_style():
    rounds = pd.Index([1, 2, 3], name="round")
    runs = {"scratch": pd.DataFrame({"f1": [0.2, 0.4, 0.5]}, index=rounds),
            "flower": pd.DataFrame({"f1": [0.2, 0.4, 0.5]}, index=rounds)}
    ax = plots.plot_runs_coincide(runs, "f1", title="same").axes[0]
    first, second = ax.get_lines()
    styles = [(line.get_linestyle(), line.get_marker()) for line in (first, second)]
    assert styles == [("-", "o"), ("--", "x")]
    np.testing.assert_array_equal(first.get_ydata(), second.get_ydata())
    assert list(ax.get_xticks()) == [1, 2, 3] and ax.get_ylabel() == "F1 on held-out rows" and ax.get_title() == "same"


def test_roc_pr_takes_a_title_and_places_the_precision_recall_legend():
    labels = np.r_[np.zeros(50), np.ones(10)].astype(int)
    scores = {"good": labels + np.linspace(0, 0.5, 60), "noise": np.linspace(1, 0, 60)}
    fig = plots.plot_roc_pr(labels, scores, title="two scorers", pr_legend_loc="lower left")
    roc, pr = fig.axes
    assert fig.get_suptitle() == "two scorers" and pr.get_legend()._loc == 3  # 3: "lower left"
    assert len(roc.get_lines()) == 3 and [t.get_text() for t in pr.get_legend().get_texts()][0] == "good (AP 1.000)"


def test_flagged_by_type_draws_one_bar_per_detector_and_row_type_with_normal_last():
    kinds = ["normal", *ANOMALY_TYPES]  # any order in: anomaly types first, normal last out
    by_type = pd.DataFrame({"AE": np.linspace(0.1, 0.5, 5), "forest": np.linspace(0.2, 0.6, 5)}, index=kinds)
    ax = plots.plot_flagged_by_type(by_type, "recall").axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == [*ANOMALY_TYPES, "normal (false alarms)"] and len(ax.patches) == 10
    assert ax.patches[4].get_height() == by_type.loc["normal", "AE"]  # the AE's row of bars ends with normal
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["AE", "forest"] and ax.get_ylim() == (0, 1.15)


def test_attacked_recall_draws_a_panel_per_scenario_with_the_baseline_and_each_rule():
    rules, scenarios = ["FedAvg", "median"], ["data poisoning", "data + boost (x5)"]
    curves = {(s, r): [0.9, 0.8 - 0.1 * k, 0.7] for s in ["clean", *scenarios] for k, r in enumerate(rules)}
    fig = plots.plot_attacked_recall(curves, rules, scenarios, "spike")
    assert [ax.get_title() for ax in fig.axes] == ["data poisoning: the attacker trains on spike",
                                                   "data + boost (x5): the attacker trains on spike"]
    for ax in fig.axes:
        baseline, *lines = ax.get_lines()
        assert baseline.get_linestyle() == ":" and [line.get_label() for line in lines] == rules
        np.testing.assert_allclose(lines[1].get_ydata(), [0.9, 0.7, 0.7])
        np.testing.assert_array_equal(lines[0].get_xdata(), [1, 2, 3])
    assert fig.axes[0].get_legend() is not None and fig.axes[1].get_legend() is None


def test_auc_by_rule_draws_a_group_per_scenario_and_a_bar_per_rule():
    table = pd.DataFrame([{"aggregator": a, "scenario": s, "ROC-AUC": 0.6 + 0.1 * i + 0.01 * j}
                          for i, a in enumerate(["FedAvg", "median"]) for j, s in enumerate(["clean", "attack"])])
    ax = plots.plot_auc_by_rule(table, ["median", "FedAvg"], ["clean", "attack"]).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["clean", "attack"]
    np.testing.assert_allclose([p.get_height() for p in ax.patches], [0.7, 0.71, 0.6, 0.61])  # median's bars first
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["median", "FedAvg"] and ax.get_ylim() == (0.5, 1.04)


def _alarm_table(top: float) -> pd.DataFrame:
    table = pd.DataFrame({"metric": ["cpu", "mem", "io"], "value": [90.0, 50.0, 10.0], "normal_low": [10.0] * 3,
                          "normal_high": [60.0] * 3, "error": [top, 2.0, 1.0], "relative_error": [top, 2.0, 1.0]})
    table.attrs["relative"] = True
    return table


def test_alarm_tables_draw_one_panel_per_alarm():
    tables = {f"alarm {k}": _alarm_table(3.0 + k) for k in range(4)}
    fig = plots.plot_alarm_tables(tables, "why")
    assert fig.get_suptitle() == "why" and [ax.get_title() for ax in fig.axes] == list(tables)
    assert [p.get_width() for p in fig.axes[2].patches] == [5.0, 2.0, 1.0]
    assert fig.axes[0].texts[0].get_text() == "90  (normal 10-60)"


def test_explanation_hits_draw_every_score_per_type_with_grey_chance_bars():
    explained = pd.DataFrame(0.5, index=["flatline", "spike"], columns=plots.EXPLANATION_SCORES).assign(alarms=[4, 9])
    ax = plots.plot_explanation_hits(explained).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["spike\n(n=9)", "flatline\n(n=4)"]  # ANOMALY_TYPES order
    assert len(ax.patches) == 2 * len(plots.EXPLANATION_SCORES)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == plots.EXPLANATION_SCORES
    assert ax.patches[0].get_facecolor()[:3] == pytest.approx((0.827, 0.827, 0.827), abs=1e-3)  # light grey


def test_raw_and_log_draws_normal_and_attack_histograms_per_service_and_scale():
    raw = np.array([0.0, 10.0, 100.0, 1000.0])
    labels = np.array([0, 0, 1, 1])
    fig = plots.plot_raw_and_log({"http": (raw, np.log1p(raw), labels), "smtp": (raw, np.log1p(raw), labels)},
                                 "src_bytes")
    assert len(fig.axes) == 4 and [ax.get_xlabel() for ax in fig.axes[:2]] == ["src_bytes", "log(1 + src_bytes)"]
    counts = [p.get_height() for p in fig.axes[1].patches]
    assert sum(counts) == 4 and len(counts) == 2 * 59  # 59 bins for normal and for attack rows
    assert fig.axes[1].get_xlim()[1] >= np.log1p(1000.0) and fig.axes[0].get_yscale() == "log"


def test_server_features_draw_one_box_per_server_and_feature():
    servers = [SimpleNamespace(label=f"node_{k} (web)", train=SimpleNamespace(features=np.full((5, 2), float(k))))
               for k in range(3)]
    fig = plots.plot_server_features(servers, ["duration", "src_bytes"])
    assert [ax.get_title() for ax in fig.axes] == ["duration per server (training rows)",
                                                   "src_bytes per server (training rows)"]
    medians = [line.get_ydata()[0] for line in fig.axes[1].get_lines() if line.get_color() == "C1"]
    assert medians == [0.0, 1.0, 2.0] and fig.axes[0].get_xticklabels()[2].get_text() == "node_2\n(web)"


def test_price_of_recall_draws_each_detector_and_the_perfect_floor():
    recalls = np.array([0.5, 1.0])
    labels = np.r_[np.zeros(98), np.ones(2)]
    prices = {"web": (labels, {"AE": np.array([100.0, 400.0])}), "mail": (labels, {"AE": np.array([100.0, 900.0])})}
    fig = plots.plot_price_of_recall(recalls, prices, "price")
    web, mail = fig.axes
    detector, floor = web.get_lines()
    np.testing.assert_allclose(floor.get_ydata(), [100.0, 200.0])  # 2 attacks in 100 rows: 200 per 10,000 at recall 1
    assert detector.get_label() == "AE" and web.get_title() == "web: 2 attacks in 100 held-out connections"
    assert web.get_legend() is not None and mail.get_legend() is None and fig.get_suptitle() == "price"
    assert [t.get_text() for t in web.get_yticklabels()] == ["2", "5", "10", "20", "30", "50", "70"]


def test_panel_plot_draws_one_series_per_method_in_data_set_order():
    roc = pd.DataFrame({"fedad": [0.9, 0.3], "IF central": [0.8, 0.7], "other": [0.5, 0.5]}, index=["a", "b"])
    fig = plots.plot_panel(roc, ["fedad", "IF central", "missing"], title="t")
    ax = fig.axes[0]
    assert [c.get_label() for c in ax.collections] == ["fedad", "IF central"]
    np.testing.assert_allclose(ax.collections[0].get_offsets(), [[0.9, 0], [0.3, 1]])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"] and ax.yaxis_inverted()


def test_spread_sweep_draws_each_detectors_mean_over_seeds():
    study = pd.DataFrame({"spread": [0.2, 0.2, 1.0, 1.0], "seed": [0, 1, 0, 1],
                          "AE ROC-AUC": [0.0, 0.2, 0.6, 0.4], "forest ROC-AUC": [0.9, 0.8, 0.9, 1.0],
                          "AE median error, normal": [1.0] * 4})
    ax = plots.plot_spread_sweep(study).axes[0]
    lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert [line.get_label() for line in lines] == ["AE", "forest"]
    np.testing.assert_allclose(lines[0].get_ydata(), [0.1, 0.5])
    np.testing.assert_allclose(lines[1].get_ydata(), [0.85, 0.95])
