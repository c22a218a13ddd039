"""Flower: real SuperLink/SuperNode processes on 127.0.0.1, and a simulation, against run_federated.

Every process a test starts is stopped by PID (with its descendants) in a finalizer; every wait
has a timeout. Flower starts a process per message, so runs are tiny (2 nodes of 150 rows, 1-2 rounds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedad_tutorial.cli import main
from fedad_tutorial.csvio import read_node_csv, write_node_csv
from fedad_tutorial.data import hold_out, make_cloud_federation
from fedad_tutorial.federated import RECOMMENDED, FederatedConfig, run_federated
from fedad_tutorial.flower.certs import generate_test_certificates
from fedad_tutorial.flower.deploy import Processes, _children, free_port

CLI = [sys.executable, "-m", "fedad_tutorial.cli"]
TRAIN = ["--local-epochs", "1", "--batch-size", "32", "--quiet"]
TIMEOUT = 240  # seconds for any one deployment


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flower_data")
    for node in make_cloud_federation(3, 150, 8, seed=5):
        write_node_csv(root / f"{node.name}.csv", node)
    return root


@pytest.fixture
def procs(tmp_path):
    """Start commands in the background; the finalizer stops them and their descendants by PID."""
    group = Processes()

    def start(name: str, args: list[str]) -> subprocess.Popen:
        return group.start(CLI + args, dict(__import__("os").environ), tmp_path / f"{name}.log")

    yield start
    group.stop()


def _wait(proc: subprocess.Popen, timeout: float = TIMEOUT) -> int:
    return proc.wait(timeout=timeout)


def _log(tmp_path: Path, name: str) -> str:
    return (tmp_path / f"{name}.log").read_text()


def _reference(data: Path, names: list[str], rounds: int) -> pd.DataFrame:
    """`fedad simulate` on the same CSVs (the loop engine, like the Flower clients)."""
    nodes = [read_node_csv(data / f"{n}.csv") for n in names]
    splits = hold_out(nodes, 0.3, 42)
    config = replace(RECOMMENDED, rounds=rounds, local_epochs=1, batch_size=32, engine="loop")  # TRAIN's flags
    return run_federated(splits, config, feature_names=nodes[0].feature_names, progress=False).history


def _server(out: Path, port: int, rounds: int, *extra: str) -> list[str]:
    return ["server", "--rounds", str(rounds), "--min-clients", "2", "--address", f"127.0.0.1:{port}",
            "--output-dir", str(out), "--wait-timeout", "90", "--round-timeout", "60", *TRAIN, *extra]


def _client(data: Path, k: int, port: int, *extra: str) -> list[str]:
    return ["client", "--node-id", str(k), "--data-path", str(data / f"node_{k}.csv"),
            "--server-address", f"127.0.0.1:{port}", "--wait-timeout", "90", *extra]


def test_server_and_two_clients_match_simulate(data, procs, tmp_path):
    port, out = free_port(), tmp_path / "run"
    server = procs("server", _server(out, port, 2, "--insecure"))
    clients = [procs(f"client{k}", _client(data, k, port, "--insecure")) for k in (1, 2)]
    assert _wait(server) == 0, _log(tmp_path, "server")
    assert [_wait(c, 60) for c in clients] == [0, 0]
    for name in ["model.pt", "history.csv", "summary.json", "figures/f1_per_round.png", "flower/superlink.log"]:
        assert (out / name).stat().st_size > 0
    history = pd.read_csv(out / "history.csv")
    reference = _reference(data, ["node_1", "node_2"], 2)
    assert list(history.columns) == list(reference.columns)
    assert history[["round", "client"]].equals(reference[["round", "client"]])
    np.testing.assert_allclose(history[["loss", "threshold", "f1", "roc_auc"]].to_numpy(),
                               reference[["loss", "threshold", "f1", "roc_auc"]].to_numpy(), rtol=1e-5)
    assert main(["score", "--model", str(out / "model.pt"), "--data", str(data / "node_3.csv"),
                 "--output", str(tmp_path / "scores.csv")]) == 0


def test_tls_or_insecure_is_required(data, tmp_path, capsys):
    for argv in (["server", "--output-dir", str(tmp_path / "o")],
                 ["client", "--node-id", "1", "--data-path", str(data / "node_1.csv")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "--insecure" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_invalid_csv_client_fails_fast(data, tmp_path, capsys):
    bad = tmp_path / "node_9.csv"
    lines = (data / "node_1.csv").read_text().splitlines()
    lines[3] = "oops" + lines[3][lines[3].index(","):]
    bad.write_text("\n".join(lines) + "\n")
    start = time.monotonic()
    assert main(["client", "--node-id", "1", "--data-path", str(bad), "--insecure",
                 "--server-address", f"127.0.0.1:{free_port()}"]) == 2
    err = capsys.readouterr().err
    assert "node_9.csv, line 4, column 'cpu_util_pct': 'oops' is not a number" in err and err.count("\n") == 1
    assert time.monotonic() - start < 10


def test_server_gives_up_when_clients_do_not_come(procs, tmp_path):
    out = tmp_path / "run"
    server = procs("server", _server(out, free_port(), 1, "--insecure", "--wait-timeout", "5"))
    assert _wait(server, 120) == 1
    assert "only 0 of the 2 required clients connected within 5 s" in _log(tmp_path, "server")
    assert not out.exists()


def test_tls_run_survives_a_killed_client(data, procs, tmp_path):
    """Over TLS, 3 clients; one is killed after round 1: the round completes with the other two."""
    certs = generate_test_certificates(tmp_path / "certs")
    port, out = free_port(), tmp_path / "run"
    server = procs("server", _server(out, port, 2, "--certificates", str(certs), "--round-timeout", "20"))
    clients = [procs(f"client{k}", _client(data, k, port, "--root-certificates", str(certs / "ca.crt")))
               for k in (1, 2, 3)]
    progress = tmp_path / ".run.flower" / "progress.jsonl"
    deadline = time.monotonic() + TIMEOUT
    while not (progress.exists() and progress.read_text().strip()):  # round 1 is done
        assert time.monotonic() < deadline and server.poll() is None, _log(tmp_path, "server")
        time.sleep(0.5)
    victim = clients[2]
    for pid in [victim.pid, *_children(victim.pid)]:  # a crash: no clean shutdown
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    assert _wait(server) == 0, _log(tmp_path, "server")
    assert [_wait(c, 60) for c in clients[:2]] == [0, 0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["flower"]["missing_clients"] == ["node_3"]
    history = pd.read_csv(out / "history.csv")
    assert history.groupby("round")["client"].apply(list).to_dict() == {
        1: ["node_1", "node_2", "node_3"], 2: ["node_1", "node_2"]}
    assert "--insecure" not in (out / "flower" / "superlink.log").read_text()


def test_too_few_clients_left_names_the_missing_ones():
    from fedad_tutorial.flower.server_app import DetectorFedAvg, FlowerRunError, Node
    from fedad_tutorial.flower.settings import FlowerSettings
    from fedad_tutorial.scaling import FeatureStats, Scaler

    stats = FeatureStats(1, np.zeros(2), np.zeros(2))
    nodes = [Node(100 + k, k, f"node_{k + 1}", 10, 5, ["a", "b"], True, stats) for k in range(2)]
    strategy = DetectorFedAvg(FlowerSettings(min_clients=2, round_timeout=7), nodes, Scaler.fit(np.ones((2, 2))))
    with pytest.raises(FlowerRunError, match=r"missing: node_2 .*no reply within --round-timeout 7 s"):
        strategy._collect([100, 101], {100: object()}, "train")


SIMULATION = """
import json, sys, time
import torch
torch.set_num_threads(1)
from fedad_tutorial.csvio import read_node_csv
from fedad_tutorial.data import hold_out
from fedad_tutorial.federated import FederatedConfig, run_federated
from fedad_tutorial.flower.settings import FlowerSettings
from fedad_tutorial.flower.simulation import run_flower_simulation
paths = sys.argv[1:]
config = FederatedConfig(rounds=2, local_epochs=1, batch_size=32, threshold="global", engine="loop")
nodes = [read_node_csv(p) for p in paths]
splits = hold_out(nodes, 0.3, 42)
ref = run_federated(splits, config, feature_names=nodes[0].feature_names, progress=False)
start = time.monotonic()
fl = run_flower_simulation(paths, FlowerSettings(config=config, min_clients=len(paths)))
cols = ["loss", "threshold", "f1", "roc_auc"]
print(json.dumps({"seconds": time.monotonic() - start,
                  "same_rows": fl.history[["round", "client"]].equals(ref.history[["round", "client"]]),
                  "max_diff": float((fl.history[cols] - ref.history[cols]).abs().max().max()),
                  "thresholds": [ref.detector.threshold, fl.detector.threshold]}))
"""


def test_simulation_matches_run_federated(data):
    paths = [str(data / f"node_{k}.csv") for k in (1, 2, 3)]
    out = subprocess.run([sys.executable, "-c", SIMULATION, *paths], capture_output=True, text=True,
                         timeout=TIMEOUT, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
                                               "FLWR_TELEMETRY_ENABLED": "0"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["same_rows"] and result["max_diff"] < 1e-5
    assert result["thresholds"][0] == pytest.approx(result["thresholds"][1], rel=1e-6)


def test_trim_reaches_the_clients_local_training(tmp_path):
    """Fast, no processes: trim survives the run config (and the app's pyproject) and the message record."""
    import tomllib

    from fedad_tutorial.flower.deploy import write_app
    from fedad_tutorial.flower.settings import FlowerSettings, config_from_message, message_config

    settings = FlowerSettings(config=FederatedConfig(trim=0.2, threshold="local"))
    run_config = settings.to_run_config()
    assert run_config["fl-trim"] == 0.2
    assert FlowerSettings.from_run_config(run_config) == settings
    app = tomllib.loads((write_app(tmp_path / "app", settings) / "pyproject.toml").read_text())
    assert FlowerSettings.from_run_config(app["tool"]["flwr"]["app"]["config"]).config.trim == 0.2
    assert config_from_message(message_config(settings, 1)).training.trim == 0.2
    # the defaults are the command line's (trimmed); a plain configuration trains untrimmed
    assert config_from_message(message_config(FlowerSettings(), 1)).training.trim == RECOMMENDED.trim == 0.1
    plain = FlowerSettings(config=FederatedConfig(threshold="local"))
    assert config_from_message(message_config(plain, 1)).training.trim == 0.0
