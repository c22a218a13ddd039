"""Shared fixtures and suite wiring.

- The default federation is trained once per test session (it is the slow part).
- Notebooks executed by nbval are marked ``slow``: ``pytest -m "not slow"`` is the fast tier.
- The suite must leave the checkout as it found it: when the session ends, ``git status`` is compared
  with the state recorded when it started, and any change fails the run (``test_clean_tree.py`` tests
  the comparison itself).
- ``pytest`` runs on ``-n auto`` xdist workers (one per core, at most four), one notebook or test module
  per worker at a time (``--dist loadscope``); ``-n 0`` runs in one process.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from synthetic_table import PLAIN as REFERENCE

from fedad_tutorial.data import hold_out, make_cloud_federation
from fedad_tutorial.federated import run_federated
from fedad_tutorial.threads import set_threads

set_threads()  # one intra-op thread (or $FEDAD_THREADS): fast and steady on a busy machine


def generate_and_simulate(root: Path, *, rows: int, features: int, seed: int, rounds: int) -> tuple[Path, Path]:
    """``fedad generate-data`` (3 nodes) then ``fedad simulate`` (1 local epoch) under ``root``: (data, run)."""
    from fedad_tutorial.cli import main

    data, run = root / "data", root / "run"
    assert main(["generate-data", "--num-nodes", "3", "--samples-per-node", str(rows), "--num-features",
                 str(features), "--output-dir", str(data), "--seed", str(seed)]) == 0
    assert main(["simulate", "--data-dir", str(data), "--output-dir", str(run), "--rounds", str(rounds),
                 "--local-epochs", "1", "--quiet"]) == 0
    return data, run


def default_splits(seed: int = 42):
    """The `fedad run` federation: 10 generated nodes, 30% of each held out (same seeds as the CLI)."""
    return hold_out(make_cloud_federation(seed=seed), seed=seed)

#: The plain training many tests' numbers were measured with: a global threshold, the loop engine and no
#: trimming (``FederatedConfig()`` is the command line's configuration: local, vectorized, trimmed).
#: Tests that depend on it say so: ``FederatedConfig(rounds=2, **PLAIN)``.
PLAIN = {"threshold": "global", "engine": "loop", "trim": 0.0}


@pytest.fixture(scope="session")
def reference_runs():
    """Federated, centralized and local-only runs of the reference configuration (plain training: the
    configuration of ``benchmarks/synthetic_table.py``'s plain rows, which docs/results.md quotes), same held-out rows.

    Trained by the vectorized engine (the command line's): the same updates as the loop engine up to float
    rounding (``tests/test_vectorized.py`` checks that), at a quarter of the time."""
    splits = default_splits()
    return {mode: run_federated(splits, REFERENCE, mode=mode, progress=False)
            for mode in ("federated", "centralized", "local")}


ROOT = Path(__file__).resolve().parents[1]
#: At most this many xdist workers for ``-n auto``: each trains models and runs notebook kernels.
MAX_WORKERS = 4


def git_state(root: Path = ROOT) -> dict[str, str] | None:
    """``git status --porcelain`` of ``root`` with a hash of each listed file (None outside a checkout).

    Untracked folders are listed as one entry and not hashed (``--untracked-files=normal``): a stray
    virtual environment costs one line, not a hash of its forty thousand files."""
    if shutil.which("git") is None or not (root / ".git").exists():
        return None
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=normal"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    state = {}
    for line in out.splitlines():
        path = root / line[3:].split(" -> ")[-1].strip('"')
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        state[line] = digest
    return state


def checkout_changes(before: dict[str, str] | None, after: dict[str, str] | None) -> list[str] | None:
    """The ``git status`` lines that differ between two :func:`git_state` readings (None outside a checkout)."""
    if before is None or after is None:
        return None
    return sorted({line for line, _ in set(after.items()) ^ set(before.items())})


def _controller(config: pytest.Config) -> bool:
    """True in the process that runs the session: pytest itself, or xdist's controller (not a worker)."""
    return not hasattr(config, "workerinput")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker per core, at most :data:`MAX_WORKERS` (each worker runs one PyTorch thread)."""
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def pytest_sessionstart(session: pytest.Session) -> None:
    if _controller(session.config):
        session.config.stash[_BEFORE] = git_state()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow = pytest.mark.slow
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(slow)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The suite must leave the checkout as it found it: checked once every test (on every worker) is done,
    which no single test can be sure of under xdist. A change fails the session."""
    if not _controller(session.config) or _BEFORE not in session.config.stash:
        return
    changed = checkout_changes(session.config.stash[_BEFORE], git_state())
    session.config.stash[_CHANGED] = changed or []
    if changed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    changed = config.stash.get(_CHANGED, [])
    if changed:
        terminalreporter.write_sep("=", "FAILED: the test run changed the checkout (git status --porcelain)", red=True)
        for line in changed:
            terminalreporter.write_line(line)


_BEFORE = pytest.StashKey[dict | None]()
_CHANGED = pytest.StashKey[list[str]]()
