"""The anomaly detectors: a plain autoencoder, a VAE trained with an ELBO, and Deep SVDD.

All three share one interface so training, federation and scoring never branch on the type:

- ``loss(x, noise=None)`` the training objective for a batch (a scalar), the mean of
  ``row_loss(x, noise)`` (one value per row, which trimmed training ranks);
- ``score(x, method=None)`` one anomaly score per row, higher = more anomalous.

For the VAE, ``noise`` is the standard-normal draw of the reparameterisation trick; passing it
in (instead of sampling inside) lets every training engine reproduce the same run exactly.

The objectives are stated once, as functions of the networks' outputs (:func:`squared_error`,
:func:`bound_logvar`, :func:`reparameterize`, :func:`elbo_rows`, :func:`squared_distance`). Each
has a ``*_backward`` next to it, its gradient written out, for the vectorized engine, which
backpropagates through its batched layers by hand (autograd costs more than the arithmetic at this
size); the tests check each against autograd on the function it differentiates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from fedad_tutorial.errors import UserError
from fedad_tutorial.params import check, default

#: The models that are one network trained in rounds (the others hold a forest).
NETWORK_KINDS = ("ae", "vae", "svdd")
#: The widest input a model accepts (a guard against absurd sizes, e.g. in a damaged model file).
MAX_INPUT_DIM = 100_000
SCORE_METHODS = {"ae": ("reconstruction",), "vae": ("reconstruction", "elbo"), "svdd": ("distance",),
                 "iforest": ("isolation",), "ensemble": ("calibrated",)}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model's architecture (saved with the weights); the defaults
    are the configuration's (declared once, in :mod:`fedad_tutorial.params`)."""

    kind: str = default("model")
    input_dim: int = 30
    hidden: tuple[int, ...] = default("hidden")
    latent_dim: int = default("latent_dim")
    beta: float = default("beta")  # VAE only (ignored otherwise): weight of the KL term in the ELBO

    def __post_init__(self) -> None:  # the ranges are the configuration's (declared once, in params)
        check("model", self.kind)
        object.__setattr__(self, "hidden", tuple(self.hidden))
        for h in self.hidden:
            check("hidden", h)
        check("latent_dim", self.latent_dim)
        check("beta", self.beta)
        if not (isinstance(self.input_dim, int) and 1 <= self.input_dim <= MAX_INPUT_DIM):
            raise UserError(f"input_dim must be a whole number in [1, {MAX_INPUT_DIM}], got {self.input_dim!r}")

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden": list(self.hidden)}

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        return cls(**{**data, "hidden": tuple(data["hidden"])})

    def build(self) -> Autoencoder | VAE | DeepSVDD:
        """A fresh network of this architecture. A forest (``iforest``, or an ``ensemble``'s forest) is grown
        from rows, not built: :mod:`fedad_tutorial.forest` and :mod:`fedad_tutorial.ensemble` make those."""
        if self.kind not in NETWORK_KINDS:
            raise UserError(f"a {self.kind} model is grown from the clients' trees, not built from a spec")
        return {"ae": Autoencoder, "vae": VAE, "svdd": DeepSVDD}[self.kind](self)


# --- the objectives ---------------------------------------------------------------------------------
#: The VAE's log-variance is clamped to this range (a guard against exp overflow early in training).
LOGVAR_RANGE = (-10.0, 10.0)


def squared_error(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Elementwise squared reconstruction error; its mean over a row's features is the autoencoder's
    loss and score (``mean(dim=-1)``), and over a batch its training loss (``mean()``)."""
    return (recon - x) ** 2


def squared_error_backward(recon: torch.Tensor, x: torch.Tensor, row_weights: torch.Tensor) -> torch.Tensor:
    """d/d``recon`` of ``sum(row_weights * squared_error(recon, x).mean(dim=-1))`` (rows on dim -2)."""
    return (recon - x) * (row_weights.unsqueeze(-1) * (2.0 / x.shape[-1]))


def bound_logvar(raw: torch.Tensor) -> torch.Tensor:
    """The log-variance the VAE uses: the ``to_logvar`` output clamped to :data:`LOGVAR_RANGE`."""
    return raw.clamp(*LOGVAR_RANGE)


def bound_logvar_backward(raw: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Gradient through :func:`bound_logvar` (none where the clamp is active, as autograd's ``clamp``)."""
    low, high = LOGVAR_RANGE
    return grad * ((raw >= low) & (raw <= high))


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The latent sample ``z = mu + sigma * noise`` (the reparameterisation trick)."""
    return mu + torch.exp(0.5 * logvar) * noise


def reparameterize_backward(logvar: torch.Tensor, noise: torch.Tensor,
                            grad_z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of :func:`reparameterize` with respect to ``mu`` and ``logvar``, given d/d``z``."""
    return grad_z, 0.5 * grad_z * noise * torch.exp(0.5 * logvar)


def kl_rows(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Each row's ``KL(q(z|x) || N(0, I))`` for a diagonal Gaussian ``q`` with mean ``mu``, log-variance ``logvar``."""
    return 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(dim=-1)


def elbo_rows(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
              beta: float) -> torch.Tensor:
    """Each row's negative ELBO: ``||x - recon||^2 / 2`` (a unit-variance Gaussian likelihood, constants
    dropped) plus ``beta`` times :func:`kl_rows`."""
    return 0.5 * squared_error(recon, x).sum(dim=-1) + beta * kl_rows(mu, logvar)


def elbo_rows_backward(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float,
                       row_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``sum(row_weights * elbo_rows(...))`` with respect to ``recon``, ``mu`` and ``logvar``
    (the last two through the KL term only; :func:`reparameterize_backward` adds the sample's share)."""
    w = row_weights.unsqueeze(-1)
    return (recon - x) * w, (beta * w) * mu, (0.5 * beta * w) * (logvar.exp() - 1.0)


def squared_distance(z: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """Each row's squared Euclidean distance ``||z - center||^2`` (summed over dim -1): Deep SVDD's
    loss and score."""
    return ((z - center) ** 2).sum(dim=-1)


def squared_distance_backward(z: torch.Tensor, center: torch.Tensor, row_weights: torch.Tensor) -> torch.Tensor:
    """d/d``z`` of ``sum(row_weights * squared_distance(z, center))`` (rows on dim -2)."""
    return (z - center) * (2.0 * row_weights.unsqueeze(-1))


# --- the models -------------------------------------------------------------------------------------

def _mlp(sizes: list[int], bias: bool = True) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """Encoder ``input-64-32-latent`` and a mirrored decoder; scored by reconstruction MSE.

    >>> model = ModelSpec(kind="ae", input_dim=5, latent_dim=2).build()
    >>> model.score(torch.zeros(3, 5)).shape
    torch.Size([3])
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = _mlp([spec.input_dim, *spec.hidden, spec.latent_dim])
        self.decoder = _mlp([spec.latent_dim, *reversed(spec.hidden), spec.input_dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def row_loss(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """The training objective of each row (its reconstruction MSE); ``loss`` is their mean."""
        return squared_error(self(x), x).mean(dim=-1)

    def loss(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        # equal to row_loss(x).mean(); one reduction, as before, so untrimmed runs stay bit-identical
        return squared_error(self(x), x).mean()

    def score(self, x: torch.Tensor, method: str | None = None) -> torch.Tensor:
        check_score_method("ae", method)
        return self.row_loss(x)


class VAE(nn.Module):
    """Variational autoencoder with a Gaussian encoder, trained by maximising the ELBO.

    Loss per row: ``||x - decoder(z)||^2 / 2 + beta * KL(q(z|x) || N(0, I))`` with
    ``z = mu + sigma * noise`` (a unit-variance Gaussian likelihood, constants dropped), averaged
    over the batch. Scores: ``"elbo"`` (default) the negative ELBO of a row with ``z = mu``;
    ``"reconstruction"`` the MSE of ``decoder(mu)``, comparable to the autoencoder's.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = _mlp([spec.input_dim, *spec.hidden])
        self.encoder.append(nn.ReLU())
        self.to_mu = nn.Linear(spec.hidden[-1] if spec.hidden else spec.input_dim, spec.latent_dim)
        self.to_logvar = nn.Linear(spec.hidden[-1] if spec.hidden else spec.input_dim, spec.latent_dim)
        self.decoder = _mlp([spec.latent_dim, *reversed(spec.hidden), spec.input_dim])

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.to_mu(h), bound_logvar(self.to_logvar(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of the latent mean (deterministic)."""
        mu, _ = self.encode(x)
        return self.decoder(mu)

    def _elbo_rows(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        mu, logvar = self.encode(x)
        z = mu if noise is None else reparameterize(mu, logvar, noise)
        return elbo_rows(self.decoder(z), x, mu, logvar, self.spec.beta)

    def row_loss(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Each row's negative ELBO with ``z = mu + sigma * noise``; ``loss`` is their mean."""
        if noise is None:
            noise = torch.randn(x.shape[0], self.spec.latent_dim)
        return self._elbo_rows(x, noise)

    def loss(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.row_loss(x, noise).mean()

    def score(self, x: torch.Tensor, method: str | None = None) -> torch.Tensor:
        method = check_score_method("vae", method)
        if method == "reconstruction":
            return squared_error(self(x), x).mean(dim=-1)
        return self._elbo_rows(x, None)


class DeepSVDD(nn.Module):
    """Deep SVDD (Ruff et al., 2018): a network that maps normal rows close to a fixed centre.

    One-class training pulls every training row's embedding ``encode(x)`` towards ``center``; the
    loss and the score of a row are its squared distance ``||encode(x) - center||^2``. Rows unlike
    the training rows land farther away. There is no decoder: nothing is reconstructed.

    The encoder ``input-*hidden-latent`` has **no bias** and **no bounded activation** (ReLU
    between layers, nothing after the last). With a bias, the network could zero its weights and
    output the bias, a constant equal to the centre: zero loss for every row, normal or not (the
    hypersphere collapse). A bounded activation (sigmoid, tanh) saturates to a constant the same
    way. Bias-free linear layers and ReLU keep ``encode(0) = 0``, so a constant map is only
    reachable if the centre is 0, which :func:`~fedad_tutorial.center.center_from_sums` rules out.

    ``center`` is a buffer, not a parameter: it is saved with the weights (``state_dict``), never
    trained, and equal on every client, so FedAvg carries it through unchanged. It is zero until
    set; :func:`~fedad_tutorial.federated.run_federated` sets it before the first round to the
    mean embedding of the training rows under the initial weights
    (:func:`~fedad_tutorial.center.federated_center`).

    >>> model = ModelSpec(kind="svdd", input_dim=5, hidden=(4,), latent_dim=2).build()
    >>> [name for name, _ in model.named_parameters()], tuple(model.center.shape)
    (['encoder.0.weight', 'encoder.2.weight'], (2,))
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = _mlp([spec.input_dim, *spec.hidden, spec.latent_dim], bias=False)
        self.register_buffer("center", torch.zeros(spec.latent_dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding of each row."""
        return self.encoder(x)

    def row_loss(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Each row's squared distance to the centre; ``loss`` is their mean (``noise`` is unused)."""
        return squared_distance(self.encoder(x), self.center)

    def loss(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.row_loss(x).mean()

    def score(self, x: torch.Tensor, method: str | None = None) -> torch.Tensor:
        check_score_method("svdd", method)
        return self.row_loss(x)


def fixed_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's buffers (Deep SVDD's centre), to put back after every aggregation: they are set once,
    never trained, so no aggregation rule (a median, a trimmed mean, an attack) may move them."""
    return {name: b.detach().clone() for name, b in model.named_buffers()}


def check_score_method(kind: str, method: str | None) -> str:
    """The score method ``method`` names for a ``kind`` model (None: the default); else a UserError."""
    allowed = SCORE_METHODS[kind]
    if method is None:
        return allowed[-1]
    if method not in allowed:
        raise UserError(f"score method for {kind!r} must be one of {allowed}, got {method!r}")
    return method


def default_score_method(kind: str) -> str:
    """The scoring a model uses unless told otherwise (AE: reconstruction, VAE: negative ELBO,
    Deep SVDD: distance to the centre, forest: isolation, ensemble: the calibrated combination)."""
    return SCORE_METHODS[kind][-1]
