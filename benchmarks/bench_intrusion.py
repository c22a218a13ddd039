"""The whole HTTP connection log (567,498 rows) through the command line, as a user would run it.

    python benchmarks/bench_intrusion.py [--nodes 8] [--rounds 5] [--keep DIR]

Three steps, each a separate ``fedad`` process, timed (wall clock) with its peak resident memory
(``ru_maxrss`` of that process, from ``os.wait4``):

1. ``fedad split 16_http.npz --nodes N --by cluster``: eight web servers, non-IID by traffic profile;
2. ``fedad simulate`` over the node CSVs (it keeps 30 % of every node back for its per-round table);
3. ``fedad score`` on every node CSV (read and scored in chunks of rows), all rows including the
   training rows: this measures scale, not detection (chapter 15 measures detection on held-out rows).

The published values are already ``log(count + 0.1)``, so the CSVs need no transform. The
autoencoder has a 2-dimensional code (three features) and large batches for a long log.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedad_tutorial.chapters.intrusion import DATA_DIR, FILES


def run(argv: list[str]) -> tuple[float, float, str]:
    """Run ``fedad ARGV`` in a new process: (seconds, peak RSS in MB, its last output line)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "fedad_tutorial.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = [line for line in output.splitlines() if line.strip()]
    if proc.returncode != 0:
        raise SystemExit(f"fedad {' '.join(argv)} exited with {proc.returncode}: {lines[-1] if lines else ''}")
    return seconds, usage.ru_maxrss / 1024.0, lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8, help="web servers")
    parser.add_argument("--rounds", type=int, default=5, help="federated rounds")
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the CSVs and the run here and keep them (default: a temporary folder)")
    args = parser.parse_args()
    if args.keep is not None:
        bench(args, args.keep)
        return
    with tempfile.TemporaryDirectory(prefix="bench_intrusion_") as tmp:
        bench(args, Path(tmp))


def bench(args: argparse.Namespace, root: Path) -> None:
    """Split, simulate and score under ``root``, printing one line per step."""
    data, run_dir = root / "http", root / "run"
    steps = [("split", ["split", str(DATA_DIR / FILES["http"]), "--nodes", str(args.nodes), "--output", str(data),
                        "--by", "cluster", "--seed", "0"]),
             ("simulate", ["simulate", "--data-dir", str(data), "--output-dir", str(run_dir), "--rounds",
                           str(args.rounds), "--local-epochs", "1", "--batch-size", "1024", "--latent-dim", "2",
                           "--quiet"])]
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; files in {root}")
    print(f"{'step':<22} {'seconds':>8} {'peak RSS MB':>12}  output")
    total = 0.0
    for name, argv in steps:
        seconds, rss, last = run(argv)
        total += seconds
        print(f"{name:<22} {seconds:8.1f} {rss:12.0f}  {last}")
    for k in range(1, args.nodes + 1):
        seconds, rss, last = run(["score", "--model", str(run_dir / "model.pt"), "--data", str(data / f"node_{k}.csv"),
                                  "--output", str(root / f"scores_node_{k}.csv")])
        total += seconds
        print(f"{'score node_' + str(k):<22} {seconds:8.1f} {rss:12.0f}  {last}")
    print(f"{'total':<22} {total:8.1f}; load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
