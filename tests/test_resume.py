"""``fedad server --resume``: a killed server's run continues from its checkpoint and ends where an
uninterrupted run ends; clients wait for a restarting server; a killed client rejoins or is dropped.

The fast tests check the round loop's resumption in one process, the checkpoint's file format and every
refusal of ``--resume``; the slow ones kill real processes (``kill -9`` of a whole process group).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from fedad_tutorial.data import hold_out, make_cloud_federation
from fedad_tutorial.federated import (
    RECOMMENDED,
    InProcess,
    _scalers,
    federated_rounds,
    fedavg_aggregator,
)

CONFIG = replace(RECOMMENDED, rounds=4, local_epochs=1, batch_size=32, engine="loop", fraction=0.67)


def _transport(splits, config):
    global_scaler, scalers = _scalers(splits, config.scaling)
    rows = [torch.from_numpy(sc.transform(s.train)) for s, sc in zip(splits, scalers, strict=True)]
    return InProcess(rows, splits, scalers, global_scaler, config)


def _same_rows(a: list[dict], b: list[dict]) -> bool:
    def same(x, y) -> bool:
        return (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)) or x == y
    return len(a) == len(b) and all(r.keys() == s.keys() and all(same(r[k], s[k]) for k in r) for r, s in zip(a, b))


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
