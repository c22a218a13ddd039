"""Client-level differential privacy for FedAvg (DP-FedAvg) and its privacy accounting (notebook 10).

FedAvg keeps rows on the clients, but the weights a client sends still depend on its rows, and a
curious server (or anyone who sees the final model) can learn from them. *Client-level*
differential privacy bounds how much the released models can change when one whole client joins
or leaves the federation. DP-FedAvg (McMahan et al., 2018, "Learning differentially private
recurrent language models") does it in the server's aggregation step:

1. clip each client's update ``state - global`` to L2 norm at most ``C`` (one client's influence
   on the sum is then at most ``C``);
2. average the clipped updates with a **fixed** denominator ``n`` (the expected number of clients
   per round), not weighted by row counts;
3. add Gaussian noise with standard deviation ``sigma * C / n`` to every coordinate.

``sigma`` (the noise multiplier) and the share of clients sampled per round ``q`` fix the privacy
loss per round; :func:`epsilon` composes it over rounds with Opacus's Rényi-DP accountant and
returns the ``epsilon`` of an ``(epsilon, delta)`` guarantee. The accountant assumes each client
takes part in a round independently with probability ``q`` (Poisson sampling);
:func:`~fedad_tutorial.federated.run_federated` samples exactly ``round(q * K)`` clients, the usual
approximation in simulations.

The implementation is the package's own, :mod:`fedad_tutorial.privacy`, which this chapter module
names: the aggregator the notebook builds is the one ``fedad simulate --dp-clip C
--dp-noise-multiplier Z`` and ``fedad server`` run, so the same seed gives the same numbers.
"""

from __future__ import annotations

from fedad_tutorial.privacy import (
    clip_update,
    dp_fedavg_aggregator,
    epsilon,
    epsilon_curve,
    noise_std,
    round_generator,
)

__all__ = ["clip_update", "dp_fedavg_aggregator", "epsilon", "epsilon_curve", "noise_std", "round_generator"]
