"""Benchmark: ``fedad run`` on an idle machine and beside busy processes, with 1 and with more threads.

Usage::

    python benchmarks/bench_threads.py               # fedad run (30 rounds), 1 and 2 threads, idle and busy
    python benchmarks/bench_threads.py --rounds 5    # shorter

"Busy" means ``--busy`` (default 2) pure-Python loops spinning beside the run, one per core on a
2-core machine: what a laptop running a build or a browser looks like to PyTorch. Intra-op threads
that wait for a core held by another process make every small matrix product slower, so the
default of one thread should barely notice the load while more threads suffer. Prints a table of
wall times; writes nothing outside a temporary folder.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import tempfile
import time


def _spin(stop: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    while not stop.is_set():
        sum(range(10_000))


def timed_run(rounds: int, threads: int, folder: str) -> float:
    env = {**os.environ, "FEDAD_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(["fedad", "run", "--quiet", "--rounds", str(rounds), "--output-dir", folder], check=True,
                   env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="rounds of fedad run (its default: 30)")
    parser.add_argument("--busy", type=int, default=2, help="busy loops beside the run in the busy case")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to compare")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedad-threads-") as tmp:
        for busy in (0, args.busy):
            stop = multiprocessing.Event()
            spinners = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(busy)]
            for p in spinners:
                p.start()
            try:
                for threads in args.threads:
                    load = os.getloadavg()[0]
                    seconds = timed_run(args.rounds, threads, f"{tmp}/run-{busy}-{threads}")
                    rows.append((busy, threads, seconds, load))
            finally:
                stop.set()
                for p in spinners:
                    p.join()
    print(f"fedad run --rounds {args.rounds}, {os.cpu_count()} CPUs")
    print(f"{'busy loops beside it':>20} {'threads':>8} {'wall s':>8} {'load before':>12}")
    for busy, threads, seconds, load in rows:
        print(f"{busy:>20} {threads:>8} {seconds:>8.1f} {load:>12.1f}")


if __name__ == "__main__":
    main()
