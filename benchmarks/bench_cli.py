"""Benchmark: ``fedad simulate`` end to end against the original tutorial's FedAvg loop, same data, same run.

Usage::

    python benchmarks/bench_cli.py            # reference configuration, 3 repetitions
    python benchmarks/bench_cli.py --quick    # 3 rounds x 2 epochs, 1 repetition (smoke run)

Both sides are timed as whole programs started from the shell, on the same node CSVs (the reference
federation: 10 clients of 400-600 normal rows plus their anomalies, 30 features, written once to a
temporary folder):

- the original tutorial's loop (``bench_engines.baseline_fedavg``: a deep copy of the model and a
  ``DataLoader`` per client per round, every client evaluated every round), in a fresh Python that
  imports PyTorch and reads the CSVs;
- ``fedad simulate --rounds 30`` with every other setting at its default (5 local epochs, batch 64).

The ratio of their wall times is the headline. A breakdown of ``simulate`` (import, load, train,
evaluate, write) comes from one more, instrumented run in a fresh process (``--phases``), doing
exactly what the command does. Prints a table; writes nothing outside its temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def write_reference_csvs(folder: Path) -> None:
    from fedad_tutorial.csvio import write_node_csv
    from fedad_tutorial.data import make_cloud_federation

    for node in make_cloud_federation(num_nodes=10, samples_per_node=(400, 600), num_features=30, seed=0):
        write_node_csv(folder / f"{node.name}.csv", node)


def baseline_program(data_dir: str, rounds: int, epochs: int) -> None:
    """The original tutorial's loop as a program: import, read the CSVs, hold out 30 %, train."""
    import torch

    sys.path.insert(0, str(HERE))
    from bench_engines import baseline_fedavg

    from fedad_tutorial.csvio import find_node_csvs, read_node_csv
    from fedad_tutorial.data import hold_out

    torch.set_num_threads(1)
    splits = hold_out([read_node_csv(p) for p in find_node_csvs(data_dir)], seed=42)
    f1, _ = baseline_fedavg(splits, rounds, epochs, 64, 1e-3)
    print(json.dumps({"f1": f1}))


def simulate_phases(data_dir: str, output_dir: str, rounds: int, epochs: int, started: float) -> None:
    """What ``fedad simulate`` does, with a clock between its phases (printed as JSON)."""
    marks = {"start": started}
    sys.path.insert(0, str(HERE))
    from bench_engines import engine_timer

    from fedad_tutorial import cli, federated
    from fedad_tutorial.runs import write_run

    marks["import"] = time.time()
    args = cli.build_parser().parse_args(["simulate", "--data-dir", data_dir, "--output-dir", output_dir,
                                          "--rounds", str(rounds), "--local-epochs", str(epochs), "--quiet"])
    cli.set_threads(args.threads)
    config = cli.config_from_args(args)
    nodes = cli._read_federation(args.data_dir)
    splits, description = cli._hold_out(nodes, str(args.data_dir), args)
    marks["load"] = time.time()
    with engine_timer() as train_seconds:
        result = federated.run_federated(splits, config, feature_names=nodes[0].feature_names, progress=False,
                                         threads=args.threads)
    marks["train+evaluate"] = time.time()
    write_run(args.output_dir, result, description, figure=args.figure)
    marks["write"] = time.time()
    print(json.dumps({"marks": marks, "train": train_seconds[0], "f1": result.summary()["f1"]}))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(command: list[str], env: dict[str, str]) -> tuple[float, str, float]:
    """Run ``command``: (wall seconds, its stdout, its CPU seconds, user + system)."""
    start, cpu = time.perf_counter(), _children_cpu()
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - start, out.stdout, _children_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds x 2 epochs, once")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each program (median reported)")
    parser.add_argument("--baseline", help=argparse.SUPPRESS)  # internal: run the baseline program on DATA
    parser.add_argument("--phases", nargs=2, help=argparse.SUPPRESS)  # internal: instrumented simulate
    parser.add_argument("--rounds", type=int, default=30, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--started", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        return baseline_program(args.baseline, args.rounds, args.epochs)
    if args.phases:
        return simulate_phases(*args.phases, args.rounds, args.epochs, args.started)

    rounds, epochs, repeat = (3, 2, 1) if args.quick else (30, 5, args.repeat)
    env = {**os.environ, "FEDAD_THREADS": os.environ.get("FEDAD_THREADS", "1")}
    with tempfile.TemporaryDirectory(prefix="fedad-bench-") as tmp:
        data = Path(tmp) / "data"
        write_reference_csvs(data)
        flags = ["--rounds", str(rounds), "--epochs", str(epochs)]
        base, fedad = [], []
        for k in range(repeat):  # interleaved, so a change in machine load hits both sides alike
            seconds, out, cpu = timed_run([sys.executable, __file__, "--baseline", str(data), *flags], env)
            base.append((seconds, json.loads(out.strip().splitlines()[-1])["f1"], cpu))
            seconds, _, cpu = timed_run(["fedad", "simulate", "--data-dir", str(data), "--output-dir",
                                         f"{tmp}/run{k}", "--rounds", str(rounds), "--local-epochs", str(epochs),
                                         "--quiet"], env)
            fedad.append((seconds, cpu))
        summary = json.loads((Path(tmp) / "run0" / "summary.json").read_text())
        started = time.time()
        _, out, _ = timed_run([sys.executable, __file__, "--phases", str(data), f"{tmp}/phases", *flags,
                               "--started", str(started)], env)
        phases = json.loads(out.strip().splitlines()[-1])

    base_wall, base_cpu = statistics.median(s for s, _, _ in base), statistics.median(c for _, _, c in base)
    fedad_wall, fedad_cpu = statistics.median(s for s, _ in fedad), statistics.median(c for _, c in fedad)
    print(f"reference federation: 10 clients, 30 features, {rounds} rounds x {epochs} local epochs, batch 64; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; 1 PyTorch thread on both sides")
    print(f"{'program (median of ' + str(repeat) + ')':<40} {'wall s':>8} {'CPU s':>8} {'F1 (held-out)':>14}")
    print(f"{'original tutorial loop (script)':<40} {base_wall:>8.2f} {base_cpu:>8.2f} {base[0][1]:>14.3f}")
    print(f"{'fedad simulate (command line)':<40} {fedad_wall:>8.2f} {fedad_cpu:>8.2f} "
          f"{summary['final_round_mean']['f1']:>14.3f}")
    print(f"end to end: fedad simulate is {base_wall / fedad_wall:.1f}x faster (wall; CPU seconds: "
          f"{base_cpu / fedad_cpu:.1f}x, the better guide on a busy machine)")
    marks = phases["marks"]
    names = list(marks)
    steps = {b: marks[b] - marks[a] for a, b in zip(names[:-1], names[1:], strict=True)}
    steps = {"start-up and imports": steps["import"], "load CSVs": steps["load"],
             "train (local training)": phases["train"],
             "evaluate (every round, every client)": steps["train+evaluate"] - phases["train"],
             "write the run folder": steps["write"]}
    total = sum(steps.values())
    print(f"\nbreakdown of one instrumented simulate ({total:.2f} s):")
    for name, seconds in steps.items():
        print(f"  {name:<38} {seconds:>6.2f} s  {100 * seconds / total:>4.0f} %")


if __name__ == "__main__":
    main()
