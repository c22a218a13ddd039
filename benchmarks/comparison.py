"""The comparison harness: detectors on the WDBC hospital federation, same splits, same held-out rows.

Every method trains on the hospitals' unlabelled training rows (contaminated with ~3 % malignant
cases) and scores the pooled held-out rows of all hospitals; labels are used only for the
ROC-AUC of those held-out rows. ``benchmarks/wdbc_table.py`` and ``tests/test_wdbc.py`` call
:func:`compare`; the table it writes is the one notebook 13 shows. It lives beside the benchmarks,
not in the package, because it runs the ``fedad`` command line (an app) on the chapters' data.

Methods (names are the keys of :data:`METHODS`):

- the command line as a user runs it (:func:`command_line_scores`): the hospitals exported to node
  CSVs, ``fedad simulate --data-dir DIR/train`` with every default (:data:`~fedad_tutorial.
  federated.RECOMMENDED`, 10 rounds; it keeps 30 % of each training CSV back for its per-round
  table, so it trains on fewer rows), then ``fedad score`` on each ``DIR/test/node_k.csv``; also with
  one flag changed (``--trim 0``, ``--rounds 30``) to show what the defaults buy;
- ``federated`` / ``centralized`` / ``local`` AE and VAE through
  :func:`~fedad_tutorial.federated.run_federated` with the course's reference configuration (30
  rounds; matched budgets: centralized makes the same passes over every row as federated).
  ``trimmed`` variants leave each batch's highest-loss 10 % out of every step
  (:func:`~fedad_tutorial.training.batch_loss`). Local-only: each hospital's own model scores its
  own held-out rows;
- ``scaled norm`` (no training), ``pca reconstruction``, ``pca latent`` (Mahalanobis of the 3-dim
  code), ``isolation forest``: :mod:`fedad_tutorial.chapters.baselines` on the pooled training rows.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from fedad_tutorial.chapters.baselines import isolation_forest_scores, norm_scores, pca_scores
from fedad_tutorial.chapters.datasets import Hospital, export_hospitals, wdbc_hospitals
from fedad_tutorial.csvio import find_node_csvs
from fedad_tutorial.federated import FederatedConfig, run_federated
from fedad_tutorial.metrics import roc_auc

#: Trimmed share used by the ``trimmed`` variants (above the expected ~3-5 % contamination).
TRIM = 0.1
#: The neural configuration shared by the library's AE/VAE methods: the course's plain reference (loop engine,
#: global threshold, untrimmed; the ``trimmed`` variants set ``trim``), not the command line's defaults.
BASE = FederatedConfig(seed=42, engine="loop", threshold="global", trim=0.0)
#: ``fedad simulate``'s default number of rounds (the command line's budget on node CSVs).
SIMULATE_ROUNDS = 10

Scorer = Callable[[Sequence[Hospital], int], np.ndarray]  # (hospitals, seed) -> scores of the pooled test rows


def command_line_scores(hospitals: Sequence[Hospital], *flags: str) -> np.ndarray:
    """Scores of the pooled held-out rows from ``fedad simulate`` + ``fedad score``, run as a user would.

    The hospitals are exported to node CSVs in a temporary folder; ``flags`` are added to
    ``fedad simulate`` (none: every default).
    """
    from fedad_tutorial.cli import main as fedad

    with tempfile.TemporaryDirectory() as tmp:
        train_dir, test_dir = export_hospitals(list(hospitals), tmp)
        run_dir = Path(tmp) / "run"
        outputs = {path: Path(tmp) / f"scores_{path.stem}.csv" for path in find_node_csvs(test_dir)}
        commands = [["simulate", "--data-dir", str(train_dir), "--output-dir", str(run_dir), "--quiet", *flags]]
        commands += [["score", "--model", str(run_dir / "model.pt"), "--data", str(path), "--output", str(out)]
                     for path, out in outputs.items()]
        with contextlib.redirect_stdout(io.StringIO()):
            for command in commands:
                if (code := fedad(command)) != 0:
                    raise RuntimeError(f"fedad {' '.join(command)} exited with {code}")
        return np.concatenate([pd.read_csv(out)["score"].to_numpy(np.float64) for out in outputs.values()])


def _command_line(*flags: str) -> Scorer:
    return lambda hospitals, seed: command_line_scores(hospitals, *flags)


def _neural(mode: str, **overrides) -> Scorer:
    config = replace(BASE, **overrides)

    def score(hospitals: Sequence[Hospital], seed: int) -> np.ndarray:
        splits = [h.split() for h in hospitals]
        result = run_federated(splits, config, mode=mode, progress=False)
        if mode == "local":  # each hospital's own model on its own held-out rows
            return np.concatenate([result.client_detectors[s.name].decision_function(s.test) for s in splits])
        return result.detector.decision_function(np.concatenate([s.test for s in splits]))

    return score


def _pooled(fn: Callable[[np.ndarray, np.ndarray, int], np.ndarray]) -> Scorer:
    def score(hospitals: Sequence[Hospital], seed: int) -> np.ndarray:
        return fn(np.concatenate([h.train.features for h in hospitals]),
                  np.concatenate([h.test.features for h in hospitals]), seed)

    return score


#: The row of the command line with all defaults (the row the course's claim is about).
COMMAND_LINE = "`fedad simulate` + `fedad score`, all defaults (10 rounds, trim 0.1)"

METHODS: dict[str, Scorer] = {
    COMMAND_LINE: _command_line(),
    "same, `--trim 0` (plain training)": _command_line("--trim", "0"),
    "same, `--rounds 30` (3x the budget)": _command_line("--rounds", "30"),
    "federated AE": _neural("federated"),
    "federated AE, trimmed": _neural("federated", trim=TRIM),
    "centralized AE": _neural("centralized"),
    "centralized AE, trimmed": _neural("centralized", trim=TRIM),
    "local-only AE": _neural("local"),
    "local-only AE, trimmed": _neural("local", trim=TRIM),
    "federated VAE": _neural("federated", model="vae"),
    "federated VAE, trimmed": _neural("federated", model="vae", trim=TRIM),
    "centralized VAE": _neural("centralized", model="vae"),
    "centralized VAE, trimmed": _neural("centralized", model="vae", trim=TRIM),
    "local-only VAE, trimmed": _neural("local", model="vae", trim=TRIM),
    "scaled norm (no training)": _pooled(lambda tr, te, s: norm_scores(tr, te)),
    "PCA reconstruction (3 comp.)": _pooled(lambda tr, te, s: pca_scores(tr, te, 3, "reconstruction")),
    "PCA latent Mahalanobis (3 comp.)": _pooled(lambda tr, te, s: pca_scores(tr, te, 3, "latent")),
    "isolation forest (centralized)": _pooled(lambda tr, te, s: isolation_forest_scores(tr, te, s)),
}


def compare(seeds: Sequence[int], methods: Sequence[str] | None = None, **federation) -> pd.DataFrame:
    """ROC-AUC of each method on each seed's WDBC federation (pooled held-out rows).

    Args:
        seeds: the random splits (:func:`~fedad_tutorial.chapters.datasets.wdbc_hospitals` seeds).
        methods: keys of :data:`METHODS` (default: all).
        **federation: passed to :func:`~fedad_tutorial.chapters.datasets.wdbc_hospitals`.

    Returns:
        One row per seed and method: ``seed, method, roc_auc``.
    """
    rows = []
    for seed in seeds:
        hospitals = wdbc_hospitals(seed=seed, **federation)
        labels = np.concatenate([h.test.labels for h in hospitals])
        for name in methods or METHODS:
            rows.append({"seed": seed, "method": name,
                         "roc_auc": roc_auc(labels, METHODS[name](hospitals, seed))})
    return pd.DataFrame(rows)


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of ROC-AUC per method over seeds, in first-seen method order."""
    order = list(dict.fromkeys(results["method"]))
    stats = results.groupby("method")["roc_auc"].agg(["mean", "std", "count"]).loc[order]
    return stats.rename(columns={"count": "splits"}).reset_index()


def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a markdown table: ``method | ROC-AUC (mean ± std) | splits``."""
    lines = ["| method | ROC-AUC (mean ± std) | splits |", "| --- | --- | --- |"]
    lines += [f"| {r.method} | {r.mean:.3f} ± {r.std:.3f} | {int(r.splits)} |" for r in summary.itertuples()]
    return "\n".join(lines) + "\n"
