"""DP-FedAvg on the default federation: epsilon and final ROC-AUC for three noise levels, and without DP.

Usage::

    python benchmarks/dp_table.py     # five trainings of `fedad run`'s configuration, one thread

Each row is a ``fedad run`` command line (10 generated nodes, seed 42, 30 % of each node held out, 30 rounds
x 5 local epochs, every client every round): its flags are parsed by the command line's own parser, and
trained and reported as ``fedad run`` trains and reports them (``run_federated``, ``privacy_summary``).
Without DP; with ``--dp-clip`` alone (noise multiplier 0: the cost of clipping and the unweighted mean); and
with noise multipliers 0.5, 1 and 2. ``epsilon`` is the client-level guarantee at ``delta`` 1e-5 (the
default of ``--dp-delta``) after the 30 rounds, from Opacus's RDP accountant, with sample rate 1 (all ten
clients train every round: no amplification by sampling).

The clip ``C`` follows the usual advice, the median norm of the clients' updates in the first round (measured
here and printed in the table's header), rounded: the largest updates are clipped, the typical update keeps
its length. A smaller ``C`` lowers the noise (its std is ``Z * C / n``) but shortens every update.

Writes ``benchmarks/results/dp.md`` (the table the README's threat model cites) and ``dp.csv`` (same numbers,
more decimals), and prints the table.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

from fedad_tutorial.chapters.robust import update_norm
from fedad_tutorial.cli import build_parser, config_from_args
from fedad_tutorial.data import hold_out, make_cloud_federation
from fedad_tutorial.federated import run_federated
from fedad_tutorial.privacy import privacy_summary
from fedad_tutorial.threads import set_threads

RESULTS = Path(__file__).resolve().parent / "results"
#: ``--dp-clip``: about the median first-round update norm (the header prints the measured median).
CLIP = 2.0
NOISE = (0.5, 1.0, 2.0)


def first_round_norms(splits, config) -> list[float]:
    """The norms of the clients' first-round updates under ``config`` (plain FedAvg's first round)."""
    norms: list[float] = []

    def record(client, state, global_state, rnd):
        norms.append(update_norm(state, global_state))
        return state

    run_federated(splits, replace(config, rounds=1), update_hook=record, progress=False)
    return norms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=RESULTS / "dp.md")
    args = parser.parse_args(argv)
    set_threads(1)
    commands = [[], ["--dp-clip", f"{CLIP:g}"]] + [["--dp-clip", f"{CLIP:g}", "--dp-noise-multiplier", f"{z:g}"]
                                                   for z in NOISE]
    base = build_parser().parse_args(["run"])
    nodes = make_cloud_federation(num_nodes=base.num_nodes, seed=base.seed)
    splits = hold_out(nodes, base.test_fraction, base.seed)  # as `fedad run` splits them
    norms = first_round_norms(splits, config_from_args(base))
    rows = []
    for flags in commands:
        cli = build_parser().parse_args(["run", *flags])
        config = config_from_args(cli)
        start = time.monotonic()
        summary = run_federated(splits, config, feature_names=nodes[0].feature_names, progress=False).summary()
        privacy = privacy_summary(config, len(splits))
        rows.append({"command": " ".join(["fedad run", *flags]), "clip": config.dp_clip,
                     "noise_multiplier": config.dp_noise_multiplier if config.private else math.nan,
                     "noise_std": privacy["noise_std"] if privacy else math.nan,
                     "epsilon": privacy["epsilon"] if privacy else math.inf, "delta": config.dp_delta,
                     "roc_auc": summary["roc_auc"], "f1": summary["f1"], "seconds": time.monotonic() - start})
        print(f"{rows[-1]['command']}: ROC-AUC {summary['roc_auc']:.3f}, epsilon {rows[-1]['epsilon']:.3g}",
              flush=True)
    total = sum(r["seconds"] for r in rows)
    header = (f"# DP-FedAvg on the default federation: epsilon and ROC-AUC\n\nProduced by `python "
              f"benchmarks/dp_table.py` in {total:.0f} s of training ({platform.machine()}, "
              f"{platform.python_version()}, one thread). `fedad run`'s federation and configuration (10 nodes, "
              f"seed 42, 30 % of each node held out, 30 rounds x 5 local epochs, all 10 clients every round, so "
              f"sample rate 1), with the flags of each row. The clients' first-round update norms: median "
              f"{statistics.median(norms):.2f} (from {min(norms):.2f} to {max(norms):.2f}); the clip is "
              f"{CLIP:g}. Epsilon: client-level, at delta {rows[0]['delta']:g}, after the 30 rounds (Opacus RDP "
              f"accountant). ROC-AUC and F1: means over the clients' held-out rows, final round.\n\n")
    lines = ["| command | noise std per weight | epsilon | ROC-AUC | F1 |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        std = "-" if math.isnan(r["noise_std"]) else f"{r['noise_std']:.3g}"
        eps = ("- (FedAvg)" if math.isnan(r["noise_multiplier"]) else "∞ (no noise: no guarantee)"
               if math.isinf(r["epsilon"]) else f"{r['epsilon']:.1f}")
        lines.append(f"| `{r['command']}` | {std} | {eps} | {r['roc_auc']:.3f} | {r['f1']:.3f} |")
    table = "\n".join(lines) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(header + table)
    with open(args.output.with_suffix(".csv"), "w") as f:
        columns = list(rows[0])
        f.write(",".join(columns) + "\n")
        for r in rows:
            f.write(",".join(r[c] if isinstance(r[c], str) else f"{r[c]:.6g}" for c in columns) + "\n")
    print(header + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
