"""Benchmark: a tutorial-style FedAvg loop against ``run_federated`` with the loop and vectorized engines.

Usage::

    python benchmarks/bench_engines.py            # full run (a few minutes on 2 CPU cores)
    python benchmarks/bench_engines.py --quick    # smoke run

1. Reference configuration (10 clients with 400-600 rows, 30 features, 30 rounds, 5 local epochs,
   batch 64, Adam 1e-3, every client evaluated every round), all on the same generated data in this
   process: the baseline below, ``engine="loop"`` and ``engine="vectorized"``.
2. Scale: 10, 100 and 1,000 clients with 500 rows each (350 for training), 10 rounds, 1 local epoch;
   the baseline and the loop engine up to 100 clients. Each case runs in a fresh subprocess (this
   script re-invoked with ``--case``) so its peak RSS is its own.

Each case is timed after a one-round warm-up, data generation excluded. "wall" and "CPU" cover
training and the per-round evaluation; "train" only local training (for ``run_federated``, the
time spent in the engine, measured by wrapping it). F1 is the mean over clients after the last
round. On a machine shared with other jobs, compare CPU seconds: wall time then includes waiting.
Prints a table and writes ``figures/benchmark.png`` (time per round against the number of clients).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from unittest.mock import patch

import numpy as np
import torch
from torch import nn

from fedad_tutorial import federated
from fedad_tutorial.data import Split, make_cloud_federation, train_test_split
from fedad_tutorial.federated import FederatedConfig, run_federated
from fedad_tutorial.threads import ENV_VAR as THREADS_ENV
from fedad_tutorial.threads import set_threads

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURE = Path(__file__).resolve().parents[1] / "figures" / "benchmark.png"
# 1 thread: as fast as 2 for the reference configuration (small matmuls) and immune to a busy second
# core (with another process on it, 2 OpenMP threads made the vectorized engine ~10x slower). On an
# idle machine, 2 threads train 1,000 clients ~1.7x faster (--threads 2).
THREADS = 1


# --- the baseline: a plain per-client loop, as common FedAvg tutorials write it ----------------------

class TutorialAutoencoder(nn.Module):
    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(input_dim, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                                     nn.Linear(32, 10))
        self.decoder = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 64), nn.ReLU(),
                                     nn.Linear(64, input_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def baseline_fedavg(splits: list[Split], rounds: int, epochs: int, batch_size: int, lr: float,
                    seed: int = 42) -> tuple[float, float]:
    """FedAvg client by client, every client evaluated each round: (final mean F1, seconds training)."""
    from sklearn.metrics import f1_score, roc_auc_score  # imported here: bench_cli times the phases of
    from torch.utils.data import DataLoader, TensorDataset  # fedad simulate with this module loaded

    torch.manual_seed(seed)
    pooled = np.vstack([s.train for s in splits])
    mean, std = pooled.mean(axis=0), pooled.std(axis=0) + 1e-8
    train = [torch.tensor((s.train - mean) / std, dtype=torch.float32) for s in splits]
    test = [torch.tensor((s.test - mean) / std, dtype=torch.float32) for s in splits]
    global_model = TutorialAutoencoder(pooled.shape[1])
    criterion = nn.MSELoss()
    f1s: list[float] = []
    train_seconds = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        states, counts = [], []
        for rows in train:
            model = copy.deepcopy(global_model)
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
            loader = DataLoader(TensorDataset(rows), batch_size=batch_size, shuffle=True)
            model.train()
            for _ in range(epochs):
                for (batch,) in loader:
                    optimizer.zero_grad()
                    loss = criterion(model(batch), batch)
                    loss.backward()
                    optimizer.step()
            states.append(model.state_dict())
            counts.append(len(rows))
        train_seconds += time.perf_counter() - start
        weights = np.array(counts, dtype=np.float64) / sum(counts)
        averaged = {k: sum(w * s[k] for w, s in zip(weights, states, strict=True)) for k in states[0]}
        global_model.load_state_dict(averaged)
        global_model.eval()
        with torch.no_grad():
            train_err = [((global_model(x) - x) ** 2).mean(dim=1).numpy() for x in train]
            test_err = [((global_model(x) - x) ** 2).mean(dim=1).numpy() for x in test]
        threshold = np.percentile(np.concatenate(train_err), 95.0)
        f1s = []
        for split, err in zip(splits, test_err, strict=True):
            f1s.append(f1_score(split.test_labels, err > threshold, zero_division=0.0))
            if 0 < split.test_labels.sum() < len(split.test_labels):
                roc_auc_score(split.test_labels, err)
    return float(np.mean(f1s)), train_seconds


# --- cases --------------------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    runner: str  # "baseline", "loop" or "vectorized"
    clients: int
    rounds: int
    epochs: int
    rows: int | tuple[int, int]


def make_splits(case: Case) -> list[Split]:
    nodes = make_cloud_federation(num_nodes=case.clients, samples_per_node=case.rows, num_features=30, seed=0)
    return [train_test_split(node, 0.3, seed=0) for node in nodes]


@contextmanager
def engine_timer() -> Iterator[list[float]]:
    """Within the block, ``run_federated``'s engines add the seconds they spend (local training) to the
    one-element list this yields."""
    get_engine, seconds = federated.get_engine, [0.0]

    def timed_get(name: str):
        engine = get_engine(name)

        def timed(*args):
            start = time.perf_counter()
            updates = engine(*args)
            seconds[0] += time.perf_counter() - start
            return updates

        return timed

    with patch.object(federated, "get_engine", timed_get):
        yield seconds


def run_federated_timed(splits: list[Split], config: FederatedConfig) -> tuple[float, float]:
    """``run_federated``: (final mean F1, seconds spent in the engine, i.e. local training)."""
    with engine_timer() as seconds:
        f1 = run_federated(splits, config, progress=False).summary()["f1"]
    return f1, seconds[0]


def run_case(case: Case, splits: list[Split]) -> dict:
    """Time one case (after a one-round warm-up) and return its measurements."""
    if case.runner == "baseline":
        baseline_fedavg(splits[:2], 1, 1, 64, 1e-3)
        start, cpu_start = time.perf_counter(), time.process_time()
        f1, train = baseline_fedavg(splits, case.rounds, case.epochs, 64, 1e-3)
    else:
        run_federated(splits[:2], FederatedConfig(rounds=1, local_epochs=1, engine=case.runner), progress=False)
        # plain steps and a global threshold: the same work as the hand-written baseline it is timed against
        config = FederatedConfig(rounds=case.rounds, local_epochs=case.epochs, batch_size=64, lr=1e-3,
                                 engine=case.runner, threshold="global", trim=0.0)
        start, cpu_start = time.perf_counter(), time.process_time()
        f1, train = run_federated_timed(splits, config)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"name": case.name, "runner": case.runner, "clients": case.clients, "rounds": case.rounds,
            "wall": wall, "cpu": cpu, "per_round": wall / case.rounds, "train": train, "f1": f1,
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_in_subprocess(case: Case) -> dict:
    spec = json.dumps(case.__dict__)
    command = [sys.executable, __file__, "--threads", str(torch.get_num_threads()), "--case", spec]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_table(results: list[dict]) -> None:
    """wall: training + evaluation; CPU: this process's CPU time for the same (all threads; close to wall
    with one thread on an idle machine, lower when other processes compete); train: local training only."""
    baselines = {(r["name"], r["clients"]): r for r in results if r["runner"] == "baseline"}
    header = (f"{'case':<10} {'runner':<11} {'clients':>7} {'rounds':>6} {'wall s':>8} {'CPU s':>7} {'s/round':>8} "
              f"{'train s/rnd':>11} {'vs base':>8} {'train vs base':>13} {'F1':>6} {'peak RSS MiB':>13}")
    print(header)
    print("-" * len(header))
    for r in results:
        base = baselines.get((r["name"], r["clients"]))
        ratio = f"{base['wall'] / r['wall']:.1f}x" if base else "-"
        train_ratio = f"{base['train'] / r['train']:.1f}x" if base else "-"
        print(f"{r['name']:<10} {r['runner']:<11} {r['clients']:>7} {r['rounds']:>6} {r['wall']:>8.2f} "
              f"{r['cpu']:>7.2f} {r['per_round']:>8.3f} {r['train'] / r['rounds']:>11.3f} {ratio:>8} {train_ratio:>13} "
              f"{r['f1']:>6.3f} {r['rss_mib']:>13.0f}")


def plot(results: list[dict]) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for (runner, marker), color in zip((("baseline", "s"), ("loop", "o"), ("vectorized", "^")),
                                       ("tab:blue", "tab:orange", "tab:green"), strict=True):
        rows = sorted((r for r in results if r["runner"] == runner and r["name"] == "scale"),
                      key=lambda r: r["clients"])
        clients = [r["clients"] for r in rows]
        ax.plot(clients, [r["per_round"] for r in rows], marker=marker, color=color,
                label=f"{runner}: train + evaluate")
        ax.plot(clients, [r["train"] / r["rounds"] for r in rows], marker=marker, color=color, linestyle="--",
                label=f"{runner}: local training only")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("clients per round")
    ax.set_ylabel("seconds per round")
    ax.set_title("FedAvg, 500 rows per client, 1 local epoch")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (does not write the figure)")
    parser.add_argument("--threads", type=int, default=THREADS, help=f"torch threads (default {THREADS})")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args()
    os.environ[THREADS_ENV] = str(args.threads)  # run_federated sets PyTorch's threads from it, as fedad does
    set_threads()
    if args.case:
        case = Case(**json.loads(args.case))
        case.rows = tuple(case.rows) if isinstance(case.rows, list) else case.rows
        print(json.dumps(run_case(case, make_splits(case))))
        return

    rounds, epochs = (3, 2) if args.quick else (30, 5)
    reference = Case("reference", "", 10, rounds, epochs, (400, 600))
    splits = make_splits(reference)
    results = [run_case(Case(**{**reference.__dict__, "runner": runner}), splits)
               for runner in ("baseline", "loop", "vectorized")]

    sizes = (10, 50) if args.quick else (10, 100, 1000)
    scale_rounds = 2 if args.quick else 10
    for clients in sizes:
        runners = ("baseline", "loop", "vectorized") if clients <= 100 else ("vectorized",)
        for runner in runners:
            results.append(run_in_subprocess(Case("scale", runner, clients, scale_rounds, 1, 500)))
            print(f"done: scale {runner} {clients} clients", file=sys.stderr)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the end; peak RSS of the reference rows is this process's (cumulative), "
          "scale rows each ran in their own process")
    print_table(results)
    fig = plot(results)
    if args.quick:
        print(f"quick run: {FIGURE} left as it was")
    else:
        FIGURE.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(FIGURE, dpi=120)
        print(f"wrote {FIGURE}")


if __name__ == "__main__":
    main()
