"""Checks for the exercises of notebook 14 (one-class classification: federated Deep SVDD).

Every check calls the learner's function on fresh data drawn here and compares what it returns with
the package's own implementation:

- Exercise 14.1, :func:`check_center`: the federated centre from client sums and counts, with the eps
  rule, against :func:`fedad_tutorial.center.center_from_sums`;
- Exercise 14.2, :func:`check_collapse`: telling a collapsed model from its unlabelled scores, against
  :func:`fedad_tutorial.chapters.oneclass.looks_collapsed`;
- Exercise 14.3, :func:`check_svdd_score`: Deep SVDD's score, against
  :meth:`fedad_tutorial.models.DeepSVDD.score`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fedad_tutorial.center import center_from_sums
from fedad_tutorial.chapters.oneclass import looks_collapsed
from fedad_tutorial.exercises.checking import as_float_tensor, exercise, expect
from fedad_tutorial.models import ModelSpec


def _eps_rule(center: torch.Tensor, eps: float, sign_rule: str = "right") -> torch.Tensor:
    """``center`` with every coordinate below ``eps`` in magnitude moved to ``sign * eps``.

    ``sign_rule`` names the sign used, to recognise a learner's mistake: ``"right"`` (an exact zero
    counts as positive), ``"unsigned"`` (always ``+eps``) or ``"torch.sign"`` (an exact zero stays 0).
    """
    if sign_rule == "unsigned":
        sign = torch.ones_like(center)
    elif sign_rule == "torch.sign":
        sign = torch.sign(center)
    else:
        sign = torch.where(center < 0, -1.0, 1.0)
    return torch.where(center.abs() < eps, sign.to(center.dtype) * eps, center)


@exercise("Exercise 14.1: the federated centre")
def check_center(center_fn: Callable[[Sequence[torch.Tensor], Sequence[int], float], torch.Tensor],
                 seed: int = 1414) -> None:
    """Check ``center_fn(sums, counts, eps)``: the pooled mean ``sum(sums) / sum(counts)`` with every
    coordinate closer to zero than ``eps`` moved to ``+eps`` or ``-eps`` (its sign; an exact zero to
    ``+eps``). Fresh clients of different sizes, whose pooled mean has a small positive, a small
    negative and an exactly zero coordinate; compared with
    :func:`~fedad_tutorial.center.center_from_sums` within 1e-5 (float32 or float64 answers)."""
    gen = torch.Generator().manual_seed(seed)
    for clients, dim, eps in ((3, 6, 0.1), (5, 4, 0.05)):
        counts = [int(n) for n in torch.randint(5, 400, (clients,), generator=gen)]
        means = torch.randn(clients, dim, generator=gen, dtype=torch.float64)
        sums = means * torch.tensor(counts, dtype=torch.float64).unsqueeze(1)
        total = float(sum(counts))
        sums[:, 0] += (0.3 * eps * total - sums[:, 0].sum()) / clients   # pooled mean +0.3 eps
        sums[:, 1] += (-0.6 * eps * total - sums[:, 1].sum()) / clients  # pooled mean -0.6 eps
        sums[:, 2] = 0.0
        sums[0, 2], sums[1, 2] = 7.0, -7.0                                 # pooled mean exactly 0
        given = [s.clone() for s in sums]
        answer = as_float_tensor(center_fn(given, list(counts), eps))
        want = center_from_sums(list(sums), counts, eps).double()
        expect(answer.shape == want.shape,
               f"return one centre, a vector of {dim} coordinates; got shape {tuple(answer.shape)}")
        if torch.allclose(answer, want, rtol=1e-5, atol=1e-6):
            continue
        pooled = sums.sum(dim=0) / total
        plain = (sums / torch.tensor(counts, dtype=torch.float64).unsqueeze(1)).mean(dim=0)
        close = {name: torch.allclose(answer, value, rtol=1e-5, atol=1e-6) for name, value in (
            ("plain", _eps_rule(plain, eps)), ("no eps", pooled), ("unsigned", _eps_rule(pooled, eps, "unsigned")),
            ("zero stays", _eps_rule(pooled, eps, "torch.sign")))}
        if close["plain"] or torch.allclose(answer, plain, rtol=1e-5, atol=1e-6):
            hint = ("you averaged the clients' means: weight each client by its rows, i.e. divide the sum of "
                    "the sums by the sum of the counts")
        elif close["no eps"]:
            hint = f"coordinates closer to zero than eps = {eps} must become +eps or -eps (the eps rule)"
        elif close["unsigned"]:
            hint = "keep each small coordinate's sign: a small negative coordinate becomes -eps, not +eps"
        elif close["zero stays"]:
            hint = "an exact zero has no sign (torch.sign gives 0): it must become +eps"
        else:
            hint = "divide the summed sums by the summed counts, then apply the eps rule"
        expect(False, f"{clients} clients, {dim} coordinates: the centre differs from the pooled mean with the "
                      f"eps rule; {hint}")


@exercise("Exercise 14.2: spot a collapsed model")
def check_collapse(collapsed_fn: Callable[[np.ndarray], bool], seed: int = 14) -> None:
    """Check ``collapsed_fn(scores)``: True when the interquartile range of ``scores`` is less than 1 % of
    their median (:func:`~fedad_tutorial.chapters.oneclass.looks_collapsed`), also when every score is 0.
    Fresh score sets: healthy ones (spread like squared distances, at two scales) and collapsed ones
    (one value plus rounding noise, with and without a few far-away rows, and all zeros)."""
    rng = np.random.default_rng(seed)
    healthy = rng.chisquare(3, 600) * 1e-3
    constant = np.full(600, 2.7e-5) + rng.normal(0.0, 1e-10, 600)
    far = constant.copy()
    far[:18] *= rng.uniform(50, 5000, 18)  # a collapsed network still moves rows far from the data
    cases = [("healthy scores", healthy), ("healthy scores, all tiny", healthy * 1e-6),
             ("collapsed scores", constant), ("collapsed scores with a few far-away rows", far),
             ("collapsed scores, all exactly 0", np.zeros(600))]
    answers = {}
    for name, scores in cases:
        answer = collapsed_fn(scores.copy())
        expect(isinstance(answer, bool | np.bool_), f"return True or False, got {type(answer).__name__}")
        answers[name] = bool(answer)
    wrong = [name for name, scores in cases if answers[name] != looks_collapsed(scores)]
    if not wrong:
        return
    if all(answers[name] != looks_collapsed(scores) for name, scores in cases):
        hint = "every answer is the opposite: return True when the model HAS collapsed"
    elif wrong == ["healthy scores, all tiny"]:
        hint = ("a healthy model's scores can all be small: compare the spread with the scores' own size "
                "(their median), not with a fixed number")
    elif "collapsed scores with a few far-away rows" in wrong:
        hint = ("a few far-away rows widen the standard deviation of a collapsed model's scores: measure the "
                "spread with the quartiles (np.percentile(scores, [25, 75]))")
    elif wrong == ["collapsed scores, all exactly 0"]:
        hint = "scores that are all 0 are all equal: that is a collapse too (mind the division by a zero median)"
    else:
        hint = "collapsed means: interquartile range below 1 % of the median"
    expect(False, f"wrong for: {', '.join(wrong)}; {hint}")


@exercise("Exercise 14.3: Deep SVDD's score")
def check_svdd_score(score_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor], seed: int = 1403) -> None:
    """Check ``score_fn(model, x)``: each row's squared Euclidean distance from its embedding
    ``model.encode(x)`` to ``model.center``. A fresh Deep SVDD with a centre away from zero and fresh
    rows; compared with ``model.score(x)`` within 1e-5 (relative)."""
    torch.manual_seed(seed)
    model = ModelSpec(kind="svdd", input_dim=7, hidden=(16,), latent_dim=4).build().eval()
    with torch.no_grad():
        model.center.copy_(torch.tensor([0.5, -0.3, 0.2, 0.8]))
    x = 2.0 * torch.randn(40, 7)
    with torch.no_grad():
        expected = model.score(x).double()
        answer = as_float_tensor(score_fn(model, x))
        diff = (model.encode(x) - model.center).double()
    expect(answer.shape == expected.shape,
           f"expected one score per row, shape {tuple(expected.shape)}, got {tuple(answer.shape)}: "
           "sum over the latent coordinates (dim=1), not over the rows")
    if torch.allclose(answer, (diff**2).sum(dim=1).sqrt(), rtol=1e-5):
        expect(False, "you took the square root (the distance); Deep SVDD scores the SQUARED distance")
    if torch.allclose(answer, (diff**2).mean(dim=1), rtol=1e-5):
        expect(False, "you averaged over the latent coordinates; the squared distance sums them")
    if torch.allclose(answer, (model.encode(x).double() ** 2).sum(dim=1), rtol=1e-5):
        expect(False, "that is the distance to 0: subtract model.center from the embeddings")
    expect(torch.allclose(answer, expected, rtol=1e-5, atol=1e-8),
           "the scores differ from model.score(x): compute ((model.encode(x) - model.center) ** 2).sum(dim=1)")
