"""The command line's start-up and flags: lean imports, threads, flags generated from the configuration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import fields

import pytest

from fedad_tutorial.cli import _dashes, build_parser, main
from fedad_tutorial.config import PARAMS, FederatedConfig

#: Runs ``fedad ARGV`` in a fresh interpreter; prints its exit code, heavy modules imported and torch's threads.
_PROBE = """
import json, sys
from fedad_tutorial.cli import main
rc = main(sys.argv[1:])
heavy = ['torch', 'pandas', 'scipy', 'matplotlib', 'sklearn', 'flwr']
threads = sys.modules['torch'].get_num_threads() if 'torch' in sys.modules else None
print(json.dumps({'rc': rc, 'imported': [m for m in heavy if m in sys.modules], 'threads': threads}))
"""


def _fedad(argv: list[str], **env: str) -> tuple[dict, str]:
    """``fedad ARGV`` in a fresh interpreter with ``env`` added: (what the probe printed, stderr)."""
    base = {k: v for k, v in os.environ.items() if k != "FEDAD_THREADS"}
    out = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=300,
                         env={**base, **env})
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def _imports_after(argv: list[str]) -> dict:
    result, _ = _fedad(argv)
    return {"rc": result["rc"], "imported": result["imported"]}


def test_help_and_flag_errors_do_not_import_torch():
    assert _imports_after(["--help"]) == {"rc": 0, "imported": []}
    assert _imports_after(["simulate", "--help"]) == {"rc": 0, "imported": []}
    assert _imports_after(["simulate", "--rounds", "0"]) == {"rc": 2, "imported": []}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("startup")
    assert main(["generate-data", "--num-nodes", "2", "--samples-per-node", "200", "--num-features", "6",
                 "--output-dir", str(root / "data")]) == 0
    return root


def test_score_and_simulate_import_only_what_they_use(small_run):
    root = small_run
    out = _imports_after(["simulate", "--data-dir", str(root / "data"), "--rounds", "1", "--local-epochs", "1",
                          "--output-dir", str(root / "run"), "--quiet", "--no-figure"])
    assert out["rc"] == 0
    # the history is written without pandas; no figure (no Matplotlib) with --no-figure; no scipy, scikit-learn, Flower
    assert set(out["imported"]) == {"torch"}
    out = _imports_after(["score", "--model", str(root / "run" / "model.pt"), "--data",
                          str(root / "data" / "node_1.csv"), "--output", str(root / "scores.csv")])
    assert out == {"rc": 0, "imported": ["torch"]}


@pytest.mark.slow
def test_threads_default_to_one_and_follow_the_flag_and_the_environment(small_run):
    root = small_run
    argv = ["simulate", "--data-dir", str(root / "data"), "--rounds", "1", "--local-epochs", "1", "--output-dir",
            str(root / "threads"), "--quiet"]
    assert _fedad(argv)[0]["threads"] == 1
    assert _fedad(argv + ["--threads", "2"])[0]["threads"] == 2
    assert _fedad(argv, FEDAD_THREADS="2")[0]["threads"] == 2
    result, err = _fedad(argv, FEDAD_THREADS="many")
    assert result["rc"] == 2 and err.count("\n") == 1 and "FEDAD_THREADS='many'" in err


def test_training_flags_are_exactly_the_configurations_command_line_fields():
    parser = build_parser()
    simulate = parser._subparsers._group_actions[0].choices["simulate"]
    dests = {a.dest for a in simulate._actions} - {"help", "data_dir", "output_dir", "test_fraction", "threads",
                                                  "quiet", "figure"}
    assert dests == {name for name, param in PARAMS.items() if param.cli}
    # every field is either on the command line or deliberately kept off it
    assert set(PARAMS) == {f.name for f in fields(FederatedConfig)}


@pytest.mark.parametrize("argv, message", [
    (["simulate", "--seed", "-1"], "argument --seed: must be in [0, 4294967295], got -1"),
    (["simulate", "--seed", str(2**70)], "argument --seed: must be in [0, 4294967295]"),
    (["generate-data", "--seed", "-1"], "argument --seed: must be in [0, 4294967295], got -1"),
    (["simulate", "--lr", "inf"], "argument --lr: must be in (0, 1000000], got inf"),
    (["simulate", "--lr", "abc"], "argument --lr: expected a number"),
    (["simulate", "--local-epochs", "2.5"], "argument --local-epochs: expected a whole number"),
    (["simulate", "--threads", "0"], "argument --threads: must be in [1, 1024], got 0"),
    (["simulate", "--no-such-flag"], "fedad: error: unrecognized arguments: --no-such-flag"),
])
def test_bad_flags_are_one_line_with_one_program_name(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "fedad fedad" not in err


def test_underscore_spellings_are_accepted_for_every_flag():
    assert _dashes(["run", "--num_nodes", "3", "--local_epochs=2", "--", "--a_b"]) == [
        "run", "--num-nodes", "3", "--local-epochs=2", "--", "--a_b"]
    args = build_parser().parse_args(_dashes(["simulate", "--local_epochs", "2", "--data_dir", "d",
                                              "--threshold_percentile", "90"]))
    assert (args.local_epochs, str(args.data_dir), args.threshold_percentile) == (2, "d", 90.0)


def test_help_shows_real_defaults_only(capsys):
    for command in ("simulate", "score", "client", "generate-data"):
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "(default: None)" not in out and "(default: False)" not in out
    main(["simulate", "--help"])
    out = capsys.readouterr().out
    assert "(in [1, 10000]; default: 5)" in out and "--local-epochs" in out


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_stops_a_run_like_ctrl_c_and_leaves_nothing(tmp_path, sig):
    """SIGINT too, even for a command started with SIGINT ignored (as a script's background job is)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fedad_tutorial.cli", "run", "--rounds", "200",
                             "--output-dir", str(tmp_path / "run")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ignore_sigint if sig == signal.SIGINT else None)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until training has started (the table header is printed)
        line = proc.stdout.readline()
        if "round" in line or not line:
            break
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no run folder, no temporary leftovers
