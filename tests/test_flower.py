"""Flower: real SuperLink/SuperNode processes on 127.0.0.1, and a simulation, against run_federated.

Every process a test starts is stopped by PID (with its descendants) in a finalizer; every wait
has a timeout. Real-process tests are marked ``slow`` and kept tiny (nodes of 150 rows, 1-2 rounds).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tls_listener import TLSServer

from fedad_tutorial.cli import main
from fedad_tutorial.csvio import read_node_csv, write_node_csv
from fedad_tutorial.data import hold_out, make_cloud_federation
from fedad_tutorial.errors import UserError
from fedad_tutorial.federated import RECOMMENDED, FederatedConfig, run_federated
from fedad_tutorial.flower.certs import generate_test_certificates
from fedad_tutorial.flower.keys import generate_key, read_authorized_keys
from fedad_tutorial.flower.processes import Processes, alive, descendants, free_port, reachable

CLI = [sys.executable, "-m", "fedad_tutorial.cli"]
TRAIN = ["--local-epochs", "1", "--batch-size", "32", "--quiet"]
TIMEOUT = 300  # seconds for any one deployment (the machine may be busy)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flower_data")
    for node in make_cloud_federation(3, 150, 8, seed=5):
        write_node_csv(root / f"{node.name}.csv", node)
    return root


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> Path:
    """Test certificates, keys k1..k3 and an authorized_keys file listing only k1 and k2."""
    root = generate_test_certificates(tmp_path_factory.mktemp("flower_tls"))
    for k in (1, 2, 3):
        generate_key(root / f"k{k}")
    (root / "authorized_keys").write_text("".join((root / f"k{k}.pub").read_text() for k in (1, 2)))
    return root


@pytest.fixture
def procs(tmp_path):
    """Start commands in the background; the finalizer stops them and their descendants by PID."""
    group = Processes()

    def start(name: str, args: list[str]) -> subprocess.Popen:
        return group.start(CLI + args, dict(os.environ), tmp_path / f"{name}.log")

    yield start
    group.stop()


def _wait(proc: subprocess.Popen, timeout: float = TIMEOUT) -> int:
    return proc.wait(timeout=timeout)


def _log(tmp_path: Path, name: str) -> str:
    return (tmp_path / f"{name}.log").read_text()


def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _reference(data: Path, names: list[str], rounds: int, model: str = "ae") -> pd.DataFrame:
    """`fedad simulate` on the same CSVs (the loop engine, like the Flower clients)."""
    return _reference_run(data, names, rounds, model).history


def _reference_run(data: Path, names: list[str], rounds: int, model: str = "ae"):
    nodes = [read_node_csv(data / f"{n}.csv") for n in names]
    splits = hold_out(nodes, seed=42)
    config = replace(RECOMMENDED, model=model, rounds=rounds, local_epochs=1, batch_size=32,
                     engine="loop")  # TRAIN's flags
    return run_federated(splits, config, feature_names=nodes[0].feature_names, progress=False)


def _server(out: Path, port: int, rounds: int, tls: Path | None, *extra: str) -> list[str]:
    security = (["--certificates", str(tls), "--authorized-keys", str(tls / "authorized_keys")]
                if tls is not None else ["--insecure"])
    return ["server", "--rounds", str(rounds), "--min-clients", "2", "--address", f"127.0.0.1:{port}",
            "--output-dir", str(out), "--wait-timeout", "120", "--round-timeout", "60", *TRAIN, *security, *extra]


def _client(data: Path, k: int, port: int, tls: Path | None, *extra: str, key: int | None = None) -> list[str]:
    security = (["--root-certificates", str(tls / "ca.crt"), "--auth-key", str(tls / f"k{key or k}")]
                if tls is not None else ["--insecure"])
    return ["client", "--node-id", str(k), "--data-path", str(data / f"node_{k}.csv"),
            "--server-address", f"127.0.0.1:{port}", "--wait-timeout", "60", *security, *extra]


def _tree(proc: subprocess.Popen) -> list[int]:
    return [proc.pid, *descendants(proc.pid)]


@pytest.mark.slow
def test_listed_nodes_train_like_simulate_and_an_unlisted_node_is_refused(data, tls, procs, tmp_path):
    port, out = free_port(), tmp_path / "run"
    server = procs("server", _server(out, port, 2, tls))
    clients = [procs(f"client{k}", _client(data, k, port, tls)) for k in (1, 2)]
    intruder = procs("client3", _client(data, 3, port, tls))  # k3 is not in authorized_keys
    assert _wait(server) == 0, _log(tmp_path, "server")
    assert [_wait(c, 60) for c in clients] == [0, 0]
    assert _wait(intruder, 120) == 1
    err = _log(tmp_path, "client3").strip().splitlines()[-1]
    assert "does not know this node's key" in err and "\x1b" not in err
    for name in ["model.pt", "history.csv", "summary.json", "figures/f1_per_round.png", "flower/superlink.log"]:
        assert (out / name).stat().st_size > 0
    history = pd.read_csv(out / "history.csv")
    reference = _reference(data, ["node_1", "node_2"], 2)
    assert list(history.columns) == list(reference.columns)
    assert history[["round", "client"]].equals(reference[["round", "client"]])
    np.testing.assert_allclose(history[["loss", "threshold", "f1", "roc_auc"]].to_numpy(),
                               reference[["loss", "threshold", "f1", "roc_auc"]].to_numpy(), rtol=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    keys = {k.fingerprint for k in read_authorized_keys(tls / "authorized_keys")}
    nodes = summary["flower"]["nodes"]
    assert sorted(nodes) == ["node_1", "node_2"] and {n["key"] for n in nodes.values()} == keys
    assert main(["score", "--model", str(out / "model.pt"), "--data", str(data / "node_3.csv"),
                 "--output", str(tmp_path / "scores.csv")]) == 0


@pytest.mark.slow
def test_svdd_deployment_agrees_on_the_centre_and_trains_like_simulate(data, procs, tmp_path):
    """Deep SVDD over real SuperNodes: the centre from the nodes' embedding sums (one extra round trip
    before round 1) is simulate's, to the bit, and so are the history and the final weights (to rounding)."""
    import torch

    from fedad_tutorial.detector import Detector

    port, out = free_port(), tmp_path / "run"
    server = procs("server", _server(out, port, 2, None, "--model", "svdd"))
    clients = [procs(f"client{k}", _client(data, k, port, None)) for k in (1, 2)]
    assert _wait(server) == 0, _log(tmp_path, "server")
    assert [_wait(c, 60) for c in clients] == [0, 0]
    reference = _reference_run(data, ["node_1", "node_2"], 2, "svdd")
    history = pd.read_csv(out / "history.csv")
    assert history[["round", "client"]].equals(reference.history[["round", "client"]])
    np.testing.assert_allclose(history[["loss", "threshold", "f1", "roc_auc"]].to_numpy(),
                               reference.history[["loss", "threshold", "f1", "roc_auc"]].to_numpy(), rtol=1e-5)
    deployed, simulated = Detector.load(out / "model.pt").model.state_dict(), reference.detector.model.state_dict()
    assert torch.equal(deployed["center"], simulated["center"])
    for name, tensor in simulated.items():
        torch.testing.assert_close(deployed[name], tensor, rtol=1e-5, atol=1e-6)


def test_tls_or_insecure_is_required(data, tls, tmp_path, capsys):
    for argv in (["server", "--output-dir", str(tmp_path / "o")],
                 ["client", "--node-id", "1", "--data-path", str(data / "node_1.csv")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "--insecure" in err and err.count("\n") == 1
    # TLS without the keys: refused before anything starts, one line saying why
    assert main(["server", "--output-dir", str(tmp_path / "o"), "--certificates", str(tls)]) == 2
    err = capsys.readouterr().err
    assert "--authorized-keys" in err and err.count("\n") == 1
    assert main(["client", "--node-id", "1", "--data-path", str(data / "node_1.csv"),
                 "--root-certificates", str(tls / "ca.crt")]) == 2
    err = capsys.readouterr().err
    assert "--auth-key" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_keygen_writes_a_private_key_for_this_user_only_and_never_overwrites(tmp_path, capsys):
    assert main(["keygen", "--output", str(tmp_path / "node")]) == 0
    assert (tmp_path / "node").stat().st_mode & 0o777 == 0o600
    line = (tmp_path / "node.pub").read_text()
    assert line.startswith("ecdsa-sha2-nistp384 ") and line.rstrip().endswith(" node")
    (tmp_path / "authorized_keys").write_text("# ops team\n\n" + line)
    [key] = read_authorized_keys(tmp_path / "authorized_keys")
    assert key.fingerprint in capsys.readouterr().out
    before = (tmp_path / "node").read_bytes()
    assert main(["keygen", "--output", str(tmp_path / "node")]) == 2
    assert "already exists" in capsys.readouterr().err and (tmp_path / "node").read_bytes() == before


@pytest.mark.parametrize("text, message", [
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x\n", "elliptic-curve"),
    ("not a key\n", "expected an OpenSSH public key"),
    ("# nothing\n", "no public keys"),
])
def test_authorized_keys_errors_name_the_line(tmp_path, text, message):
    path = tmp_path / "authorized_keys"
    path.write_text("# header\n" + text)
    with pytest.raises(UserError, match=message) as info:
        read_authorized_keys(path)
    assert "no public keys" in message or f"{path}, line 2" in str(info.value)


def test_duplicate_authorized_key_is_an_error(tmp_path):
    key = generate_key(tmp_path / "k")
    (tmp_path / "authorized_keys").write_text(key.line + "\n" + key.line + "\n")
    with pytest.raises(UserError, match=r"line 2: the same key as line 1"):
        read_authorized_keys(tmp_path / "authorized_keys")


def test_server_refuses_a_busy_port(tls, tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(_server(tmp_path / "run", port, 1, tls)) == 2
    err = capsys.readouterr().err
    assert f"port {port}" in err and "already in use" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.flower").exists()


def test_client_preflight_names_each_connection_mistake(tls, tmp_path):
    from fedad_tutorial.flower.preflight import check_server

    other = generate_test_certificates(tmp_path / "other")
    secure, plain = TLSServer(tls), TLSServer(None)
    check_server("127.0.0.1", secure.port, tls / "ca.crt", 5)  # the right CA: fine
    check_server("127.0.0.1", plain.port, None, 5)
    cases = [(secure.port, other / "ca.crt", "not signed by"), (secure.port, None, "uses TLS"),
             (plain.port, tls / "ca.crt", "does not use TLS"), (free_port(), None, "cannot reach")]
    for port, root, message in cases:
        with pytest.raises(RuntimeError, match=message) as info:
            check_server("127.0.0.1", port, root, 1)
        assert f"127.0.0.1:{port}" in str(info.value) and "\x1b" not in str(info.value)
    elsewhere = TLSServer(tls, "127.0.0.2")  # the certificate lists 127.0.0.1 and localhost only
    with pytest.raises(UserError, match="not valid for the name '127.0.0.2'"):
        check_server("127.0.0.2", elsewhere.port, tls / "ca.crt", 1)


def test_only_fedad_app_bundles_are_answered(tmp_path):
    """A client answers a message only if the run's bundle names fedad's apps and carries no code."""
    from flwr.cli.build import build_fab_from_disk

    from fedad_tutorial.flower.deploy import write_app
    from fedad_tutorial.flower.runtime import foreign_app
    from fedad_tutorial.flower.settings import FlowerSettings

    ours = build_fab_from_disk(write_app(tmp_path / "ours", FlowerSettings()))
    assert foreign_app(ours) is None
    probe = _probe_app(tmp_path / "probe", tmp_path / "marks")
    assert "carries files (probe.py)" in foreign_app(build_fab_from_disk(probe))
    (probe / "probe.py").unlink()  # no code, but other apps named: still refused
    assert "names other apps" in foreign_app(build_fab_from_disk(probe))
    assert foreign_app(b"not a zip") is not None
    with zipfile.ZipFile(tmp_path / "x.fab", "w") as z:  # a bundle without a pyproject.toml
        z.writestr("readme.txt", "hi")
    assert foreign_app((tmp_path / "x.fab").read_bytes()) is not None


def _probe_app(folder: Path, marks: Path) -> Path:
    """A Flower app whose ServerApp and ClientApp leave a file in ``marks`` if they ever run."""
    folder.mkdir(parents=True)
    (folder / "probe.py").write_text(
        "import os, pathlib\nfrom flwr.serverapp import ServerApp\nfrom flwr.clientapp import ClientApp\n"
        f"MARKS = pathlib.Path({str(marks)!r})\n"
        "server, client = ServerApp(), ClientApp()\n"
        "@server.main()\ndef main(grid, context):\n"
        "    MARKS.mkdir(exist_ok=True); (MARKS / 'server').write_text(str(os.getpid()))\n"
        "    from flwr.app import Message, RecordDict\n"
        "    msgs = [Message(RecordDict(), message_type='query.rows', dst_node_id=i) for i in grid.get_node_ids()]\n"
        "    list(grid.send_and_receive(msgs, timeout=30))\n"
        "@client.query('rows')\ndef rows(msg, context):\n"
        "    MARKS.mkdir(exist_ok=True); (MARKS / f'client-{os.getpid()}').write_text(str(context.node_config))\n"
        "    return msg\n")
    (folder / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "probe"\nversion = "1.0.0"\ndescription = "probe"\nlicense = "MIT"\n'
        'dependencies = ["flwr>=1.41"]\n\n[tool.flwr.app]\npublisher = "someone"\n\n'
        '[tool.flwr.app.components]\nserverapp = "probe:server"\nclientapp = "probe:client"\n\n'
        '[tool.flwr.app.config]\n')
    return folder


@pytest.mark.slow
def test_a_foreign_app_submitted_with_only_the_ca_certificate_runs_nowhere(data, tls, procs, tmp_path):
    port, out, marks = free_port(), tmp_path / "run", tmp_path / "marks"
    server = procs("server", _server(out, port, 1, tls, "--min-clients", "3", "--wait-timeout", "40"))
    clients = [procs(f"client{k}", _client(data, k, port, tls)) for k in (1, 2)]
    _until(lambda: all("connected to the fedad server" in _log(tmp_path, f"client{k}") for k in (1, 2))
           or any(c.poll() is not None for c in clients), 150, "the clients")
    assert all(c.poll() is None for c in clients)
    home = tmp_path / "attacker"
    home.mkdir()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "x"\n\n[superlink.x]\naddress = "127.0.0.1:{port}"\n'
                                      f'root-certificates = "{tls / "ca.crt"}"\n')
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
    flwr = str(Path(sys.executable).parent / "flwr")
    submitted = subprocess.run([flwr, "run", str(_probe_app(tmp_path / "probe", marks)), "x", "--format", "json"],
                               env=env, capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr  # Flower accepts the run ...
    time.sleep(15)  # ... but nothing runs it: no ServerApp on the server host, no ClientApp on a client
    assert not marks.exists()
    assert all(c.poll() is None for c in clients)
    assert _wait(server) == 1  # our run waited for a third node that never came


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_killing_a_wrapper_stops_every_flower_process_it_started(data, tls, procs, tmp_path, sig):
    """SIGTERM/SIGINT: the client first, then the server. SIGKILL: the server first; its client
    notices within --wait-timeout, names the address and exits non-zero."""
    port = free_port()
    server = procs("server", _server(tmp_path / "run", port, 1, tls, "--min-clients", "3"))
    _until(lambda: reachable("127.0.0.1", port), 120, "the server")  # the client's --wait-timeout is short
    client = procs("client1", _client(data, 1, port, tls, "--wait-timeout", "10"))
    _until(lambda: "connected to the fedad server" in _log(tmp_path, "client1") or client.poll() is not None,
           150, "the client's SuperNode")
    server_tree, client_tree = _tree(server), _tree(client)
    assert len(server_tree) >= 2 and len(client_tree) >= 2, _log(tmp_path, "client1")
    if sig == signal.SIGKILL:
        os.kill(server.pid, sig)
        _until(lambda: not any(alive(p) for p in server_tree), 15, "the server's processes to end")
        start = time.monotonic()
        assert _wait(client, 60) == 2  # waited --wait-timeout for a restart, then gave up in one line
        assert time.monotonic() - start < 10 + 25  # --wait-timeout, plus a busy machine's slack
        err = _log(tmp_path, "client1").strip().splitlines()[-1]
        assert f"127.0.0.1:{port}" in err and err.startswith("fedad client: error:")
    else:
        for proc, tree in ((client, client_tree), (server, server_tree)):
            os.kill(proc.pid, sig)
            assert _wait(proc, 30) != 0
            _until(lambda tree=tree: not any(alive(p) for p in tree), 15, "the processes to end")
    assert not any(alive(p) for p in client_tree)


@pytest.mark.slow
def test_sigkill_of_the_client_wrapper_stops_its_supernode(data, tls, procs, tmp_path):
    port = free_port()
    server = procs("server", _server(tmp_path / "run", port, 1, tls, "--min-clients", "3"))
    client = procs("client1", _client(data, 1, port, tls))
    _until(lambda: "connected to the fedad server" in _log(tmp_path, "client1") or client.poll() is not None,
           150, "the client's SuperNode")
    tree = _tree(client)
    os.kill(client.pid, signal.SIGKILL)
    _until(lambda: not any(alive(p) for p in tree), 15, "the SuperNode to end")
    assert server.poll() is None


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


@pytest.mark.slow
def test_server_gives_up_when_clients_do_not_come(procs, tmp_path):
    out = tmp_path / "run"
    server = procs("server", _server(out, free_port(), 1, None, "--wait-timeout", "5"))
    assert _wait(server, 120) == 1
    assert "only 0 of the 2 required clients connected within 5 s" in _log(tmp_path, "server")
    assert not out.exists()


@pytest.mark.slow
def test_tls_run_survives_a_killed_client(data, tls, procs, tmp_path):
    """Over TLS, 3 clients; one is killed after round 1: the round completes with the other two."""
    (tmp_path / "keys").write_text("".join((tls / f"k{k}.pub").read_text() for k in (1, 2, 3)))
    port, out = free_port(), tmp_path / "run"
    args = [a for a in _server(out, port, 2, tls, "--round-timeout", "20") if a != "--quiet"]
    args[args.index("--authorized-keys") + 1] = str(tmp_path / "keys")
    server = procs("server", args)
    clients = [procs(f"client{k}", _client(data, k, port, tls)) for k in (1, 2, 3)]
    _until(lambda: any(line.split()[:1] == ["1"] for line in _log(tmp_path, "server").splitlines())
           or server.poll() is not None, TIMEOUT, "round 1")
    assert server.poll() is None, _log(tmp_path, "server")
    victim = clients[2]
    for pid in _tree(victim):  # a crash: no clean shutdown
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
    from fedad_tutorial.flower.server_app import FlowerRunError, FlowerTransport, Node
    from fedad_tutorial.flower.settings import FlowerSettings
    from fedad_tutorial.scaling import FeatureStats, Scaler

    stats = FeatureStats(1, np.zeros(2), np.zeros(2))
    nodes = [Node(100 + k, k, f"node_{k + 1}", 10, 5, ["a", "b"], True, stats) for k in range(2)]
    strategy = FlowerTransport(None, FlowerSettings(min_clients=2, round_timeout=7), nodes, Scaler.fit(np.ones((2, 2))))
    strategy._sent_at -= 3  # the message went out 3 s ago
    with pytest.raises(FlowerRunError, match=r"missing: node_2 \(no reply after 3 s \(--round-timeout 7 s\)\)"):
        strategy._collect([100, 101], {100: object()}, "train")
    strategy.errors[100] = "the node went away"
    strategy.alive = {100, 101}
    with pytest.raises(FlowerRunError, match=r"node_1 \(replied with an error: the node went away\)"):
        strategy._collect([100, 101], {}, "evaluate")


SIMULATION = """
import json, sys, time
import torch
torch.set_num_threads(1)
from fedad_tutorial.csvio import read_node_csv
from fedad_tutorial.data import hold_out
from fedad_tutorial.federated import FederatedConfig, run_federated
from fedad_tutorial.flower.settings import FlowerSettings
from fedad_tutorial.flower.simulation import run_flower_simulation
model, *paths = sys.argv[1:]
config = FederatedConfig(model=model, rounds=2, local_epochs=1, batch_size=32, threshold="global", engine="loop")
nodes = [read_node_csv(p) for p in paths]
splits = hold_out(nodes, seed=42)
ref = run_federated(splits, config, feature_names=nodes[0].feature_names, progress=False)
start = time.monotonic()
fl = run_flower_simulation(paths, FlowerSettings(config=config, min_clients=len(paths)))
cols = ["loss", "threshold", "f1", "roc_auc"]
ref_state, fl_state = ref.detector.model.state_dict(), fl.detector.model.state_dict()
print(json.dumps({"seconds": time.monotonic() - start,
                  "same_names": list(ref_state) == list(fl_state),
                  "max_weight_diff": max(float((fl_state[k] - v).abs().max()) for k, v in ref_state.items()),
                  "same_center": model != "svdd" or torch.equal(ref_state["center"], fl_state["center"]),
                  "same_rows": fl.history[["round", "client"]].equals(ref.history[["round", "client"]]),
                  "max_diff": float((fl.history[cols] - ref.history[cols]).abs().max().max()),
                  "thresholds": [ref.detector.threshold, fl.detector.threshold]}))
"""


# Deep SVDD (its centre from one extra message round trip) is checked against simulate over real SuperNodes in
# test_svdd_deployment_agrees_on_the_centre_and_trains_like_simulate; one Ray start per model would cost CI a minute.
@pytest.mark.parametrize("model", ["ae"])
def test_simulation_matches_run_federated(data, model):
    paths = [str(data / f"node_{k}.csv") for k in (1, 2, 3)]
    out = subprocess.run([sys.executable, "-c", SIMULATION, model, *paths], capture_output=True, text=True,
                         timeout=TIMEOUT, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
                                               "FLWR_TELEMETRY_ENABLED": "0"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["same_rows"] and result["max_diff"] < 1e-5
    assert result["same_names"] and result["max_weight_diff"] < 1e-5 and result["same_center"]
    assert result["thresholds"][0] == pytest.approx(result["thresholds"][1], rel=1e-6)


def test_simulation_leaves_a_core_for_the_server_and_starts_at_most_one_worker_per_client():
    from fedad_tutorial.flower.simulation import backend_config

    workers = {(n, cores): backend_config(n, cores)["init_args"]["num_cpus"] for n in (1, 3, 10) for cores in (1, 2, 8)}
    assert workers == {(1, 1): 1, (1, 2): 1, (1, 8): 1, (3, 1): 1, (3, 2): 1, (3, 8): 3, (10, 1): 1, (10, 2): 1,
                       (10, 8): 7}
    assert backend_config(3, 8)["client_resources"] == {"num_cpus": 1, "num_gpus": 0.0}  # one worker, one client


def test_trim_reaches_the_clients_local_training(tmp_path):
    """Fast, no processes: trim survives the run config (and the app's pyproject) and the message record."""
    import tomllib

    from fedad_tutorial.flower.deploy import write_app
    from fedad_tutorial.flower.settings import FlowerSettings, config_from_message, message_config

    settings = FlowerSettings(config=FederatedConfig(trim=0.2, threshold="local"))
    run_config = settings.to_run_config()
    assert run_config["trim"] == 0.2
    assert FlowerSettings.from_run_config(run_config) == settings
    app = tomllib.loads((write_app(tmp_path / "app", settings) / "pyproject.toml").read_text())
    assert FlowerSettings.from_run_config(app["tool"]["flwr"]["app"]["config"]).config.trim == 0.2
    assert config_from_message(message_config(settings, 1)).training.trim == 0.2
    # the defaults are the command line's (trimmed); a plain configuration trains untrimmed
    assert config_from_message(message_config(FlowerSettings(), 1)).training.trim == RECOMMENDED.trim == 0.1
    plain = FlowerSettings(config=FederatedConfig(trim=0.0))
    assert config_from_message(message_config(plain, 1)).training.trim == 0.0


def test_a_message_pulled_before_its_contents_arrive_is_retried_well_within_a_second():
    """Fast, no processes: Flower lists a message before its arrays are uploaded; pulling it retries soon."""
    from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError, pull_objects

    from fedad_tutorial.flower.latency import PULL_BACKOFF, shorten_pull_backoff

    shorten_pull_backoff()
    tries: list[float] = []

    def pull(object_id: str) -> bytes:
        tries.append(time.monotonic())
        if len(tries) < 3:  # not uploaded yet: twice
            raise ObjectUnavailableError(object_id)
        return b"content"

    assert pull_objects(["a"], pull) == {"a": b"content"}
    waits = np.diff(tries)
    assert len(waits) == 2 and waits[0] >= PULL_BACKOFF * 0.8 and waits.sum() < 1.0  # Flower's own: 1 s, then 2 s


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_weights_travel_as_one_array_and_come_back_bit_identical(kind):
    """Fast, no processes: two weight objects per message (not two per tensor), the same bytes back."""
    import torch
    from flwr.app import ArrayRecord

    from fedad_tutorial.flower.weights import from_record, to_record

    torch.manual_seed(3)
    state = FederatedConfig(model=kind).model_spec(7).build().state_dict()
    record = to_record(state)
    assert isinstance(record, ArrayRecord) and list(record) == ["weights"]
    assert len(record.children) == 1 and len(record["weights"].children) == 1  # one Array, one chunk
    back = from_record(record, FederatedConfig(model=kind).model_spec(7).build().state_dict())
    assert list(back) == list(state)
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name
    with pytest.raises(ValueError, match="numbers; this model has"):
        from_record(record, FederatedConfig(model=kind).model_spec(8).build().state_dict())


def test_the_flower_run_config_and_messages_carry_exactly_the_configuration_fields():
    """Fast, no processes: the keys are derived from FederatedConfig; values are checked by it."""
    from fedad_tutorial.cli import build_parser
    from fedad_tutorial.config import PARAMS
    from fedad_tutorial.flower.settings import FlowerSettings, config_from_message, message_config

    own = {"test-fraction", "min-clients", "wait-timeout", "round-timeout", "output-dir"}
    fields = {name.replace("_", "-") for name in PARAMS}
    settings = FlowerSettings(config=FederatedConfig(model="vae", hidden=(16, 8), lr=0.01, threshold="global",
                                                     score_method="reconstruction", rounds=4),
                              test_fraction=0.25, min_clients=3)
    run_config = settings.to_run_config()
    assert set(run_config) == fields | own == FlowerSettings.run_config_keys()
    assert FlowerSettings.from_run_config(run_config) == settings
    assert config_from_message(message_config(settings, 2)).config == settings.config
    # the command line's training flags are the fields marked for it (and nothing else of the configuration;
    # server has no --engine: a deployment trains client by client)
    server = vars(build_parser().parse_args(["server"]))
    assert {name for name in PARAMS if name in server} == {name for name, p in PARAMS.items() if p.cli} - {"engine"}
    # an unknown key, or a value out of the field's range, is refused in one line
    for bad, message in (({**run_config, "epochs": 3}, r"unknown key\(s\) epochs;"),
                         ({**run_config, "trim": 0.7}, r"trim must be in \[0, 0.5\), got 0.7"),
                         ({**run_config, "hidden": "16,x"}, "hidden: expected whole numbers"),
                         ({**run_config, "rounds": 2.5}, "rounds must be a whole number")):
        with pytest.raises(UserError, match=message) as caught:
            FlowerSettings.from_run_config(bad)
        assert "\n" not in str(caught.value)


def test_readme_flag_table_is_the_generated_one():
    """README.md shows, between the markers, exactly what ``python -m fedad_tutorial.flag_table`` prints."""
    from fedad_tutorial.flag_table import TABLE_BEGIN, TABLE_END, markdown_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    if TABLE_BEGIN not in readme:
        pytest.skip("README.md has no generated flag table yet")
    table = readme.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0].strip()
    assert table == markdown_table()


def test_server_progress_goes_to_stderr_and_quiet_hides_only_the_progress(capsys, monkeypatch):
    from fedad_tutorial.flower.progress import ServerProgress

    monkeypatch.setattr("fedad_tutorial.progress.DELAY", 0)  # show the bars at once

    for quiet in (False, True):
        progress = ServerProgress(2, 3, quiet, lambda means: f"row {means['round']}")
        for connected in (0, 2, 3):
            progress.count(connected)
        progress.round({"round": 1})
        progress.round({"round": 2})
        progress.close()
        out, err = capsys.readouterr()
        assert out.split() == ["row", "1", "row", "2"]  # the table, quiet or not
        if quiet:
            assert err == ""
        else:  # stderr is no terminal here: plain lines, never a carriage return
            assert "clients: 3/3" in err and "rounds: 1/2" in err and "\r" not in err
