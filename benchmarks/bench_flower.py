"""Benchmark: ``fedad server`` + 3 ``fedad client`` processes on 127.0.0.1 against ``fedad simulate``.

Usage::

    python benchmarks/bench_flower.py              # 3 clients x 10 rounds (a few minutes on a busy machine)
    python benchmarks/bench_flower.py --rounds 2   # a shorter run

Both runs use the same generated CSVs (3 nodes, 600 rows, 30 features) and the command line's
training defaults. The deployment runs with TLS and node authentication on (test certificates and
keys made here). Reported: the deployment's wall time from starting the server to the last
process exiting; the time until the server prints round 1 (imports, SuperLink and SuperNodes
starting, nodes joining, statistics, and two rounds of training: round 1's evaluation rides on
round 2's messages); ``fedad simulate --engine loop`` wall time on the same CSVs; the
deployment's seconds per round after that, and the per-round overhead (that minus simulate's
seconds per round, start-up included, so the overhead is if anything underestimated); the CPU
seconds all processes of each side used (less sensitive to other jobs than wall times); and
whether the two histories agree (they must: same seeds). The machine's load average is printed
with the numbers; on a machine shared with other jobs, wall times include waiting for a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

CLI = [sys.executable, "-m", "fedad_tutorial.cli"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(CLI + args, stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=3)
    args = parser.parse_args()

    from fedad_tutorial.flower.certs import generate_test_certificates
    from fedad_tutorial.flower.keys import generate_key
    from fedad_tutorial.flower.processes import free_port

    root = Path(tempfile.mkdtemp(prefix="bench-flower-"))
    data = root / "data"
    subprocess.run(CLI + ["generate-data", "--num-nodes", str(args.clients), "--samples-per-node", "600",
                          "--output-dir", str(data)], check=True, capture_output=True)
    certs = generate_test_certificates(root / "certs")
    keys = [generate_key(root / f"k{k}") for k in range(1, args.clients + 1)]
    (root / "authorized_keys").write_text("".join(k.line + "\n" for k in keys))
    port = free_port()
    load_before = os.getloadavg()
    cpu_before = _children_cpu()

    start = time.monotonic()
    server = _run(["server", "--rounds", str(args.rounds), "--min-clients", str(args.clients),
                   "--address", f"127.0.0.1:{port}", "--output-dir", str(root / "flower"),
                   "--certificates", str(certs), "--authorized-keys", str(root / "authorized_keys")],
                  root / "server.log")
    clients = [_run(["client", "--node-id", str(k), "--data-path", str(data / f"node_{k}.csv"),
                     "--server-address", f"127.0.0.1:{port}", "--root-certificates", str(certs / "ca.crt"),
                     "--auth-key", str(root / f"k{k}")], root / f"client{k}.log")
               for k in range(1, args.clients + 1)]
    first_round = None
    while server.poll() is None:  # the first per-round line marks the end of the start-up
        if first_round is None and any(line.split()[:1] == ["1"] for line in
                                       (root / "server.log").read_text().splitlines()):
            first_round = time.monotonic() - start
        time.sleep(0.1)
    server_seconds = time.monotonic() - start
    codes = [server.returncode] + [c.wait(timeout=120) for c in clients]
    flower_seconds = time.monotonic() - start
    if any(codes):
        raise SystemExit(f"exit codes {codes}; logs in {root}")

    flower_cpu = _children_cpu() - cpu_before  # every process, SuperLink and SuperNodes included (all waited for)
    start = time.monotonic()
    subprocess.run(CLI + ["simulate", "--rounds", str(args.rounds), "--data-dir", str(data), "--engine", "loop",
                          "--output-dir", str(root / "simulate"), "--quiet"], check=True, capture_output=True)
    simulate_seconds = time.monotonic() - start
    simulate_cpu = _children_cpu() - cpu_before - flower_cpu

    flower = pd.read_csv(root / "flower" / "history.csv")
    simulate = pd.read_csv(root / "simulate" / "history.csv")
    cols = ["loss", "threshold", "f1", "roc_auc"]
    same = flower[["round", "client"]].equals(simulate[["round", "client"]]) and np.allclose(
        flower[cols].to_numpy(), simulate[cols].to_numpy(), rtol=1e-5, equal_nan=True)
    per_round = (server_seconds - (first_round or 0.0)) / max(args.rounds - 1, 1)
    print(json.dumps({
        "clients": args.clients, "rounds": args.rounds, "tls_and_node_authentication": True,
        "flower_seconds_end_to_end": round(flower_seconds, 1),
        "flower_seconds_until_round_1_done": round(first_round or float("nan"), 1),
        "flower_seconds_per_round_after_round_1": round(per_round, 2),
        "simulate_seconds_whole_command": round(simulate_seconds, 1),
        "overhead_seconds_per_round": round(per_round - simulate_seconds / args.rounds, 2),
        "flower_cpu_seconds": round(flower_cpu, 1),
        "simulate_cpu_seconds": round(simulate_cpu, 1),
        "history_equals_simulate": bool(same),
        "load_average_before_after": [round(v, 2) for v in (*load_before, *os.getloadavg())],
        "logs": str(root),
    }, indent=1))


if __name__ == "__main__":
    main()
