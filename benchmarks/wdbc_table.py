"""The WDBC results table: every detector on the same 5 random hospital splits (mean ± std ROC-AUC).

Usage::

    python benchmarks/wdbc_table.py            # 5 splits (seeds 0-4), about 3-4 minutes on 1 core
    python benchmarks/wdbc_table.py --seeds 2  # a quick look

Writes ``figures/wdbc_results.md`` (the markdown table, shown in notebook 13 and the README) and
``figures/wdbc_results.csv`` (one row per split and method) and prints the table. The methods, the
command-line flow among them, are those of ``benchmarks/comparison.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from comparison import compare, markdown_table, summary_table

from fedad_tutorial.plots import figures_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of random splits (seeds 0..N-1)")
    parser.add_argument("--output", type=Path, default=figures_dir() / "wdbc_results.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    results = compare(seeds)
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
