"""Every hint of the exercise checks of chapters 13, 14 and 15, reached by a plausible wrong answer.

Each answer below is a mistake a learner makes (a forgotten division, ``>`` for ``>=``, ``torch.sign``
for the sign of an exact zero, a forgotten ``return``); the check must call it wrong with the hint that
names the mistake, never crash, and must accept every right answer, including equivalent ones (the
k-th largest score for a budget threshold). The hint code of exercise 14.5 must run as printed.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from fedad_tutorial.exercises import nb13, nb14, nb15
from fedad_tutorial.exercises.learner import NOTEBOOKS
from fedad_tutorial.threads import set_threads

set_threads()


# --- chapter 13 -----------------------------------------------------------------------------------


def _pca_latent(train, test, components, divide=True, scale_test_by_itself=False, ddof=0):
    mean, std = train.mean(axis=0), train.std(axis=0, ddof=ddof)
    pca = PCA(n_components=components).fit((train - mean) / std)
    if scale_test_by_itself:
        mean, std = test.mean(axis=0), test.std(axis=0)
    codes = pca.transform((test - mean) / std)
    return (codes**2 / pca.explained_variance_).sum(axis=1) if divide else (codes**2).sum(axis=1)


def _trimmed(per_row, trim, drop="highest"):
    keep = per_row.numel() - int(trim * per_row.numel())
    ordered = torch.sort(per_row, descending=drop == "lowest").values
    return ordered[:keep].mean()


# --- chapter 14 -----------------------------------------------------------------------------------


def _center(sums, counts, eps, weighted=True, rule=True, sign="right"):
    if weighted:
        mean = torch.stack(list(sums)).sum(dim=0) / sum(counts)
    else:
        mean = torch.stack([s / n for s, n in zip(sums, counts, strict=True)]).mean(dim=0)
    if not rule:
        return mean
    signs = {"right": torch.where(mean < 0, -1.0, 1.0), "unsigned": torch.ones_like(mean),
             "torch.sign": torch.sign(mean)}[sign].to(mean.dtype)
    return torch.where(mean.abs() < eps, signs * eps, mean)


def _collapsed(scores, tol=0.01, spread="iqr", relative=True):
    q25, median, q75 = np.percentile(scores, [25, 50, 75])
    width = q75 - q25 if spread == "iqr" else np.std(scores)
    if not relative:
        return bool(width < tol)
    return bool(width < tol * median) if median > 0 else True


def _distance(model, x):
    return model.encode(x) - model.center


# --- chapter 15 -----------------------------------------------------------------------------------


def _alarms(labels, scores, recall, strict=False, scale=1e4, k_offset=0):
    attacks = np.sort(scores[labels == 1])[::-1]
    k = min(attacks.size, math.ceil(recall * attacks.size) + k_offset)
    threshold = attacks[k - 1]
    flagged = scores > threshold if strict else scores >= threshold
    return scale * float(flagged.mean())


def _kth_largest(scores, alarms, rounding=math.ceil):
    k = max(1, rounding(alarms / 1e4 * scores.size))
    return float(np.sort(scores)[::-1][k - 1])


WRONG = [
    # 13.1
    (nb13.check_pca_latent, lambda tr, te, c: _pca_latent(tr, te, c, divide=False), "explained variance"),
    (nb13.check_pca_latent, lambda tr, te, c: _pca_latent(tr, te, c, scale_test_by_itself=True),
     "with the TRAINING rows' mean and std, not their own"),
    (nb13.check_pca_latent, lambda tr, te, c: np.abs(_pca_latent(tr, te, c)).sum() - _pca_latent(tr, te, c),
     "return sum_j z_j**2 / lambda_j per test row"),
    (nb13.check_pca_latent, lambda tr, te, c: _pca_latent(tr, te, c)[:-1], "one score per test row"),
    (nb13.check_pca_latent, lambda tr, te, c: np.where(te[:, 0] > 0, np.inf, 1.0), "not finite"),
    (nb13.check_pca_latent, lambda tr, te, c: None, "did you forget `return`?"),
    (nb13.check_pca_latent, lambda tr, te, c: PCA(n_components=c).fit(tr).transfrom(te), "your code raised"),
    # 13.2
    (nb13.check_trimmed_mean, lambda per_row, trim: _trimmed(per_row, trim, drop="lowest"), "HIGHEST loss"),
    (nb13.check_trimmed_mean, lambda per_row, trim: _trimmed(per_row, math.ceil(trim * 10) / 10 + 0.1),
     "drop exactly floor(trim * rows)"),
    (nb13.check_trimmed_mean, lambda per_row, trim: _trimmed(per_row, trim).detach(), "lost its gradient"),
    (nb13.check_trimmed_mean, lambda per_row, trim: torch.tensor(_trimmed(per_row, trim).item(), requires_grad=True),
     "the gradient differs"),
    (nb13.check_trimmed_mean, lambda per_row, trim: _trimmed(per_row, trim).item(), "return a torch tensor"),
    (nb13.check_trimmed_mean, lambda per_row, trim: torch.sort(per_row).values[: per_row.numel() - 1],
     "return one number"),
    # 14.1
    (nb14.check_center, lambda s, n, eps: _center(s, n, eps, weighted=False), "you averaged the clients' means"),
    (nb14.check_center, lambda s, n, eps: _center(s, n, eps, rule=False), "(the eps rule)"),
    (nb14.check_center, lambda s, n, eps: _center(s, n, eps, sign="unsigned"), "keep each small coordinate's sign"),
    (nb14.check_center, lambda s, n, eps: _center(s, n, eps, sign="torch.sign"), "an exact zero has no sign"),
    (nb14.check_center, lambda s, n, eps: _center(s, n, eps)[:2], "return one centre"),
    (nb14.check_center, lambda s, n, eps: 2 * _center(s, n, eps), "divide the summed sums by the summed counts"),
    (nb14.check_center, lambda s, n, eps: None, "did you forget `return`?"),
    # 14.2
    (nb14.check_collapse, lambda scores: not _collapsed(scores), "every answer is the opposite"),
    (nb14.check_collapse, lambda scores: _collapsed(scores, tol=1e-3, relative=False), "not with a fixed number"),
    (nb14.check_collapse, lambda scores: _collapsed(scores, spread="std"), "measure the spread with the quartiles"),
    (nb14.check_collapse, lambda scores: bool(np.percentile(scores, 75) - np.percentile(scores, 25)
                                              < 0.01 * np.median(scores)), "scores that are all 0 are all equal"),
    (nb14.check_collapse, lambda scores: True, "interquartile range below 1 % of the median"),
    (nb14.check_collapse, lambda scores: float(_collapsed(scores)), "return True or False"),
    # 14.3
    (nb14.check_svdd_score, lambda m, x: (_distance(m, x) ** 2).sum(dim=1).sqrt(), "SQUARED distance"),
    (nb14.check_svdd_score, lambda m, x: (_distance(m, x) ** 2).mean(dim=1), "sums them"),
    (nb14.check_svdd_score, lambda m, x: (m.encode(x) ** 2).sum(dim=1), "subtract model.center"),
    (nb14.check_svdd_score, lambda m, x: (_distance(m, x) ** 2).sum(dim=0), "not over the rows"),
    (nb14.check_svdd_score, lambda m, x: _distance(m, x).abs().sum(dim=1), "compute ((model.encode(x)"),
    (nb14.check_svdd_score, lambda m, x: ((m.encoder(x) - m.centre) ** 2).sum(dim=1),
     "your code raised AttributeError"),
    # 15.1
    (nb15.check_alarms_per_10k, lambda y, s, r: _alarms(y, s, r, strict=True), "AT LEAST"),
    (nb15.check_alarms_per_10k, lambda y, s, r: _alarms(y, s, r, scale=1.0), "not a fraction or a percentage"),
    (nb15.check_alarms_per_10k, lambda y, s, r: _alarms(y, s, r, scale=100.0), "not a fraction or a percentage"),
    (nb15.check_alarms_per_10k, lambda y, s, r: _alarms(y, s, r, k_offset=1), "ceil(recall * attacks)"),
    (nb15.check_alarms_per_10k, lambda y, s, r: [_alarms(y, s, r)] * 2, "return one number"),
    (nb15.check_alarms_per_10k, lambda y, s, r: None, "did you forget `return`?"),
    # 15.2
    (nb15.check_budget_threshold, lambda s, a: np.percentile(s, 100 - a), "0.2 %"),
    (nb15.check_budget_threshold, lambda s, a: np.percentile(s, a / 100), "expected 20"),
    (nb15.check_budget_threshold, lambda s, a: _kth_largest(s, a * 2),
     "np.percentile(train_scores, 100 - alarms / 100)"),
    (nb15.check_budget_threshold, lambda s, a: "high", "got a str"),
]


@pytest.mark.parametrize(("check", "answer", "hint"), [
    pytest.param(check, answer, hint, id=f"{check.__name__}: {hint}") for check, answer, hint in WRONG])
def test_a_plausible_wrong_answer_gets_the_hint_that_names_its_mistake(check, answer, hint):
    outcome = check(answer)
    assert outcome.status == "wrong", outcome
    assert hint in outcome.message, outcome.message


RIGHT = [
    (nb13.check_pca_latent, lambda tr, te, c: _pca_latent(tr, te, c)),
    (nb13.check_pca_latent, lambda tr, te, c: torch.from_numpy(_pca_latent(tr, te, c, ddof=1))),
    (nb13.check_trimmed_mean, _trimmed),
    (nb14.check_center, _center),
    (nb14.check_center, lambda s, n, eps: _center([v.float() for v in s], n, eps).numpy()),
    (nb14.check_collapse, lambda scores: np.bool_(_collapsed(scores))),
    (nb14.check_svdd_score, lambda m, x: (_distance(m, x) ** 2).sum(dim=1)),
    (nb15.check_alarms_per_10k, _alarms),
    (nb15.check_alarms_per_10k, lambda y, s, r: np.float32(_alarms(y, s, r))),
    (nb15.check_budget_threshold, lambda s, a: np.percentile(s, 100 - a / 100)),
    (nb15.check_budget_threshold, _kth_largest),  # another quantile rule: the k-th largest score
    (nb15.check_budget_threshold, lambda s, a: _kth_largest(s, a, rounding=int)),
    (nb15.check_budget_threshold, lambda s, a: np.quantile(s, 1 - a / 1e4, method="higher")),
]


@pytest.mark.parametrize(("check", "answer"), RIGHT)
def test_right_answers_pass_whatever_their_type_or_quantile_rule(check, answer):
    assert check(answer), check(answer)


@pytest.mark.parametrize("check", [nb13.check_pca_latent, nb13.check_trimmed_mean, nb14.check_center,
                                   nb14.check_collapse, nb14.check_svdd_score, nb15.check_alarms_per_10k,
                                   nb15.check_budget_threshold])
def test_the_placeholder_is_not_implemented_yet_not_wrong(check):
    def placeholder(*args):
        raise NotImplementedError

    assert check(placeholder).status == "not implemented"


def _hint_code(notebook: str, marker: str) -> str:
    """The commented hint of the exercise cell that starts with ``# Your experiment here`` and holds ``marker``."""
    import json

    cells = json.loads((NOTEBOOKS / "solutions" / notebook).read_text())["cells"]
    source = next("".join(c["source"]) for c in cells
                  if c["cell_type"] == "code" and "".join(c["source"]).startswith("# Your experiment here")
                  and marker in "".join(c["source"]))
    return "\n".join(re.sub(r"^# ?", "", line) for line in source.splitlines()[1:])


@pytest.mark.slow  # twelve epochs of training
def test_exercise_14_5s_hint_runs_in_the_chapters_namespace():
    """The hint names the imports it needs and uses section 1's ``rows``; it trains without an error."""
    from fedad_tutorial.chapters.oneclass import synthetic_federation
    from fedad_tutorial.models import ModelSpec
    from fedad_tutorial.scaling import Scaler

    pooled = np.vstack([s.train for s in synthetic_federation(0)])
    namespace = {"torch": torch, "ModelSpec": ModelSpec, "rows": torch.from_numpy(Scaler.fit(pooled).transform(pooled)),
                 "center": torch.zeros(10)}  # the chapter's cells leave a tensor named like the module
    exec(_hint_code("14_deep_svdd.ipynb", "Sigmoid"), namespace)
    assert len(namespace["losses"]) == 12 and all(np.isfinite(namespace["losses"]))
    assert isinstance(namespace["bounded"].encoder[-1], torch.nn.Sigmoid)
