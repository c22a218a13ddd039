"""Local training: the one place where a model takes gradient steps on a client's rows.

Federated rounds, the centralized and local-only baselines and the Flower client all call
:func:`train_local`. Randomness comes from an explicit :class:`torch.Generator` per client and
round (:func:`client_generator`), and the batch order and VAE noise of a round are drawn up front
by :func:`round_plan`; that is what makes runs reproducible and lets a vectorized engine replay the
exact same steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedad_tutorial.params import check, default


@dataclass(frozen=True)
class LocalTraining:
    """How a client trains in one round; the defaults are the configuration's (declared once, in
    :mod:`fedad_tutorial.params`), trimmed training included: pass ``trim=0.0`` for plain steps."""

    epochs: int = default("local_epochs")
    batch_size: int = default("batch_size")
    lr: float = default("lr")
    trim: float = default("trim")  # share of each batch's highest-loss rows left out of the step (0: plain training)

    def __post_init__(self) -> None:  # the ranges are the configuration's (declared once, in params)
        for name, value in (("local_epochs", self.epochs), ("batch_size", self.batch_size), ("lr", self.lr),
                            ("trim", self.trim)):
            check(name, value)


def client_generator(seed: int, round_idx: int, client_idx: int) -> torch.Generator:
    """A generator that depends only on (seed, round, client): sampling other clients changes nothing."""
    state = np.random.SeedSequence([int(seed), int(round_idx), int(client_idx)]).generate_state(1)
    gen = torch.Generator()
    gen.manual_seed(int(state[0]))
    return gen


@dataclass
class RoundPlan:
    """A client's round, drawn up front: one row permutation per epoch and the VAE's noise."""

    permutations: torch.Tensor  # (epochs, n) row order of each epoch
    noise: torch.Tensor | None  # (epochs, n, latent) standard-normal draws, or None for an AE

    def batches(self, batch_size: int):
        """Yield ``(row_indices, noise_or_None)`` for every step of the round, in order."""
        epochs, n = self.permutations.shape
        for e in range(epochs):
            for start in range(0, n, batch_size):
                idx = self.permutations[e, start:start + batch_size]
                noise = None if self.noise is None else self.noise[e, start:start + batch_size]
                yield idx, noise


def round_plan(n: int, epochs: int, latent_dim: int | None, gen: torch.Generator) -> RoundPlan:
    """Draw a round's permutations, then (for a VAE, ``latent_dim`` set) its noise, from ``gen``."""
    perms = torch.stack([torch.randperm(n, generator=gen) for _ in range(epochs)])
    noise = None if latent_dim is None else torch.randn(epochs, n, latent_dim, generator=gen)
    return RoundPlan(perms, noise)


def needs_noise(model: nn.Module) -> int | None:
    """The latent size if the model samples noise during training (a VAE), else None."""
    return model.spec.latent_dim if model.spec.kind == "vae" else None


def train_local(model: nn.Module, rows: torch.Tensor, config: LocalTraining,
                gen: torch.Generator) -> float:
    """Train ``model`` in place on ``rows`` with Adam; return the mean training loss of the round.

    A fresh optimizer per call: in FedAvg a client's optimizer state does not outlive its round.
    With ``config.trim > 0`` each step uses a trimmed loss (:func:`batch_loss`).
    """
    plan = round_plan(rows.shape[0], config.epochs, needs_noise(model), gen)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    model.train()
    total, steps = 0.0, 0
    for idx, noise in plan.batches(config.batch_size):
        optimizer.zero_grad()
        loss = batch_loss(model, rows[idx], noise, config.trim)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
        steps += 1
    model.eval()
    return total / max(steps, 1)


def batch_loss(model: nn.Module, batch: torch.Tensor, noise: torch.Tensor | None, trim: float = 0.0) -> torch.Tensor:
    """The loss of one training step: ``model.loss``, or with ``trim > 0`` a trimmed mean.

    Trimming drops the ``floor(trim * rows)`` rows with the highest loss in the batch (a least-trimmed-
    squares step). Training rows are unlabelled and may hold a few anomalies; left in, the model
    learns to reconstruct them too. Rows the model currently fits worst are the likeliest anomalies,
    so leaving them out of the gradient keeps them unlearned. ``trim`` should be at least the
    expected contamination; on a clean batch it only costs the hardest few normal rows.

    >>> from fedad_tutorial.models import ModelSpec
    >>> _ = torch.manual_seed(0)
    >>> model = ModelSpec(input_dim=3, latent_dim=1).build()
    >>> x = torch.cat([torch.zeros(9, 3), torch.full((1, 3), 100.0)])  # one far-away row
    >>> bool(batch_loss(model, x, None, trim=0.1) < 1.0 < batch_loss(model, x, None))
    True
    """
    if trim <= 0.0:
        return model.loss(batch, noise)
    per_row = model.row_loss(batch, noise)
    return torch.topk(per_row, kept_rows(per_row.numel(), trim), largest=False, sorted=False).values.mean()


def kept_rows(n: int, trim: float) -> int:
    """How many of a batch's ``n`` rows a trimmed step keeps: all but ``floor(trim * n)``."""
    return n - int(trim * n)


@torch.no_grad()
def score_rows(model: nn.Module, rows: torch.Tensor, method: str | None = None) -> torch.Tensor:
    """Anomaly scores of ``rows`` (already scaled), in evaluation mode."""
    model.eval()
    return model.score(rows, method)
