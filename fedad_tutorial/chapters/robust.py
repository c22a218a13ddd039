"""Poisoning attacks on FedAvg and robust aggregation rules (notebook 11).

FedAvg trusts every client: one client that sends a huge or a sign-flipped update moves the
weighted average wherever it likes. The rules here are drop-in :data:`~fedad_tutorial.federated.
Aggregator` s for :func:`~fedad_tutorial.federated.run_federated` that limit one client's influence:

- :func:`median_aggregator`: the coordinate-wise median of the clients' weights;
- :func:`trimmed_mean_aggregator`: per coordinate, drop the largest and smallest values, average the rest;
- :func:`norm_clipping_aggregator`: shrink each client's update (its weights minus the global
  weights) to at most a given L2 norm, then FedAvg.

:func:`scaled_update_attack` is an :data:`~fedad_tutorial.federated.UpdateHook` that turns one
client malicious (model poisoning: it sends ``global + factor * (its weights - global)``).
:func:`type_recall` measures how many held-out rows of one anomaly type a model flags; with
:class:`~fedad_tutorial.federated.RecordingAggregator`, which keeps the global weights of every
round, a notebook can follow an attack round by round.

>>> g = {"w": torch.zeros(3)}
>>> states = [{"w": torch.tensor([1.0, 2.0, 3.0])}, {"w": torch.tensor([2.0, 2.0, 2.0])},
...           {"w": torch.tensor([100.0, -50.0, 2.5])}]
>>> median_aggregator(g, states, [1, 1, 1], 1)["w"]
tensor([2.0000, 2.0000, 2.5000])
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fedad_tutorial.data import Split
from fedad_tutorial.errors import UserError
from fedad_tutorial.federated import Aggregator, UpdateHook, fedavg
from fedad_tutorial.scaling import Scaler
from fedad_tutorial.thresholds import percentile_threshold
from fedad_tutorial.training import score_rows

StateDict = dict[str, torch.Tensor]


def _stacked(states: Sequence[StateDict], key: str) -> torch.Tensor:
    """The clients' values of one tensor stacked along a new first axis, in float64."""
    return torch.stack([s[key].double() for s in states])


def _check(states: Sequence[StateDict]) -> None:
    if not states:
        raise UserError("aggregation needs at least one client update")


def median_aggregator(global_state: StateDict, states: list[StateDict], weights: list[float],
                      round_idx: int) -> StateDict:
    """Coordinate-wise median of the clients' weights (an :data:`Aggregator`; row counts are ignored).

    Each coordinate of the result is the median of that coordinate over clients; with an even
    number of clients, the mean of the two middle values (numpy's convention). Fewer than half the
    clients cannot drag a coordinate outside the range of the honest clients' values.
    """
    _check(states)
    out = {}
    for key in states[0]:
        values = _stacked(states, key).sort(dim=0).values
        n = values.shape[0]
        mid = (values[(n - 1) // 2] + values[n // 2]) / 2
        out[key] = mid.to(states[0][key].dtype)
    return out


def trimmed_mean_aggregator(trim_fraction: float) -> Aggregator:
    """An :data:`Aggregator`: per coordinate, drop the ``floor(trim_fraction * n)`` largest and as
    many smallest of the ``n`` clients' values, and average the rest (row counts are ignored).

    ``trim_fraction`` must be in ``[0, 0.5)``; 0 gives the plain (unweighted) mean. It tolerates up
    to ``floor(trim_fraction * n)`` attackers per coordinate.
    """
    if not 0.0 <= trim_fraction < 0.5:
        raise UserError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")

    def trimmed_mean(global_state: StateDict, states: list[StateDict], weights: list[float],
                     round_idx: int) -> StateDict:
        _check(states)
        n = len(states)
        cut = int(math.floor(trim_fraction * n))
        out = {}
        for key in states[0]:
            values = _stacked(states, key).sort(dim=0).values
            out[key] = values[cut:n - cut].mean(dim=0).to(states[0][key].dtype)
        return out

    return trimmed_mean


def update_norm(state: StateDict, global_state: StateDict) -> float:
    """The L2 norm of a client's update, ``state - global_state``, over all its tensors together."""
    return math.sqrt(sum(float(((state[k].double() - global_state[k].double()) ** 2).sum())
                         for k in global_state))


def clip_update(state: StateDict, global_state: StateDict, max_norm: float) -> StateDict:
    """``global + delta * min(1, max_norm / ||delta||)`` with ``delta = state - global``: the same
    weights if the update is small enough, else the update shrunk to norm ``max_norm``."""
    norm = update_norm(state, global_state)
    scale = min(1.0, max_norm / norm) if norm > 0 else 1.0
    return {k: (global_state[k].double() + scale * (state[k].double() - global_state[k].double())).to(state[k].dtype)
            for k in global_state}


def norm_clipping_aggregator(max_norm: float) -> Aggregator:
    """An :data:`Aggregator`: clip each client's update to L2 norm ``max_norm`` (:func:`clip_update`),
    then FedAvg the clipped weights (weighted by row counts).

    One client's influence on the new global weights is then at most its weight share times
    ``max_norm``, however large an update it sends.
    """
    if not max_norm > 0:
        raise UserError(f"max_norm must be positive, got {max_norm}")

    def clipped_fedavg(global_state: StateDict, states: list[StateDict], weights: list[float],
                       round_idx: int) -> StateDict:
        _check(states)
        return fedavg([clip_update(s, global_state, max_norm) for s in states], weights)

    return clipped_fedavg


def scaled_update_attack(client: int, factor: float) -> UpdateHook:
    """An :data:`UpdateHook` that makes client ``client`` (its index) send ``global + factor * (state - global)``.

    ``factor = 10`` boosts its update tenfold (model replacement); ``factor = -1`` flips its sign;
    every other client's weights pass unchanged.
    """

    def attack(client_index: int, state: StateDict, global_state: StateDict, round_idx: int) -> StateDict:
        if client_index != client:
            return state
        return {k: (global_state[k].double() + factor * (state[k].double() - global_state[k].double()))
                .to(state[k].dtype) for k in global_state}

    return attack


def type_recall(model: nn.Module, splits: Sequence[Split], scaler: Scaler, anomaly_type: str,
                percentile: float = 95.0, state: StateDict | None = None) -> float:
    """Share of the held-out rows of ``anomaly_type`` (pooled over ``splits``) that ``model`` flags.

    Each client flags a test row when its score is above the ``percentile``-th percentile of its own
    training scores (the local threshold). With ``state``, a copy of ``model`` loaded with those
    weights is evaluated instead. NaN if no held-out row has that type.
    """
    if state is not None:
        model = copy.deepcopy(model)
        model.load_state_dict(state)
    hits, total = 0, 0
    for split in splits:
        if split.test_types is None:
            raise UserError(f"{split.name}: held-out rows have no anomaly types")
        mask = np.asarray(split.test_types) == anomaly_type
        if not mask.any():
            continue
        train = score_rows(model, torch.from_numpy(scaler.transform(split.train))).numpy()
        test = score_rows(model, torch.from_numpy(scaler.transform(split.test[mask]))).numpy()
        hits += int((test > percentile_threshold(train, percentile)).sum())
        total += int(mask.sum())
    return hits / total if total else math.nan
