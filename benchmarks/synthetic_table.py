"""The synthetic-federation table of docs/results.md: federated vs centralized vs local-only, held-out rows.

Usage::

    python benchmarks/synthetic_table.py     # eight trainings at the reference budget, one thread

Trains on ``fedad run``'s federation (10 generated nodes, seed 42, 30 % of each node held out, the command
line's splits) with the reference budget (30 rounds x 5 local epochs), the vectorized engine and local
thresholds: plain training (``trim=0``, as the notebooks up to chapter 12 train) in the three modes, ``fedad
run``'s configuration (``defaults.RECOMMENDED``, trimmed) federated and centralized, the plain federated run
with seed 7 instead of 42, and the original tutorial's isotropic data (plain, trimmed, and the norm of a row).
Every figure is the mean over the clients of the final round's metrics on held-out rows.

Writes ``benchmarks/results/synthetic.md`` (the table docs/results.md quotes) and ``synthetic.csv`` (same
numbers, four decimals), and prints the table.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from fedad_tutorial.data import hold_out, isotropic_blobs, make_cloud_federation
from fedad_tutorial.defaults import RECOMMENDED
from fedad_tutorial.federated import run_federated
from fedad_tutorial.threads import set_threads

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("roc_auc", "f1", "precision", "recall")
#: The reference budget with plain training; every field the table depends on is spelled out, so that a
#: change of ``FederatedConfig``'s defaults cannot change what a row means.
PLAIN = replace(RECOMMENDED, rounds=30, local_epochs=5, trim=0.0, threshold="local", engine="vectorized")
TRIMMED = replace(RECOMMENDED, rounds=30)


def rows() -> list[dict]:
    """One dict per table row: its label and the final round's mean metrics."""
    splits = hold_out(make_cloud_federation(seed=42), 0.3, 42)
    table = []

    def add(label: str, splits_, config, mode: str = "federated") -> None:
        summary = run_federated(splits_, config, mode=mode, progress=False).summary()
        table.append({"training": label, **{m: float(summary[m]) for m in METRICS}})

    add("federated (FedAvg)", splits, PLAIN)
    add("centralized (pooled rows, same passes per row)", splits, PLAIN, "centralized")
    add("local-only (each client alone)", splits, PLAIN, "local")
    add("`fedad run` (trimmed, `--trim 0.1`), federated", splits, TRIMMED)
    add("`fedad run`'s configuration, centralized", splits, TRIMMED, "centralized")
    add("federated, federation and split seed 7", hold_out(make_cloud_federation(seed=7), 0.3, 7),
        replace(PLAIN, seed=7))
    blobs = hold_out(isotropic_blobs(seed=42), 0.3, 42)
    add("federated AE on `isotropic_blobs` (the original tutorial's data)", blobs, PLAIN)
    add("same, trimmed (`--trim 0.1`)", blobs, TRIMMED)
    norm = float(np.mean([roc_auc_score(s.test_labels, np.linalg.norm(s.test, axis=1)) for s in blobs]))
    table.append({"training": "norm of the row on `isotropic_blobs` (no training)", "roc_auc": norm,
                  **{m: float("nan") for m in METRICS[1:]}})
    return table


def markdown(table: list[dict], seconds: float) -> str:
    def cell(v: float) -> str:
        return "" if np.isnan(v) else f"{v:.3f}"

    lines = [
        "# Synthetic federation: federated vs centralized vs local-only",
        "",
        f"Produced by `python benchmarks/synthetic_table.py` in {seconds:.0f} s ({platform.machine()}, "
        f"{platform.python_version()}). Default federation (10 nodes, seed 42, 30 % of each node held out), "
        "30 rounds x 5 local epochs, vectorized engine, local thresholds; plain training unless the row "
        "says trimmed. Means over the clients' held-out rows, final round.",
        "",
        "| training | ROC-AUC | F1 | precision | recall |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {r['training']} | " + " | ".join(cell(r[m]) for m in METRICS) + " |" for r in table]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=RESULTS / "synthetic.md",
                        help="where to write the table (and the .csv beside it)")
    args = parser.parse_args(argv)
    set_threads()
    start = time.perf_counter()
    table = rows()
    text = markdown(table, time.perf_counter() - start)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    with args.output.with_suffix(".csv").open("w") as f:
        f.write("training," + ",".join(METRICS) + "\n")
        for r in table:
            f.write('"' + r["training"] + '",' + ",".join(f"{r[m]:.4f}" for m in METRICS) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
