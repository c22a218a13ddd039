"""The `fedad` command line: the generate -> simulate -> score flow and its handling of bad input."""

import argparse
import json
import subprocess
import sys
from dataclasses import replace

import pandas as pd
import pytest
from conftest import generate_and_simulate

from fedad_tutorial import __version__
from fedad_tutorial.cli import build_parser, config_from_args, main
from fedad_tutorial.federated import RECOMMENDED, FederatedConfig


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """Generate 3 small nodes and train 2 rounds on them once for the module."""
    root = tmp_path_factory.mktemp("flow")
    data, run = generate_and_simulate(root, rows=300, features=12, seed=1, rounds=2)
    return root, data, run


def test_generate_data_writes_labelled_node_csvs(flow):
    _, data, _ = flow
    assert sorted(p.name for p in data.iterdir()) == [".fedad-data", "node_1.csv", "node_2.csv", "node_3.csv"]
    frame = pd.read_csv(data / "node_1.csv")
    assert frame.shape == (300, 13) and list(frame.columns)[-1] == "label"
    assert frame["label"].sum() == 15


def test_simulate_writes_a_complete_run_folder(flow):
    _, _, run = flow
    for name in ["model.pt", "history.csv", "summary.json"]:
        assert (run / name).stat().st_size > 0
    assert (run / "figures" / "f1_per_round.png").stat().st_size > 0
    history = pd.read_csv(run / "history.csv")
    assert sorted(history["round"].unique()) == [1, 2] and history["client"].nunique() == 3
    summary = json.loads((run / "summary.json").read_text())
    assert summary["config"]["rounds"] == 2 and summary["global_threshold"] > 0
    assert 0.5 < summary["final_round_mean"]["roc_auc"] <= 1.0


def test_simulate_skips_the_figure_on_request(flow, tmp_path):
    _, data, _ = flow
    assert main(["simulate", "--data-dir", str(data), "--output-dir", str(tmp_path / "run"), "--rounds", "1",
                 "--local-epochs", "1", "--quiet", "--no-figure"]) == 0
    assert (tmp_path / "run" / "history.csv").is_file() and not (tmp_path / "run" / "figures").exists()


def test_score_keeps_row_order_and_reports_metrics(flow, capsys):
    root, data, run = flow
    out = root / "scores.csv"
    assert main(["score", "--model", str(run / "model.pt"), "--data", str(data / "node_3.csv"),
                 "--output", str(out)]) == 0
    scores = pd.read_csv(out)
    assert list(scores.columns) == ["score", "is_anomaly"] and len(scores) == 300
    assert "ROC-AUC" in capsys.readouterr().out
    # The same rows in reverse order get the same scores in reverse order.
    frame = pd.read_csv(data / "node_3.csv")
    frame.iloc[::-1].to_csv(root / "rev.csv", index=False)
    assert main(["score", "--model", str(run / "model.pt"), "--data", str(root / "rev.csv"),
                 "--output", str(root / "rev_scores.csv")]) == 0
    rev = pd.read_csv(root / "rev_scores.csv")
    assert (rev["score"].values[::-1] == scores["score"].values).all()


def _expect_user_error(capsys, argv, output, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not output.exists()


def test_bad_cell_in_a_node_csv(flow, tmp_path, capsys):
    _, data, _ = flow
    bad = tmp_path / "bad"
    bad.mkdir()
    lines = (data / "node_1.csv").read_text().splitlines()
    lines[4] = "abc" + lines[4][lines[4].index(","):]
    (bad / "node_1.csv").write_text("\n".join(lines) + "\n")
    _expect_user_error(capsys, ["simulate", "--data-dir", str(bad), "--output-dir", str(tmp_path / "o")],
                       tmp_path / "o", "node_1.csv, line 5, column 'cpu_util_pct': 'abc' is not a number")


def test_mismatched_columns_between_nodes(flow, tmp_path, capsys):
    _, data, _ = flow
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "node_1.csv").write_text((data / "node_1.csv").read_text())
    pd.read_csv(data / "node_2.csv").iloc[:, 1:].to_csv(mixed / "node_2.csv", index=False)
    _expect_user_error(capsys, ["simulate", "--data-dir", str(mixed), "--output-dir", str(tmp_path / "o")],
                       tmp_path / "o", "feature columns differ")


def test_missing_and_empty_inputs(tmp_path, capsys):
    _expect_user_error(capsys, ["simulate", "--data-dir", str(tmp_path / "nope"), "--output-dir",
                                str(tmp_path / "o")], tmp_path / "o", "no such data folder")
    _expect_user_error(capsys, ["simulate", "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "o")],
                       tmp_path / "o", "no node_*.csv files")


def test_score_with_wrong_columns_or_bad_model(flow, tmp_path, capsys):
    _, data, run = flow
    pd.read_csv(data / "node_1.csv").iloc[:, 2:].to_csv(tmp_path / "few.csv", index=False)
    _expect_user_error(capsys, ["score", "--model", str(run / "model.pt"), "--data", str(tmp_path / "few.csv"),
                                "--output", str(tmp_path / "s.csv")], tmp_path / "s.csv", "missing 'cpu_util_pct'")
    (tmp_path / "bad.pt").write_bytes(b"garbage" * 100)
    _expect_user_error(capsys, ["score", "--model", str(tmp_path / "bad.pt"), "--data", str(data / "node_1.csv"),
                                "--output", str(tmp_path / "s.csv")], tmp_path / "s.csv", "not a fedad model file")


def test_bad_flag_values_exit_2_in_one_line(tmp_path, capsys):
    _expect_user_error(capsys, ["generate-data", "--num-nodes", "0", "--output-dir", str(tmp_path / "g")],
                       tmp_path / "g", "must be in [1, 1000000000], got 0")
    _expect_user_error(capsys, ["simulate", "--threshold-percentile", "120", "--output-dir", str(tmp_path / "o")],
                       tmp_path / "o", "must be in (0, 100), got 120")


def test_simulate_with_trim(flow, tmp_path, capsys):
    """``--trim`` reaches the run's config (default 0.1; 0 trains plainly); out of [0, 0.5) it exits 2."""
    _, data, run = flow
    assert json.loads((run / "summary.json").read_text())["config"]["trim"] == 0.1
    plain = tmp_path / "plain"
    assert main(["simulate", "--data-dir", str(data), "--trim", "0", "--rounds", "1", "--local-epochs", "1",
                 "--output-dir", str(plain), "--quiet"]) == 0
    summary = json.loads((plain / "summary.json").read_text())
    assert summary["config"]["trim"] == 0.0 and summary["config"]["rounds"] == 1
    _expect_user_error(capsys, ["simulate", "--data-dir", str(data), "--trim", "0.6", "--output-dir",
                                str(tmp_path / "o")], tmp_path / "o", "must be in [0, 0.5), got 0.6")


def test_defaults_are_the_recommended_configuration():
    """One place defines the command line's defaults: ``FederatedConfig()`` (rounds differ per command)."""
    parser = build_parser()
    assert config_from_args(parser.parse_args(["run"])) == replace(RECOMMENDED, rounds=30)
    assert config_from_args(parser.parse_args(["simulate"])) == replace(RECOMMENDED, rounds=10)
    assert config_from_args(parser.parse_args(["server", "--insecure"])) == replace(RECOMMENDED, rounds=10)
    assert RECOMMENDED == FederatedConfig()


def test_version_and_help_via_the_console_script():
    out = subprocess.run([sys.executable, "-m", "fedad_tutorial.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout
    out = subprocess.run([sys.executable, "-m", "fedad_tutorial.cli", "simulate", "--help"], capture_output=True,
                         text=True)
    assert "--local-epochs" in out.stdout and "(in [1, 10000]; default: 5)" in out.stdout


def _help(command: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return " ".join(sub.format_help().split())  # argparse wraps lines: compare words


def test_help_states_every_default_and_range():
    """A switch shows no default (``--no-figure`` is not "default: True"), a 0 default is shown, ranges too."""
    simulate = _help("simulate")
    assert "--no-figure skip OUTPUT_DIR/figures/f1_per_round.png, which is drawn otherwise" in simulate
    assert "True" not in simulate and "default: False" not in simulate
    assert "(in [0, 0.5); default: 0.1)" in simulate and "(in (0, 1); default: 0.3)" in simulate
    assert "--seed SEED random seed (in [0, 4294967295]; default: 0)" in _help("split")
    server = _help("server")
    assert "--engine" not in server  # a Flower deployment trains client by client: nothing to choose
    assert "(in (0, 1000000000]; default: 300.0)" in server and "(in [1, 1000000]; default: 2)" in server
