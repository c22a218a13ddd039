"""Deep SVDD's centre, agreed by the federation without any row leaving a client.

The centre ``c`` is the mean embedding of all training rows under the initial (random) weights,
computed once before the first round. A mean of rows spread over clients is a sum of per-client
sums divided by a sum of counts, so each client sends two things, its embedding sum and its row
count (:func:`embedding_sums`), and the server divides (:func:`center_from_sums`). The result is the
pooled mean, as if the rows were in one place.

Coordinates close to zero are pushed to ``+eps`` or ``-eps`` (keeping their sign; an exact zero
goes to ``+eps``), the rule of Ruff et al. (2018): a ReLU network can output exactly zero in a
coordinate for every row, and a centre of zero there would be matched by silencing that unit, not
by learning anything about the rows.

>>> from fedad_tutorial.models import ModelSpec
>>> _ = torch.manual_seed(0)
>>> model = ModelSpec(kind="svdd", input_dim=3, hidden=(4,), latent_dim=2).build()
>>> rows = [torch.randn(5, 3), torch.randn(7, 3)]
>>> c = federated_center(model, rows)
>>> bool(torch.allclose(c, center_from_sums(*zip(embedding_sums(model, torch.cat(rows)), strict=True))))
True
>>> bool((c.abs() >= 0.1).all())
True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fedad_tutorial.errors import UserError

#: Ruff et al.'s margin: no centre coordinate is closer to zero than this.
CENTER_EPS = 0.1


@torch.no_grad()
def embedding_sums(model: nn.Module, rows: torch.Tensor) -> tuple[torch.Tensor, int]:
    """What one client sends for the centre: the sum of its rows' embeddings (float64) and its row count.

    ``rows`` are the client's scaled training rows, exactly those it trains on.
    """
    return model.encode(rows).double().sum(dim=0), int(rows.shape[0])


def center_from_sums(sums: Sequence[torch.Tensor], counts: Sequence[int], eps: float = CENTER_EPS) -> torch.Tensor:
    """The server's side: the weighted mean ``sum(sums) / sum(counts)`` (float32), with every
    coordinate whose magnitude is below ``eps`` moved to ``+eps`` or ``-eps`` by its sign (0 to ``+eps``)."""
    if not (eps >= 0.0):
        raise UserError(f"the centre margin eps must be at least 0, got {eps!r}")
    total = sum(int(n) for n in counts)
    if len(sums) != len(counts) or total < 1:
        raise UserError("the centre needs each client's embedding sum and row count, and at least one row")
    center = torch.stack([s.double() for s in sums]).sum(dim=0) / total
    if not torch.isfinite(center).all():
        raise UserError("the centre is not finite: an embedding sum holds NaN or infinite values")
    small = center.abs() < eps
    center[small] = torch.where(center[small] < 0, -eps, eps).to(center.dtype)
    return center.float()


def federated_center(model: nn.Module, client_rows: Sequence[torch.Tensor], eps: float = CENTER_EPS) -> torch.Tensor:
    """The centre of ``model`` (its current weights) over the clients' scaled training rows:
    :func:`center_from_sums` of each client's :func:`embedding_sums`, as one process runs it."""
    sums, counts = zip(*(embedding_sums(model, rows) for rows in client_rows), strict=True)
    return center_from_sums(sums, counts, eps)
