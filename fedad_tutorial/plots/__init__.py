"""Plots of the course and the command line, one module per concept they draw.

Functions draw on a Matplotlib ``Axes`` you pass in (so notebooks can compose them) or on a new
figure, with the object API, never pyplot's global state: they work the same in a script, a test
and a notebook, where a plot cell is one or two lines and the figure shows inline. Notebooks write
nothing (see :mod:`fedad_tutorial.plots.saving`).

Every public name is re-exported here, so ``from fedad_tutorial import plots; plots.plot_roc_pr(...)`` and
``from fedad_tutorial.plots import plot_roc_pr`` work whichever module defines it. A module is imported
when one of its names is first used: the command line, which draws one figure, loads only what that
figure needs. A new module's public names go in ``_EXPORTS``.

- :mod:`~fedad_tutorial.plots._style`: building blocks (a figure, curves, grouped bars);
- :mod:`~fedad_tutorial.plots.saving`: inline display, and saving a figure on purpose;
- :mod:`~fedad_tutorial.plots.data`: the generated federation (notebook 01);
- :mod:`~fedad_tutorial.plots.training`: training curves and memorisation;
- :mod:`~fedad_tutorial.plots.detection`: score distributions, ROC/PR curves, the share flagged per row type;
- :mod:`~fedad_tutorial.plots.explain`: per-feature errors of anomalous rows, alarms explained (notebook 12);
- :mod:`~fedad_tutorial.plots.vae`: the variational autoencoder (notebook 03);
- :mod:`~fedad_tutorial.plots.federation`: metrics over federated rounds, what crosses the network;
- :mod:`~fedad_tutorial.plots.thresholds`: threshold strategies (notebook 05);
- :mod:`~fedad_tutorial.plots.timeseries`: metric streams and window scores (notebook 08);
- :mod:`~fedad_tutorial.plots.drift`: concept drift (notebook 09);
- :mod:`~fedad_tutorial.plots.privacy`: differential privacy (notebook 10);
- :mod:`~fedad_tutorial.plots.hospitals`: the WDBC hospitals (notebook 13);
- :mod:`~fedad_tutorial.plots.budget`: the training budget (notebook 13);
- :mod:`~fedad_tutorial.plots.panel`: the real-data panel and anomalies more regular than normal rows (notebook 13);
- :mod:`~fedad_tutorial.plots.poisoning`: attacks and robust aggregation (notebook 11);
- :mod:`~fedad_tutorial.plots.oneclass`: Deep SVDD's hypersphere, its collapse, the federated centre (notebook 14);
- :mod:`~fedad_tutorial.plots.intrusion`: network intrusion, the price of recall (notebook 15).
"""

from __future__ import annotations

import importlib

#: Each public name and the module (of this package) that defines it.
_EXPORTS = {
    "plot_hypersphere": "oneclass", "plot_collapse": "oneclass", "plot_client_centres": "oneclass",
    "plot_comparison": "oneclass",
    "new_axes": "_style", "new_figure": "_style", "plot_curves": "_style", "plot_grouped_bars": "_style",
    "bar_figure": "_style",
    "figures_dir": "saving", "FIGURES_ENV": "saving", "course_figure": "saving", "save_figure": "saving",
    "ROW_TYPE_COLORS": "data", "plot_metric_correlations": "data", "plot_metric_pairs": "data",
    "plot_anomaly_profiles": "data", "plot_federation_overview": "data",
    "plot_training_curve": "training", "plot_memorisation": "training",
    "plot_score_histogram": "detection", "plot_roc_pr": "detection", "plot_recall_by_type": "detection",
    "plot_flagged_by_type": "detection",
    "plot_feature_errors": "explain", "plot_rows_feature_errors": "explain", "plot_alarm_tables": "explain",
    "EXPLANATION_SCORES": "explain", "plot_explanation_hits": "explain",
    "LATENT_STYLE": "vae", "plot_beta_sweep": "vae", "plot_latent_means": "vae",
    "plot_metric_per_round": "federation", "plot_f1_per_round": "federation", "mean_per_round": "federation",
    "plot_mean_per_round": "federation", "plot_modes_per_client": "federation", "plot_runs_coincide": "federation",
    "plot_protocol": "federation",
    "plot_threshold_comparison": "thresholds", "plot_threshold_sweep": "thresholds",
    "plot_thresholds_per_round": "thresholds",
    "EVENT_COLORS": "timeseries", "plot_stream": "timeseries", "plot_event_recall": "timeseries",
    "plot_window_scores": "timeseries",
    "plot_false_alarm_storm": "drift", "plot_drift_tests": "drift", "plot_adaptation": "drift",
    "plot_epsilon_curves": "privacy", "plot_utility_vs_epsilon": "privacy",
    "plot_hospital_bands": "hospitals", "plot_scores_and_components": "hospitals",
    "plot_budget_curves": "budget",
    "plot_panel": "panel", "plot_spread_sweep": "panel",
    "plot_attacked_recall": "poisoning", "plot_auc_by_rule": "poisoning",
    "plot_raw_and_log": "intrusion", "plot_server_features": "intrusion", "plot_price_of_recall": "intrusion",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    """Import the module that defines ``name`` on first use (PEP 562), and cache the name here."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
