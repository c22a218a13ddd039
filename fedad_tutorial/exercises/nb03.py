"""Checks for the exercises of notebook 03 (the variational autoencoder and its ELBO).

Every check calls the learner's function on fresh random tensors drawn here and compares its
behaviour with a reference: the closed form in :mod:`torch.distributions`, the statistics and
gradients a reparameterised sample must have, and :meth:`fedad_tutorial.models.VAE.score`.

- Exercise 3.1, :func:`check_kl_divergence`: KL( N(mu, diag(exp(logvar))) || N(0, I) ) per row;
- Exercise 3.2, :func:`check_reparameterise`: ``z = mu + sigma * eps``, differentiable in mu and logvar;
- Exercise 3.3, :func:`check_negative_elbo`: the VAE's "elbo" anomaly score.

Like every check, they leave the notebook's random state unchanged
(:func:`~fedad_tutorial.exercises.checking.isolated_rng`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from fedad_tutorial.exercises.checking import as_float_tensor, exercise, expect
from fedad_tutorial.models import ModelSpec


@exercise("Exercise 3.1: the KL divergence to the prior")
def check_kl_divergence(kl_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], seed: int = 3) -> None:
    """Check ``kl_fn(mu, logvar)``: KL of N(mu, diag(exp(logvar))) from N(0, I), one value per row.

    Compares with ``torch.distributions.kl_divergence`` summed over the latent dimensions, on
    random ``mu`` and ``logvar`` of shape (rows, latent) drawn from ``seed``.
    """
    torch.manual_seed(seed)
    mu = 1.5 * torch.randn(40, 6)
    logvar = torch.randn(40, 6)
    with torch.no_grad():
        answer = as_float_tensor(kl_fn(mu.clone(), logvar.clone()))
    per_dim = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).to(torch.float64)
    expected = per_dim.sum(dim=1)
    expect(answer.shape == expected.shape,
           f"expected one KL value per row, shape {tuple(expected.shape)}, got {tuple(answer.shape)}: "
           "sum over the latent dimensions (dim=1), do not average over rows")
    if torch.allclose(answer, 2.0 * expected, rtol=1e-4):
        expect(False, "your values are twice the KL divergence: the closed form has a factor 1/2")
    wrong_var = kl_divergence(Normal(mu, torch.exp(logvar)), Normal(0.0, 1.0)).sum(dim=1).to(torch.float64)
    if torch.allclose(answer, wrong_var, rtol=1e-4):
        expect(False, "logvar is the log of the variance: sigma^2 = exp(logvar), sigma = exp(0.5 * logvar)")
    expect(torch.allclose(answer, expected, rtol=1e-4, atol=1e-6),
           "the values differ from the closed form 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar) over "
           "the latent dimensions")
    zero = as_float_tensor(kl_fn(torch.zeros(2, 3), torch.zeros(2, 3)))
    expect(torch.allclose(zero, torch.zeros(2, dtype=torch.float64), atol=1e-7),
           "the KL divergence of N(0, I) from itself must be 0")


@exercise("Exercise 3.2: the reparameterisation trick")
def check_reparameterise(sample_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], seed: int = 5,
                         num_samples: int = 20000) -> None:
    """Check ``sample_fn(mu, logvar)``: a draw ``z ~ N(mu, exp(logvar))`` through which gradients flow.

    Calls it on ``num_samples`` copies of one random (mu, logvar) and checks the samples' mean and
    variance, that two calls differ (fresh noise), and that ``d sum(z) / d mu`` is one per sample.
    """
    torch.manual_seed(seed)
    mu0 = torch.randn(3)
    logvar0 = torch.randn(3).clamp(-1.5, 1.5)
    mu = mu0.clone().requires_grad_(True)
    logvar = logvar0.clone().requires_grad_(True)
    z = sample_fn(mu.expand(num_samples, 3), logvar.expand(num_samples, 3))
    again = sample_fn(mu0.expand(4, 3), logvar0.expand(4, 3))
    expect(isinstance(z, torch.Tensor) and z.shape == (num_samples, 3),
           f"return a tensor shaped like mu, ({num_samples}, 3)")
    expect(not torch.allclose(again[0], again[1]),
           "every row should get its own random noise: eps = torch.randn_like(mu)")
    std = torch.exp(0.5 * logvar0)
    mean, var = z.detach().mean(dim=0), z.detach().var(dim=0)
    expect(bool(((mean - mu0).abs() < 0.05 + 0.05 * std).all()),
           f"the samples' mean is {mean.numpy().round(3)}, expected mu = {mu0.numpy().round(3)}")
    right_var = bool(((var - std**2).abs() < 0.06 * std**2).all())
    if not right_var and bool(((var - torch.exp(2 * logvar0)).abs() < 0.06 * torch.exp(2 * logvar0)).all()):
        expect(False, "the spread is too wide or too narrow: sigma = exp(0.5 * logvar), not exp(logvar)")
    expect(right_var,
           f"the samples' variance is {var.numpy().round(3)}, expected exp(logvar) = "
           f"{(std**2).numpy().round(3)}: z = mu + exp(0.5 * logvar) * eps with eps ~ N(0, 1)")
    expect(z.requires_grad, "no gradient flows through z: build it from mu and logvar with tensor "
           "operations (no .detach(), no torch.normal, which has no gradient)")
    z.sum().backward()
    expect(mu.grad is not None and torch.allclose(mu.grad, torch.full((3,), float(num_samples))),
           "the gradient of z with respect to mu should be 1 for every sample: z = mu + sigma * eps "
           "(torch.normal and .detach() block the gradient)")
    expect(logvar.grad is not None and bool((logvar.grad.abs() > 0).all()),
           "no gradient reaches logvar: sigma must be computed from logvar inside the sample")


@exercise("Exercise 3.3: the negative-ELBO score")
def check_negative_elbo(score_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor], seed: int = 13) -> None:
    """Check ``score_fn(vae, x)``: one negative-ELBO score per row, as ``vae.score(x, "elbo")``.

    Builds a small untrained VAE with ``beta = 0.3`` (so a missing beta shows) and random rows from
    ``seed``.
    """
    torch.manual_seed(seed)
    model = ModelSpec(kind="vae", input_dim=8, hidden=(16,), latent_dim=3, beta=0.3).build().eval()
    x = 1.5 * torch.randn(30, 8)
    with torch.no_grad():
        expected = model.score(x, "elbo").to(torch.float64)
        answer = as_float_tensor(score_fn(model, x))
        answer_again = as_float_tensor(score_fn(model, x))
        mu, logvar = model.encode(x)
        recon = 0.5 * ((model.decoder(mu) - x) ** 2).sum(dim=1).to(torch.float64)
        kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(dim=1).to(torch.float64)
    expect(answer.shape == expected.shape,
           f"expected one score per row, shape {tuple(expected.shape)}, got {tuple(answer.shape)}")
    expect(torch.allclose(answer, answer_again),
           "the score changes between calls: score with z = mu (no sampling), so it is deterministic")
    hints = (
        (recon, "you returned only the reconstruction term: add beta * KL"),
        (recon + kl, "multiply the KL term by the model's beta (model.spec.beta)"),
        (2.0 * recon + 0.3 * kl, "the reconstruction term is 0.5 * the sum of squared errors"),
        (recon / 4.0 + 0.3 * kl, "the reconstruction term sums the squared errors over features (not a mean)"),
        (recon / 8.0 + 0.3 * kl, "the reconstruction term sums the squared errors over features (not a mean)"),
    )
    for wrong, hint in hints:
        if torch.allclose(answer, wrong, rtol=1e-5):
            expect(False, hint)
    expect(torch.allclose(answer, expected, rtol=1e-5, atol=1e-6),
           "the scores differ from vae.score(x, 'elbo'): with (mu, logvar) = vae.encode(x), "
           "0.5 * sum((vae.decoder(mu) - x) ** 2) + beta * 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar)")
