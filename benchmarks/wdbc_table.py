"""The WDBC results table: every detector on the same 5 random hospital splits (mean ± std ROC-AUC).

Usage::

    python benchmarks/wdbc_table.py            # 5 splits (seeds 0-4), about 3-4 minutes on 1 core
    python benchmarks/wdbc_table.py --seeds 2  # a quick look

Writes ``figures/wdbc_results.md`` (the markdown table, shown in notebook 07 and the README) and
``figures/wdbc_results.csv`` (one row per split and method) and prints the table.

Besides the methods of :mod:`fedad_tutorial.comparison`, the first row is the command-line flow
exactly as a user runs it: the federation exported to node CSVs, ``fedad simulate --data-dir
DIR/train`` with every default (it holds out 30 % of each training CSV for its own per-round
table, so it trains on fewer rows), then ``fedad score`` on ``DIR/test/node_k.csv``, pooled.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from fedad_tutorial.cli import main as fedad
from fedad_tutorial.comparison import compare, markdown_table, summary_table
from fedad_tutorial.csvio import find_node_csvs, read_node_csv
from fedad_tutorial.datasets import export_hospitals, wdbc_hospitals
from fedad_tutorial.detector import Detector
from fedad_tutorial.plots import figures_dir

CLI_METHOD = "`fedad simulate` + `fedad score` (all defaults)"


def cli_flow_auc(seed: int, workdir: Path) -> float:
    """ROC-AUC of the default command-line flow on one split (pooled held-out rows of all hospitals)."""
    train_dir, test_dir = export_hospitals(wdbc_hospitals(seed=seed), workdir / f"wdbc_{seed}")
    run_dir = workdir / f"run_{seed}"
    with contextlib.redirect_stdout(io.StringIO()):
        code = fedad(["simulate", "--data-dir", str(train_dir), "--output-dir", str(run_dir), "--quiet"])
    if code != 0:
        raise SystemExit(f"fedad simulate failed with code {code}")
    detector = Detector.load(run_dir / "model.pt")
    nodes = [read_node_csv(path) for path in find_node_csvs(test_dir)]
    scores = np.concatenate([detector.score_samples(n.features) for n in nodes])
    return float(roc_auc_score(np.concatenate([n.labels for n in nodes]), scores))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of random splits (seeds 0..N-1)")
    parser.add_argument("--output", type=Path, default=figures_dir() / "wdbc_results.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    with tempfile.TemporaryDirectory() as tmp:
        cli_rows = [{"seed": s, "method": CLI_METHOD, "roc_auc": cli_flow_auc(s, Path(tmp))} for s in seeds]
    results = pd.concat([pd.DataFrame(cli_rows), compare(seeds)], ignore_index=True)
    table = markdown_table(summary_table(results))
    header = (f"WDBC hospital federation (3 hospitals, ~3 % unlabelled malignant rows in training, held-out "
              f"90 benign + 40 malignant), ROC-AUC on the pooled held-out rows, mean ± std (ddof 1) over "
              f"{len(seeds)} random splits (seeds {seeds[0]}-{seeds[-1]}). Produced by "
              f"`python benchmarks/wdbc_table.py`.\n\n")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(header + table)
    results.to_csv(args.output.with_suffix(".csv"), index=False, float_format="%.4f")
    print(header + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
