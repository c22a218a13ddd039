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
def test_a_server_killed_after_a_round_resumes_to_the_uninterrupted_runs_model(data, tls, procs, tmp_path):
    """Over TLS with node keys, two clients, 5 rounds: the server is killed (``kill -9`` of its process group)
    once its checkpoint holds round 2; ``fedad server --resume`` with the same flags gets the same two nodes
    back (they waited for it) and writes the model and history of an uninterrupted run."""
    from fedad_tutorial.detector import Detector
    from fedad_tutorial.flower.processes import free_port, reachable

    whole, cut = tmp_path / "whole", tmp_path / "cut"
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
    _until(lambda: not reachable("127.0.0.1", port), 30, "the killed server's port to close")
    resumed = procs("resumed", [*_server(cut, port, ROUNDS, tls), "--resume", str(cut)])
    assert _wait(resumed) == 0, _log(tmp_path, "resumed")
    assert [_wait(c, 60) for c in clients] == [0, 0], _log(tmp_path, "cut1")
    assert f"resuming {cut} after round {killed_after}" in _log(tmp_path, "resumed")
    for k in (1, 2):
        assert "waiting up to 60 s (--wait-timeout) for it to come back" in _log(tmp_path, f"cut{k}")
    assert not (cut / "checkpoint.pt").exists()
    assert (cut / "history.csv").read_text() == (whole / "history.csv").read_text()
    a, b = (Detector.load(run / "model.pt") for run in (whole, cut))
    diff = max(float((a.model.state_dict()[n] - t).abs().max()) for n, t in b.model.state_dict().items())
    print(f"resumed after round {killed_after} of {ROUNDS}: max |weight difference| {diff:g}, "
          f"threshold {a.threshold!r} vs {b.threshold!r}")
    assert diff == 0 and a.threshold == b.threshold
