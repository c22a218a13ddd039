"""Exercises of notebook 13 (real data: the WDBC hospital federation).

- Exercise 13.1: the PCA latent Mahalanobis score (Hotelling's :math:`T^2` of a ``q``-dim code).
- Exercise 13.2: a trimmed mean of per-row losses (the robust training step).

Every check runs the learner's function on freshly drawn rows (or a freshly initialised model) and
compares its behaviour with :class:`fedad_tutorial.chapters.baselines.PCABaseline` and
:func:`fedad_tutorial.training.batch_loss`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fedad_tutorial.chapters.baselines import PCABaseline
from fedad_tutorial.exercises.checking import as_float_tensor, exercise, expect
from fedad_tutorial.models import ModelSpec
from fedad_tutorial.scaling import Scaler
from fedad_tutorial.training import batch_loss


@exercise("Exercise 13.1: the PCA latent Mahalanobis score")
def check_pca_latent(learner_fn: Callable[[np.ndarray, np.ndarray, int], np.ndarray], seed: int = 1313) -> None:
    """``learner_fn(train, test, components)`` must standardise with the training rows' mean and
    std, fit a PCA with ``components`` components on the standardised training rows, and return per
    test row :math:`\\sum_j z_j^2 / \\lambda_j` (code ``z``, explained variances ``lambda``).
    Checked on fresh correlated rows against ``PCABaseline(components, "latent")``:
    equal up to one constant factor within 1e-3 (so ``ddof=0`` or ``1`` both pass)."""
    rng = np.random.default_rng(seed)
    for dim, components in ((6, 2), (12, 3)):
        mix = rng.normal(size=(dim, dim))
        train = (rng.normal(size=(300, dim)) @ mix * rng.uniform(0.5, 20, size=dim) + 3).astype(np.float32)
        test = (rng.normal(0.0, 1.5, size=(50, dim)) @ mix * rng.uniform(0.5, 20, size=dim)).astype(np.float32)
        got = as_float_tensor(learner_fn(train.copy(), test.copy(), components)).numpy().reshape(-1)
        reference = PCABaseline(components, "latent").fit(train)
        want = reference.decision_function(test)
        expect(got.shape == want.shape, f"expected one score per test row {want.shape}, got shape {got.shape}")
        expect(bool(np.all(np.isfinite(got))), "some scores are not finite")
        if _proportional(got, want):
            continue
        codes = reference.pca_.transform(reference.scaler_.transform(test))
        codes_test_scaled = reference.pca_.transform(Scaler.fit(test).transform(test))
        if _proportional(got, (codes**2).sum(axis=1)):
            hint = "divide each squared code coordinate by its component's explained variance, then sum"
        elif _proportional(got, (codes_test_scaled**2 / reference.pca_.explained_variance_).sum(axis=1)):
            hint = "standardise the test rows with the TRAINING rows' mean and std, not their own"
        else:
            hint = ("standardise with the training rows' mean and std, fit the PCA on the standardised training "
                    "rows, and return sum_j z_j**2 / lambda_j per test row")
        expect(False, f"{dim} features, {components} components: the scores are not proportional to the "
                      f"reference; {hint}")


def _proportional(got: np.ndarray, want: np.ndarray) -> bool:
    """``got`` equals ``want`` up to one positive factor, within 1e-3 (relative)."""
    ratio = float(np.median(got / want))
    return ratio > 0 and bool(np.allclose(got, ratio * want, rtol=1e-3, atol=1e-6 * float(np.abs(want).max())))


@exercise("Exercise 13.2: a trimmed mean of per-row losses")
def check_trimmed_mean(learner_fn: Callable[[torch.Tensor, float], torch.Tensor], seed: int = 131) -> None:
    """``learner_fn(per_row, trim)`` gets one loss per row (a 1-d tensor) and must return the mean
    of the rows left after dropping the ``floor(trim * rows)`` highest losses, as a tensor that
    keeps the gradient. Checked on a fresh autoencoder and batch against
    :func:`~fedad_tutorial.training.batch_loss` (value within 1e-6, and the same gradient)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for rows, trim in ((50, 0.1), (37, 0.2), (8, 0.1), (20, 0.0)):
        model = ModelSpec(input_dim=5, hidden=(8,), latent_dim=2).build()
        batch = torch.randn(rows, 5, generator=gen)
        batch[: max(1, rows // 10)] *= 8.0  # a few far-away rows
        want = batch_loss(model, batch, None, trim)
        want_grads = torch.autograd.grad(want, list(model.parameters()))
        got = learner_fn(model.row_loss(batch), trim)
        expect(isinstance(got, torch.Tensor), f"return a torch tensor, got {type(got).__name__}")
        expect(got.numel() == 1, f"return one number (a 0-d tensor), got shape {tuple(got.shape)}")
        got_value, want_value = float(got.detach()), float(want.detach())
        dropped = int(trim * rows)
        hint = (f"{rows} rows, trim {trim}: drop exactly floor(trim * rows) = {dropped} rows with the "
                "HIGHEST loss and average the rest (torch.topk(..., largest=False) or torch.sort)")
        expect(abs(got_value - want_value) <= 1e-6, f"got {got_value:.6f}, expected {want_value:.6f}; {hint}")
        expect(got.requires_grad, "the result lost its gradient: use torch operations, not .item() or numpy")
        got_grads = torch.autograd.grad(got.reshape(()), list(model.parameters()), allow_unused=True)
        got_grads = [torch.zeros_like(w) if g is None else g for g, w in zip(got_grads, want_grads, strict=True)]
        expect(all(torch.allclose(g, w, atol=1e-6) for g, w in zip(got_grads, want_grads, strict=True)),
               "the value matches but the gradient differs: average the kept losses themselves")
