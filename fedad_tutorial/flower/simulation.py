"""The same ServerApp and ClientApp in one process: a Flower simulation (Ray backend)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace

from fedad_tutorial.federated import FederationResult
from fedad_tutorial.flower.client_app import make_client_app
from fedad_tutorial.flower.server_app import make_server_app
from fedad_tutorial.flower.settings import FlowerSettings

#: Ray gives its node a fixed 30 s to start; on a busy machine that can run out before any training.
#: The run is seeded, so trying again changes no number.
STARTUP_ATTEMPTS = 3


def backend_config(num_clients: int, cores: int | None = None) -> dict:
    """One CPU per simulated client (and no GPU), and Ray told it has ``cores - 1`` CPUs (at least one, at most one
    per client; ``cores`` defaults to the machine's): that many Ray workers play the SuperNodes, each serving its share
    of them one after another.

    Every worker starts a Python process and imports PyTorch, which on a small machine costs more than the
    training; one core is left for the ServerApp and Ray itself. The numbers do not depend on it (every node is
    seeded by its index)."""
    workers = max(1, min(num_clients, (cores or os.cpu_count() or 1) - 1))
    return {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": workers, "logging_level": "error", "log_to_driver": False}}


def run_flower_simulation(data_paths: Sequence[str], settings: FlowerSettings, quiet: bool = True) -> FederationResult:
    """Train with ``flwr.simulation.run_simulation``: one simulated SuperNode per CSV in ``data_paths``
    (node ``k`` gets the seeds of the ``k``-th client of ``run_federated``)."""
    from flwr.simulation import run_simulation

    if quiet:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    settings = replace(settings, min_clients=min(settings.min_clients, len(data_paths)))
    for attempt in range(1, STARTUP_ATTEMPTS + 1):
        results: list[FederationResult] = []
        try:
            run_simulation(make_server_app(settings, results), make_client_app([str(p) for p in data_paths]),
                           num_supernodes=len(data_paths), backend_config=backend_config(len(data_paths)))
        except RuntimeError:
            if attempt == STARTUP_ATTEMPTS:
                raise
        if results:
            return results[0]
        logging.getLogger(__name__).warning("the Flower simulation ended without a result (attempt %d of %d)",
                                            attempt, STARTUP_ATTEMPTS)
    raise RuntimeError("the Flower simulation ended without a result (see the log above)")
