"""``fedad server --resume``: a killed server's run continues from its checkpoint and ends where an
uninterrupted run ends; clients wait for a restarting server; a killed client rejoins or is dropped.

The fast tests check the round loop's resumption in one process, the checkpoint's file format and every
refusal of ``--resume``; the slow ones kill real processes (``kill -9`` of a whole process group).
"""

from __future__ import annotations

import math
import os
import signal
from dataclasses import replace

import numpy as np
import pytest
import torch

from fedad_tutorial.data import hold_out, make_cloud_federation
from fedad_tutorial.federated import (
    RECOMMENDED,
    InProcess,
    _scalers,
    fedavg_aggregator,
    federated_rounds,
)

CONFIG = replace(RECOMMENDED, rounds=4, local_epochs=1, batch_size=32, engine="loop", fraction=0.67)


def _transport(splits, config):
    global_scaler, scalers = _scalers(splits, config.scaling)
    rows = [torch.from_numpy(sc.transform(s.train)) for s, sc in zip(splits, scalers, strict=True)]
    return InProcess(rows, splits, scalers, global_scaler, config)


def _same_rows(a: list[dict], b: list[dict]) -> bool:
    def same(x, y) -> bool:
        return (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)) or x == y
    return len(a) == len(b) and all(r.keys() == s.keys() and all(same(r[k], s[k]) for k in r)
                                    for r, s in zip(a, b, strict=True))


class _Recording(InProcess):
    """InProcess that keeps each round's global weights as the server has them when the round is evaluated."""

    def evaluate(self, model, rnd, threshold, last, report):
        self.states[rnd] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        super().evaluate(model, rnd, threshold, last, report)


def _transport(splits, config) -> _Recording:
    global_scaler, scalers = _scalers(splits, config.scaling)
    rows = [torch.from_numpy(sc.transform(s.train)) for s, sc in zip(splits, scalers, strict=True)]
    transport = _Recording(rows, splits, scalers, global_scaler, config)
    transport.states = {}
    return transport


@pytest.mark.parametrize("model,threshold", [("ae", "local"), ("vae", "global"), ("svdd", "local")])
def test_rounds_continued_from_a_checkpointed_round_end_where_the_whole_run_ends(model, threshold):
    """What ``--resume`` relies on: rounds k+1..N started from round k's weights (sampled clients, every
    node's batches, the VAE's noise) give bit for bit the weights and history of rounds 1..N in one go,
    even after other code has drawn from PyTorch's global generator in between."""
    splits = hold_out(make_cloud_federation(3, 120, 6, seed=3), seed=42)
    config = replace(CONFIG, model=model, threshold=threshold)
    whole = _transport(splits, config)
    final, rows, _ = federated_rounds(whole, config, 6)
    k = 2
    torch.rand(1000)  # a restarted server's global generator is wherever its start-up left it
    np.random.rand(1000)
    again = _transport(splits, config)
    resumed, later, _ = federated_rounds(again, config, 6, hooks=(fedavg_aggregator, None, whole.states[k]),
                                         first_round=k + 1)
    assert [r["round"] for r in later] == [r["round"] for r in rows if r["round"] > k]
    assert _same_rows([r for r in rows if r["round"] > k], later)
    assert all(torch.equal(v, resumed.state_dict()[name]) for name, v in final.state_dict().items())


# -- real processes ---------------------------------------------------------------------------------------------
import test_flower  # noqa: E402
from test_flower import TIMEOUT, _client, _log, _server, _until, _wait  # noqa: E402

data, tls, procs = test_flower.data, test_flower.tls, test_flower.procs  # the same fixtures

ROUNDS = 5
ROUNDS_REJOIN = 30  # rounds of about a second: the run outlasts a killed node's heartbeats


def _checkpoint_round(run) -> int:
    from fedad_tutorial.errors import UserError
    from fedad_tutorial.flower.checkpoint import load_checkpoint

    try:
        return load_checkpoint(run).round
    except UserError:
        return 0


def _kill_group(proc) -> None:
    """``kill -9`` of the command's whole process group: nothing of it gets to clean up."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("secure", [True, False], ids=["tls", "insecure"])
def test_a_server_killed_after_a_round_resumes_to_the_uninterrupted_runs_model(data, tls, procs, tmp_path, secure):
    """Over TLS with node keys (or ``--insecure``, nodes known by ``--node-id`` and data), two clients, 5 rounds:
    the server is killed (``kill -9`` of its process group) once its checkpoint holds round 2; ``fedad server
    --resume`` with the same flags gets the same two nodes back (they waited for it) and writes the model and
    history of an uninterrupted run."""
    from fedad_tutorial.detector import Detector
    from fedad_tutorial.flower.processes import free_port, reachable

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    tls = tls if secure else None
    port = free_port()
    server = procs("whole", _server(whole, port, ROUNDS, tls))
    clients = [procs(f"whole{k}", _client(data, k, port, tls)) for k in (1, 2)]
    assert _wait(server) == 0, _log(tmp_path, "whole")
    assert [_wait(c, 60) for c in clients] == [0, 0]

    port = free_port()
    server = procs("cut", _server(cut, port, ROUNDS, tls))
    clients = [procs(f"cut{k}", _client(data, k, port, tls)) for k in (1, 2)]
    _until(lambda: _checkpoint_round(cut) >= 2 or server.poll() is not None, TIMEOUT, "round 2's checkpoint")
    _kill_group(server)
    killed_after = _checkpoint_round(cut)
    assert 2 <= killed_after < ROUNDS and not (cut / "summary.json").exists(), _log(tmp_path, "cut")
    assert (tmp_path / ".cut.flower").is_dir()  # the killed server's state (its owner is dead): the restart clears it
    _until(lambda: not reachable("127.0.0.1", port), 30, "the killed server's port to close")
    resumed = procs("resumed", [*_server(cut, port, ROUNDS, tls), "--resume", str(cut)])
    assert _wait(resumed) == 0, _log(tmp_path, "resumed")
    assert [_wait(c, 60) for c in clients] == [0, 0], _log(tmp_path, "cut1")
    assert f"resuming {cut} after round {killed_after}" in _log(tmp_path, "resumed")
    for k in (1, 2):
        assert "waiting up to 60 s (--wait-timeout) for it to come back" in _log(tmp_path, f"cut{k}")
    assert not (cut / "checkpoint.pt").exists()
    assert not (tmp_path / ".cut.flower").exists() and (cut / "flower" / "superlink.log").is_file()
    assert (cut / "history.csv").read_text() == (whole / "history.csv").read_text()
    a, b = (Detector.load(run / "model.pt") for run in (whole, cut))
    diff = max(float((a.model.state_dict()[n] - t).abs().max()) for n, t in b.model.state_dict().items())
    print(f"resumed after round {killed_after} of {ROUNDS}: max |weight difference| {diff:g}, "
          f"threshold {a.threshold!r} vs {b.threshold!r}")
    assert diff == 0 and a.threshold == b.threshold


@pytest.mark.slow
def test_a_killed_client_restarted_with_its_key_rejoins_and_one_not_restarted_is_dropped(data, tls, procs, tmp_path):
    """Over TLS, four clients, 30 rounds, ``--round-timeout 15``: clients 3 and 4 are killed (``kill -9`` of
    their process groups) once round 1 is checkpointed; client 3 starts again with the same key and takes part
    again within the next round after it was dropped; client 4 does not come back: the server says once that it
    dropped it, and finishes with the other three."""
    import json
    import re
    import shutil
    import time

    import pandas as pd

    from fedad_tutorial.flower.keys import generate_key
    from fedad_tutorial.flower.processes import free_port

    generate_key(tmp_path / "k4")
    (tmp_path / "keys").write_text("".join(p.read_text() for p in [*(tls / f"k{k}.pub" for k in (1, 2, 3)),
                                                                   tmp_path / "k4.pub"]))
    port, out = free_port(), tmp_path / "run"
    args = [a for a in _server(out, port, ROUNDS_REJOIN, tls, "--round-timeout", "15") if a != "--quiet"]
    args[args.index("--authorized-keys") + 1] = str(tmp_path / "keys")
    server = procs("server", args)
    client_args = {k: _client(data, k, port, tls) for k in (1, 2, 3)}
    shutil.copy(data / "node_3.csv", tmp_path / "node_4.csv")  # node 3's rows as a fourth node, with its own key
    client_args[4] = _client(tmp_path, 4, port, tls, key=3)
    client_args[4][client_args[4].index("--auth-key") + 1] = str(tmp_path / "k4")
    clients = {k: procs(f"client{k}", a) for k, a in client_args.items()}
    start = time.monotonic()
    _until(lambda: _checkpoint_round(out) >= 1 or server.poll() is not None, TIMEOUT, "round 1's checkpoint")
    assert server.poll() is None, _log(tmp_path, "server")
    from fedad_tutorial.flower.checkpoint import load_checkpoint

    # --min-clients 2 (so that two may go): the four started together, within the server's settling second
    assert len(load_checkpoint(out).nodes) == 4, _log(tmp_path, "server")
    for k in (3, 4):
        _kill_group(clients[k])
    killed = time.monotonic() - start
    stamps = {"killed": time.strftime("%H:%M:%S")}
    time.sleep(2.0)
    restarted = time.monotonic() - start
    stamps["restarted"] = time.strftime("%H:%M:%S")
    again = procs("client3-again", client_args[3])
    assert _wait(server) == 0, _log(tmp_path, "server")
    assert [_wait(c, 60) for c in (clients[1], clients[2], again)] == [0, 0, 0], _log(tmp_path, "client3-again")
    log = _log(tmp_path, "server")
    dropped = re.findall(r"fedad server: round (\d+): dropped (\S+) .*", log)
    rejoined = re.findall(r"fedad server: (\S+) .* rejoined at round (\d+)", log)
    summary = json.loads((out / "summary.json").read_text())["flower"]
    history = pd.read_csv(out / "history.csv")
    rounds = history.groupby("client")["round"].apply(list).to_dict()
    print(f"killed after {killed:.1f} s, node_3 restarted after {restarted:.1f} s; dropped: {dropped}; "
          f"rejoined: {rejoined}; rounds per client: {rounds}")
    print(stamps, *[line for line in (out / "flower" / "serverapp.log").read_text().splitlines()
                    if "dropped" in line or "rejoined" in line or "round" in line and "nodes train" in line],
          sep="\n")
    drop_round = {name: int(r) for r, name in dropped}
    assert set(drop_round) == {"node_4"} or set(drop_round) == {"node_3", "node_4"}, log
    assert summary["missing_clients"] == ["node_4"] and rounds["node_4"] == [1]
    if "node_3" in drop_round:  # killed while it trained: dropped after --round-timeout, back in a later round
        [(name, back)] = rejoined
        assert name == "node_3" and int(back) > drop_round["node_3"], log
        assert summary["rejoined"] == [f"node_3 (round {back})"]
    assert rounds["node_3"][-1] == ROUNDS_REJOIN and rounds["node_1"] == list(range(1, ROUNDS_REJOIN + 1))


# -- what --resume refuses ----------------------------------------------------------------------------------------
from test_hostile_deploy import BUSY, KIND, SPECIAL, dangling, guard, huge, snapshot, user_file  # noqa: E402

guard = guard  # the same fixture: a case that blocks fails instead of hanging
RESUME_ROUNDS = ["--rounds", "5"]


def _saved(run, *, rounds: int = 5, authentication: bool = False, round_: int = 2):
    """A checkpoint as ``fedad server --insecure --rounds ROUNDS --output-dir RUN`` writes it after ``round_``."""
    from fedad_tutorial.config import FederatedConfig
    from fedad_tutorial.flower.checkpoint import Checkpoint, NodeRecord, save_checkpoint, served
    from fedad_tutorial.flower.settings import FlowerSettings
    from fedad_tutorial.scaling import Scaler

    settings = served(FlowerSettings(config=FederatedConfig(rounds=rounds), output_dir=str(run.resolve())))
    state = settings.config.model_spec(4).build().state_dict()
    nodes = [NodeRecord(k, f"node_{k + 1}", "", 40, 20, ("a", "b", "c", "d"), True, True) for k in range(2)]
    history = [{"round": 1, "client": "node_1", "selected": True, "loss": 0.5, "f1": float("nan")}]
    checkpoint = Checkpoint(round_, settings.to_run_config(), state, history, Scaler(np.zeros(4, np.float32),
                            np.ones(4, np.float32)), nodes, [], authentication)
    return save_checkpoint(run, checkpoint)


def _argv(run, *extra: str) -> list[str]:
    return ["server", "--insecure", "--address", f"127.0.0.1:{BUSY.port}", "--quiet", *RESUME_ROUNDS,
            "--resume", str(run), *extra]


def _truncated(run):
    path = _saved(run)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


class _Payload:
    """An object whose unpickling runs code: it makes the folder ``pwned`` (the snapshot would show it)."""

    def __init__(self, where) -> None:
        self.where = str(where)

    def __reduce__(self):
        return os.mkdir, (self.where,)


def _pickled_object(run):
    _saved(run)
    torch.save({"format": 1, "round": _Payload(run / "pwned")}, run / "checkpoint.pt")


def _special(kind):
    def make(run):
        _saved(run)
        (run / "checkpoint.pt").unlink()
        SPECIAL[kind](run / "checkpoint.pt")
    return make


def _linked_checkpoint(run):
    _saved(run.parent / "elsewhere")
    run.mkdir()
    (run / "checkpoint.pt").symlink_to(run.parent / "elsewhere" / "checkpoint.pt")


def _huge_checkpoint(run, monkeypatch):
    from fedad_tutorial.flower import checkpoint

    monkeypatch.setattr(checkpoint, "MAX_CHECKPOINT_BYTES", 1 << 20)  # huge() writes 2 MiB (sparse)
    _saved(run)
    (run / "checkpoint.pt").unlink()
    huge(run / "checkpoint.pt")


def _complete(run):
    from fedad_tutorial.outputs import write_marker

    run.mkdir()
    write_marker(run, "test")
    (run / "summary.json").write_text('{"fedad_tutorial_version": "test"}\n')


REFUSED = [
    ("missing folder", lambda run: None, (), ("does not exist",)),
    ("a file", lambda run: user_file(run), (), ("is not a folder",)),
    ("a symlink to a run folder", lambda run: (_saved(run.parent / "real"), run.symlink_to(run.parent / "real")),
     (), ("symbolic link",)),
    ("an empty folder", lambda run: run.mkdir(), (), ("holds no checkpoint.pt",)),
    ("a complete run", _complete, (), ("complete run", "nothing to resume")),
    ("a dangling checkpoint symlink", lambda run: (run.mkdir(), dangling(run / "checkpoint.pt")), (),
     ("symbolic link",)),
    ("a live checkpoint symlink", _linked_checkpoint, (), ("symbolic link",)),
    *[(f"a {kind} as the checkpoint", _special(kind), (), (KIND[kind],)) for kind in SPECIAL],
    ("a truncated checkpoint", _truncated, (), ("not a checkpoint written by fedad server",)),
    ("garbage", lambda run: (_saved(run), (run / "checkpoint.pt").write_bytes(b"\0garbage" * 99)), (),
     ("not a checkpoint written by fedad server",)),
    ("a pickled object", _pickled_object, (), ("not a checkpoint written by fedad server",)),
    ("other settings", lambda run: _saved(run, rounds=7), (), ("--rounds 7 (checkpoint) vs 5 (now)",)),
    ("another security mode", lambda run: _saved(run, authentication=True), (), ("TLS and node keys",)),
    ("a round out of range", lambda run: _saved(run, round_=5), (), ("damaged (round 5 of 5)",)),
    ("--output-dir elsewhere", _saved, ("--output-dir", "elsewhere"), ("leave out --output-dir",)),
]


@pytest.mark.parametrize("name, make, extra, needles", REFUSED, ids=[c[0] for c in REFUSED])
def test_resume_refuses_in_one_line_and_touches_nothing(name, make, extra, needles, tmp_path, capsys, guard,
                                                        monkeypatch):
    from fedad_tutorial.cli import main

    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    make(run)
    before = snapshot(tmp_path)
    code = main(_argv(run, *extra))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("fedad server: error: "), err
    assert all(n in err for n in needles), err
    assert snapshot(tmp_path) == before


def test_resume_refuses_a_checkpoint_too_large_to_be_ours(tmp_path, capsys, guard, monkeypatch):
    from fedad_tutorial.cli import main

    run = tmp_path / "run"
    _huge_checkpoint(run, monkeypatch)
    before = snapshot(tmp_path)
    assert main(_argv(run)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is too large" in err and "(a checkpoint fedad writes)" in err, err
    assert snapshot(tmp_path) == before


def test_a_valid_checkpoint_gets_past_every_check_and_a_new_run_never_replaces_it(tmp_path, capsys, guard):
    """Accepted, ``--resume`` stops only at the taken port; without ``--resume`` the same folder is refused,
    since the new run would replace the only way to continue the old one."""
    from fedad_tutorial.cli import main

    run = tmp_path / "run"
    _saved(run)
    before = snapshot(tmp_path)
    assert main(_argv(run)) == 2
    assert "already in use" in capsys.readouterr().err
    fresh = [a for a in _argv(run) if a not in ("--resume", str(run))] + ["--output-dir", str(run)]
    assert main(fresh) == 2
    err = capsys.readouterr().err
    assert "holds an unfinished run (round 2 of 5)" in err and f"--resume {run}" in err, err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["simulate", "run"])
def test_simulate_and_run_never_replace_an_unfinished_server_run(command, tmp_path, capsys, guard):
    """The checkpoint is the only way to continue a killed server's run: the commands that write run folders
    without resuming refuse a folder holding one, in one line, before training, touching nothing."""
    from fedad_tutorial.cli import main

    run = tmp_path / "run"
    _saved(run)
    data = tmp_path / "data"
    assert main(["generate-data", "--num-nodes", "2", "--samples-per-node", "50", "--num-features", "4",
                 "--output-dir", str(data)]) == 0
    capsys.readouterr()
    before = snapshot(tmp_path)
    argv = [command, "--output-dir", str(run), "--rounds", "1", "--quiet"]
    argv += ["--data-dir", str(data)] if command == "simulate" else ["--num-nodes", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds an unfinished fedad server run" in err and f"--resume {run}" in err, err
    assert snapshot(tmp_path) == before


def test_a_checkpoint_holds_only_tensors_and_plain_containers(tmp_path):
    """``weights_only=True`` loads it (no code runs), and what comes back is what was saved."""
    from fedad_tutorial.flower.checkpoint import load_checkpoint

    path = _saved(tmp_path / "run")
    plain = torch.load(path, weights_only=True)
    assert plain["format"] == 1 and plain["round"] == 2
    done = load_checkpoint(tmp_path / "run")
    assert done.round == 2 and done.rounds == 5 and [n.name for n in done.nodes] == ["node_1", "node_2"]
    assert math.isnan(done.history[0]["f1"]) and done.history[0]["loss"] == 0.5


def test_a_client_waits_for_a_lost_server_then_gives_up_in_one_line(tmp_path, monkeypatch, capsys):
    """The server goes away after 3 messages and its port stays closed: the client says it waits, keeps
    trying for ``--wait-timeout`` s (here the preflight's retries are counted, not timed), then stops with one
    line and exit code 2; a server that comes back is joined again, and the messages are counted across both."""
    from fedad_tutorial.cli import main
    from fedad_tutorial.csvio import write_node_csv
    from fedad_tutorial.flower import deploy, preflight

    [node] = make_cloud_federation(1, 40, 4, seed=1)
    write_node_csv(tmp_path / "node_1.csv", node)
    sessions, waits = [], []

    def session(*args):
        sessions.append(args[10])  # messages answered before this session
        if len(sessions) == 1:
            raise deploy.ServerLost(3)
        if back:
            return f"node 1 (node_1.csv): training finished ({args[10] + 2} messages answered)"
        raise deploy.ServerLost(0)

    def check_server(host, port, root, wait):
        waits.append(wait)
        if len(waits) > 1 and not back:
            raise RuntimeError("cannot reach the fedad server")

    monkeypatch.setattr(deploy, "_supernode_session", session)
    monkeypatch.setattr(preflight, "check_server", check_server)
    argv = ["client", "--node-id", "1", "--data-path", str(tmp_path / "node_1.csv"), "--insecure",
            "--server-address", "127.0.0.1:1", "--wait-timeout", "7"]
    back = False
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "lost the fedad server at 127.0.0.1:1 after 3 message(s); waiting up to 7 s (--wait-timeout)" in out
    assert err == ("fedad client: error: node 1 (node_1.csv): the fedad server at 127.0.0.1:1 did not come back "
                   "within 7 s (--wait-timeout) after 3 message(s); giving up\n"), err
    assert waits[0] == 7 and 0 < waits[1] <= 7
    sessions.clear()
    waits.clear()
    back = True
    assert main(argv) == 0
    out, _ = capsys.readouterr()
    assert "answers again; joining it" in out and "training finished (5 messages answered)" in out
    assert sessions == [0, 3]
