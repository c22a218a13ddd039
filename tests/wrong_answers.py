"""Plausible wrong answers to the exercises, shared by the checker tests (``test_exercises.py`` and the
per-chapter ``test_hints_*.py``): each is a mistake a learner makes, and its checker must name it."""

from __future__ import annotations

import numpy as np
import torch

from fedad_tutorial.chapters.forest import average_path_length
from fedad_tutorial.federated import fedavg


def fedavg_dividing_by(states: list[dict[str, torch.Tensor]], weights: list[float],
                       total: float | None = None) -> dict[str, torch.Tensor]:
    """Exercise 4.1's weighted average, divided by ``total`` (the sum of the weights, unless given)."""
    total = float(sum(weights)) if total is None else total
    return {k: sum(w / total * s[k] for w, s in zip(weights, states, strict=True)) for k in states[0]}


def fedavg_in_place(states: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """Exercise 4.1 right, but it changes the first client's state dict."""
    result = fedavg(states, weights)
    states[0][next(iter(states[0]))].add_(1.0)
    return result


def path_length_no_special_cases(n: float) -> float:
    """Exercise 7.1's c(n) without the n <= 2 cases."""
    return 2.0 * (np.log(max(n - 1, 1e-300)) + np.euler_gamma) - 2.0 * (n - 1.0) / n


def pooled_depths(client_scores, tree_counts, psi: int, weighted: bool = True) -> np.ndarray:
    """Exercise 7.2's federated score from the clients' mean depths (unweighted: each client counts once)."""
    c = average_path_length(psi)
    depths = np.stack([-np.log2(-np.asarray(s)) * c for s in client_scores])
    weights = np.asarray(tree_counts if weighted else np.ones(len(tree_counts)), dtype=np.float64)
    return -(2.0 ** (-(weights[:, None] * depths).sum(axis=0) / weights.sum() / c))
