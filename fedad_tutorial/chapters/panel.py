"""What generalises: the command line's default on a panel of real tables, and where reconstruction fails.

Chapter 13 ends by leaving the two hospitals behind. ``benchmarks/real_panel.py`` runs ``fedad
simulate`` + ``fedad score`` with every default on 17 public tables (ADBench "Classical"), federated
over 5 non-IID clients, against an isolation forest, PCA and the norm of the scaled row; its results
are stored in ``benchmarks/results/`` (the data sets are not shipped, so the notebook reads the stored
tables: :func:`load_panel`, :func:`load_candidates`, :func:`per_dataset`).

The one data set where the default fails badly (optical digits: ROC-AUC well below 0.5) fails for a
reason worth a lesson: its anomalies (one digit) vary *less* than the normal rows (the other nine),
so an autoencoder reconstructs them *better*. :func:`regular_anomalies` builds that situation in a
few lines of generated data and :func:`regular_anomaly_study` measures it, with the federated
isolation forest of chapter 07 beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedad_tutorial.data import NodeData, hold_out
from fedad_tutorial.defaults import SIMULATE
from fedad_tutorial.errors import UserError
from fedad_tutorial.metrics import roc_auc

#: The stored runs of ``benchmarks/real_panel.py``: the panel (every default through the command line) and the
#: five runs of candidate changes (merged: a data set, seed and method from the first run that has it).
PANEL_FILE = "real_panel.csv"
CANDIDATE_FILES = tuple(f"real_panel_candidates_{run}.csv" for run in "abcde")
#: The classical methods of the panel (every other method is a neural one: ``fedad`` or a ``cand:`` candidate).
BASELINES = ("IF central", "IF federated", "PCA", "norm")


def results_dir() -> Path:
    """The repository's ``benchmarks/results/`` folder (the stored panel runs); needs a checkout of the course."""
    folder = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    if not (folder / PANEL_FILE).exists():
        raise UserError(f"the stored panel results are not in {folder}: run this from a checkout of the course")
    return folder


def load_panel(folder: Path | None = None) -> pd.DataFrame:
    """The stored panel: one row per data set, seed and method (``roc_auc``, ``pr_auc``, F1 at the thresholds, ...)."""
    return pd.read_csv((folder or results_dir()) / PANEL_FILE)


def read_runs(paths: Sequence[Path]) -> pd.DataFrame:
    """Several stored runs' rows, each marked with its file's stem (column ``run``); a method may repeat."""
    return pd.concat([pd.read_csv(path).assign(run=Path(path).stem) for path in paths], ignore_index=True)


def candidate_runs(folder: Path | None = None) -> pd.DataFrame:
    """Every row of the stored candidate runs, marked with its run (the time ratios compare within a run)."""
    return read_runs([(folder or results_dir()) / name for name in CANDIDATE_FILES])


def load_candidates(folder: Path | None = None) -> pd.DataFrame:
    """The stored candidate runs merged: a data set, seed and method from the first run that has it."""
    return candidate_runs(folder).drop_duplicates(["dataset", "seed", "method"])


def per_dataset(results: pd.DataFrame, metric: str = "roc_auc") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean and std (ddof 1) of ``metric`` over seeds: data sets as rows, methods as columns (first-seen order)."""
    methods = list(dict.fromkeys(results["method"]))
    datasets = list(dict.fromkeys(results["dataset"]))
    grouped = results.groupby(["dataset", "method"])[metric]
    mean = grouped.mean().unstack().loc[datasets, methods]
    std = grouped.std().unstack().loc[datasets, methods]
    return mean, std


def wins(mean: pd.DataFrame, method: str, against: str = "IF central", margin: float = 0.05) -> tuple[int, int]:
    """Data sets where ``method``'s mean beats ``against``'s, and where it is more than ``margin`` below."""
    diff = mean[method] - mean[against]
    return int((diff > 0).sum()), int((diff < -margin).sum())


def markdown_table(mean: pd.DataFrame, std: pd.DataFrame | None = None, digits: int = 3) -> str:
    """Data sets as rows, methods as columns, ``mean ± std`` cells, and a final row of means over data sets."""
    lines = ["| data set | " + " | ".join(mean.columns) + " |", "|---" * (len(mean.columns) + 1) + "|"]
    for name in mean.index:
        cells = [f"{mean.loc[name, m]:.{digits}f}" + ("" if std is None or np.isnan(std.loc[name, m])
                                                      else f" ± {std.loc[name, m]:.{digits}f}") for m in mean.columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{v:.{digits}f}**" for v in mean.mean()) + " |")
    return "\n".join(lines) + "\n"


def time_ratios(results: pd.DataFrame, reference: str = "cand:default") -> dict[str, float]:
    """Each method's summed training time over ``reference``'s, both from the same run (column ``run`` of merged
    tables; a method's first run): runs at different loads are not compared. A run without ``reference`` is
    compared with the first run that has it (runs started side by side, at the same load)."""
    runs = results["run"] if "run" in results else pd.Series("", index=results.index)
    with_reference = list(dict.fromkeys(runs[results["method"] == reference]))
    ratios = {}
    for method in results["method"].unique():
        run = runs[results["method"] == method].iloc[0]
        ref_run = run if run in with_reference else (with_reference[0] if with_reference else None)
        mine = results[(results["method"] == method) & (runs == run)]["seconds"].sum()
        ref = results[(results["method"] == reference) & (runs == ref_run)]["seconds"].sum()
        ratios[method] = mine / ref if ref else np.nan
    return ratios


def candidate_table(results: pd.DataFrame, reference: str = "cand:default", timing: pd.DataFrame | None = None
                    ) -> pd.DataFrame:
    """One row per neural method: mean ROC-AUC and PR-AUC over data sets, data sets > 0.05 below the central
    forest, wins over it, mean F1 at each threshold rule stored (columns ``f1_RULE``), and training time relative to
    ``reference`` (from ``timing``, every run's rows, if given: see :func:`time_ratios`)."""
    roc, _ = per_dataset(results, "roc_auc")
    pr, _ = per_dataset(results, "pr_auc")
    ratios = time_ratios(results if timing is None else timing, reference)
    rows = []
    for method in roc.columns:
        if method in BASELINES:
            continue
        won, below = wins(roc, method)
        f1 = {column: results.loc[results["method"] == method, column].mean()
              for column in results.columns if column.startswith("f1_")}
        rows.append({"method": method, "roc_auc": roc[method].mean(), "pr_auc": pr[method].mean(),
                     "wins_vs_IF": won, "below_IF_0.05": below, **f1,
                     "time_ratio": ratios.get(method, np.nan)})
    return pd.DataFrame(rows)


# --- the failure, made to happen: anomalies more regular than the normal rows --------------------------------------


@dataclass(frozen=True)
class Federation:
    """Clients' unlabelled training rows and labelled test rows (1 = anomaly)."""

    clients: list[np.ndarray]
    test: np.ndarray
    test_labels: np.ndarray


def regular_anomalies(seed: int = 0, rows: int = 3000, features: int = 20, factors: int = 4, rate: float = 0.03,
                      spread: float = 0.2, clients: int = 3, test_fraction: float = 0.3) -> Federation:
    """Rows where the anomalies are rare but *more regular* than the normal rows (the optical digits' situation).

    Every row is ``z @ A + noise`` for a fixed random ``factors x features`` map ``A``. Normal rows: ``z`` standard
    normal, noise of standard deviation 1. Anomalies (``rate`` of the rows): ``z`` in a small cluster 3.5 standard
    deviations out, noise ``spread`` (0.2: a fifth of the normal rows'). They are rare, so a density method isolates
    them; they lie on the same plane as the normal rows and carry less noise, so a reconstruction has less to miss.
    The training rows (anomalies included, unlabelled) are dealt at random to ``clients`` clients.
    """
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(factors, features)) * 3.0 / np.sqrt(factors)
    labels = (rng.random(rows) < rate).astype(np.int64)
    z = rng.normal(size=(rows, factors))
    centre = np.full(factors, 3.5 / np.sqrt(factors))
    z[labels == 1] = centre + 0.3 * rng.normal(size=(int(labels.sum()), factors))
    noise = np.where(labels[:, None] == 1, spread, 1.0)
    x = (z @ mixing + noise * rng.normal(size=(rows, features))).astype(np.float32)
    order = rng.permutation(rows)
    test, train = order[: int(rows * test_fraction)], order[int(rows * test_fraction):]
    return Federation([x[part] for part in np.array_split(train, clients)], x[test], labels[test])


def regular_anomaly_study(spreads: Sequence[float] = (0.2, 1.0, 2.0), seeds: Sequence[int] = (0, 1, 2),
                          rows: int = 2000) -> pd.DataFrame:
    """Per anomaly ``spread`` and seed: the federated AE (``fedad simulate``'s configuration) and the federated
    isolation forest (chapter 07) on :func:`regular_anomalies`: each one's ROC-AUC, and the AE's median
    reconstruction error of the normal and the anomalous test rows."""
    out = []
    for spread in spreads:
        for seed in seeds:
            federation = regular_anomalies(seed, rows=rows, spread=spread)
            scores, labels = detector_scores(federation, seed), federation.test_labels
            ae = scores["federated AE"]
            out.append({"spread": spread, "seed": seed,
                        **{f"{name} ROC-AUC": roc_auc(labels, s) for name, s in scores.items()},
                        "AE median error, normal": float(np.median(ae[labels == 0])),
                        "AE median error, anomalies": float(np.median(ae[labels == 1]))})
    return pd.DataFrame(out)


def detector_scores(federation: Federation, seed: int = 0) -> dict[str, np.ndarray]:
    """The federated AE's and the federated isolation forest's scores of the test rows (higher = more anomalous).
    The AE trains as ``fedad simulate`` does (30 % of each client's rows kept back), the forest as chapter 07's."""
    from fedad_tutorial.chapters.forest import FederatedIsolationForest
    from fedad_tutorial.federated import run_federated

    names = [f"x{j + 1}" for j in range(federation.test.shape[1])]
    splits = hold_out([NodeData(f"node_{k + 1}", rows, names) for k, rows in enumerate(federation.clients)],
                      seed=SIMULATE.seed)
    detector = run_federated(splits, SIMULATE, progress=False).detector
    forest = FederatedIsolationForest(trees_per_client=100, max_samples=128, seed=seed).fit(
        [s.train for s in splits])
    return {"federated AE": detector.decision_function(federation.test),
            "federated forest": forest.decision_function(federation.test)}
