"""Shared fixtures: the default federation trained once per test session (it is the slow part)."""

from __future__ import annotations

import pytest
import torch

from fedad_tutorial.data import hold_out, make_cloud_federation
from fedad_tutorial.federated import FederatedConfig, run_federated

torch.set_num_threads(1)


def default_splits(seed: int = 42):
    """The `fedad run` federation: 10 generated nodes, 30% of each held out (same seeds as the CLI)."""
    return hold_out(make_cloud_federation(seed=seed), 0.3, seed)


@pytest.fixture(scope="session")
def reference_runs():
    """Federated, centralized and local-only runs of the reference configuration, same held-out rows."""
    splits = default_splits()
    config = FederatedConfig(threshold="local")
    return {mode: run_federated(splits, config, mode=mode, progress=False)
            for mode in ("federated", "centralized", "local")}
