"""Exercises: learner notebooks match their solutions, every check rejects the placeholder, and every
notebook is stored in the form JupyterLab keeps on opening it (so opening one does not modify it).

every check leaves the caller's random state as it was, and every hint a check can give is the one a
typical wrong answer gets.

That every check *accepts* a right answer is proven by nbval: each solution notebook runs in CI and
its check cells are marked ``# NBVAL_CHECK_OUTPUT`` with the stored "✅ ... Correct" output.
"""

import importlib
import inspect
import pkgutil
import random

import nbformat
import numpy as np
import pytest
import torch
from ipykernel.ipkernel import IPythonKernel
from jupyter_client.kernelspec import KernelSpecManager
from wrong_answers import fedavg_dividing_by, fedavg_in_place, path_length_no_special_cases, pooled_depths

import fedad_tutorial.exercises as exercises_pkg
from fedad_tutorial.chapters.drift import psi
from fedad_tutorial.chapters.forest import average_path_length
from fedad_tutorial.chapters.privacy import epsilon
from fedad_tutorial.chapters.robust import update_norm
from fedad_tutorial.exercises import (
    nb00,
    nb01,
    nb02,
    nb03,
    nb04,
    nb05,
    nb06,
    nb07,
    nb08,
    nb09,
    nb10,
    nb11,
    nb12,
    nb13,
    nb14,
)
from fedad_tutorial.exercises.learner import (
    KERNELSPEC,
    NOTEBOOKS,
    normalize,
    not_normalized,
    out_of_sync,
    pairs,
    strip_solutions,
    write,
)
from fedad_tutorial.federated import fedavg
from fedad_tutorial.scaling import FeatureStats, Scaler


def _checks():
    found = []
    for info in pkgutil.iter_modules(exercises_pkg.__path__):
        if not info.name.startswith("nb"):
            continue
        module = importlib.import_module(f"fedad_tutorial.exercises.{info.name}")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("check_") and fn.__module__ == module.__name__:
                found.append(pytest.param(fn, id=f"{info.name}.{name}"))
    return found


def _placeholder(*args, **kwargs):
    raise NotImplementedError


def _required(check) -> int:
    """How many functions the learner passes to ``check``."""
    return len([p for p in inspect.signature(check).parameters.values()
                if p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD])


def test_learner_notebooks_are_generated_from_the_solutions():
    assert out_of_sync() == []


@pytest.mark.parametrize("check", _checks())
def test_every_check_reports_the_placeholder_as_not_implemented(check):
    outcome = check(*[_placeholder] * _required(check))
    assert outcome.status == "not implemented" and not outcome


def test_strip_solutions_keeps_indentation_and_the_rest():
    source = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n\nprint(f)"
    assert strip_solutions(source) == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError\n\nprint(f)"


@pytest.mark.parametrize("path", [path for both in pairs() for path in both if path.exists()],
                         ids=lambda path: str(path.relative_to(NOTEBOOKS)))
def test_committed_notebooks_are_stored_as_jupyterlab_keeps_them(path):
    assert not_normalized([path]) == []


def _executed_notebook(display_name: str = "Python 3") -> nbformat.NotebookNode:
    """A notebook as nbclient leaves it: timings in the cell metadata, the kernel's full language_info."""
    cell = nbformat.v4.new_code_cell("print(1)", execution_count=1, outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="1\n")])
    cell.metadata = {"tags": ["keep"], "execution": {"iopub.status.busy": "2026-11-23T17:22:09.431557Z"}}
    return nbformat.v4.new_notebook(cells=[cell], metadata={
        "kernelspec": {"display_name": display_name, "language": "python", "name": "python3"},
        "language_info": dict(IPythonKernel.language_info)})


def test_normalize_sets_the_kernel_spec_and_drops_only_the_timings():
    nb = _executed_notebook()
    normal = normalize(nb)
    assert normal.metadata.kernelspec == KERNELSPEC
    assert normal.metadata.language_info == IPythonKernel.language_info
    assert normal.cells[0].metadata == {"tags": ["keep"]}
    assert normal.cells[0].outputs == nb.cells[0].outputs and normal.cells[0].execution_count == 1
    assert "execution" in nb.cells[0].metadata and nb.metadata.kernelspec.display_name == "Python 3"  # a copy


def test_not_normalized_says_why_and_write_stores_the_normal_form(tmp_path):
    path = tmp_path / "nb.ipynb"
    nbformat.write(_executed_notebook(), path)
    assert not_normalized([path]) == [f"{path}: per-cell execution timings in the cell metadata"]
    nb = normalize(_executed_notebook())
    nb.metadata.kernelspec.display_name = "Python 3"
    nbformat.write(nb, path)
    assert not_normalized([path]) == [f"{path}: kernelspec {dict(nb.metadata.kernelspec)}, not {KERNELSPEC}"]
    nb.metadata.language_info = {"name": "python"}
    nbformat.write(nb, path)
    assert not_normalized([path])[0].startswith(f"{path}: language_info lacks ['codemirror_mode'")

    write(_executed_notebook(), path)
    assert not_normalized([path]) == []
    assert path.read_text(encoding="utf-8").endswith("}\n") and list(tmp_path.iterdir()) == [path]


def test_the_kernel_spec_is_the_one_jupyterlab_starts():
    spec = KernelSpecManager().get_kernel_spec(KERNELSPEC["name"])
    assert (spec.display_name, spec.language) == (KERNELSPEC["display_name"], KERNELSPEC["language"])


# --- every check leaves the caller's random state untouched -------------------------------------------------


def _draws_from_every_global_generator(*args, **kwargs):
    torch.rand(3), np.random.random(3), random.random()
    raise NotImplementedError


def _random_states():
    return torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


@pytest.mark.parametrize("check", _checks())
def test_every_check_leaves_the_global_random_state_unchanged(check):
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    before = _random_states()
    check(*[_draws_from_every_global_generator] * _required(check))
    after = _random_states()
    assert torch.equal(before[0], after[0])
    assert np.array_equal(before[1], after[1]) and before[2] == after[2]


# --- every hint branch: a typical wrong answer gets its hint ------------------------------------------------


def _percent_share(nodes):
    return {n.name: 100.0 * float(n.labels.mean()) for n in nodes}


def _split_last_rows(n, fraction, seed):
    n_test = min(n - 1, max(1, int(round(fraction * n))))
    return np.arange(n - n_test), np.arange(n - n_test, n)


def _split_ignoring_seed(n, fraction, seed):
    order = np.random.default_rng(0).permutation(n)
    n_test = min(n - 1, max(1, int(round(fraction * n))))
    return order[n_test:], order[:n_test]


def _split_unseeded(n, fraction, seed):
    order = np.random.permutation(n)
    n_test = min(n - 1, max(1, int(round(fraction * n))))
    return order[n_test:], order[:n_test]


def _metrics(labels, flagged, swap=False):
    tp = int(np.sum((labels == 1) & (flagged == 1)))
    fp, fn = int(np.sum((labels == 0) & (flagged == 1))), int(np.sum((labels == 1) & (flagged == 0)))
    precision, recall = tp / (tp + fp) if tp + fp else 0.0, tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return (recall, precision, f1) if swap else (precision, recall, f1)


def _reparameterise(mu, logvar, sigma=lambda logvar: torch.exp(0.5 * logvar), shared_noise=False):
    eps = torch.randn(mu.shape[-1]) if shared_noise else torch.randn_like(mu)
    return mu + sigma(logvar) * eps


def _elbo_parts(vae, x):
    mu, logvar = vae.encode(x)
    recon = 0.5 * ((vae.decoder(mu) - x) ** 2).sum(dim=1)
    return recon, 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(dim=1), vae.spec.beta


def _fedavg_float64(states, weights):
    return {k: v.double() for k, v in fedavg(states, weights).items()}


def _clients(num, fraction, seed, rnd, rng=lambda seed, rnd: np.random.default_rng([seed, rnd]), order=sorted):
    k = max(1, int(round(fraction * num)))
    return order(int(i) for i in rng(seed, rnd).choice(num, size=k, replace=False))


def _clients_rounded_down(num, fraction, seed, rnd):
    return sorted(np.random.default_rng([seed, rnd]).choice(num, max(1, int(fraction * num)), replace=False))


def _scaler_of_means(stats):
    n = sum(s.count for s in stats)
    mean_of_means = np.mean([s.total / s.count for s in stats], axis=0)
    var = sum(s.total_sq for s in stats) / n - (sum(s.total for s in stats) / n) ** 2
    return mean_of_means, np.sqrt(var)


def _scaler_of_stds(stats):
    n = sum(s.count for s in stats)
    stds = [np.sqrt(s.total_sq / s.count - (s.total / s.count) ** 2) for s in stats]
    return sum(s.total for s in stats) / n, np.mean(stds, axis=0)


def _histogram_quantile(counts, edges, q, interpolate=True):
    cumulative = np.cumsum(counts)
    target = q / 100.0 * cumulative[-1]
    b = int(np.searchsorted(cumulative, target))
    below = cumulative[b - 1] if b else 0
    inside = (target - below) / counts[b] if interpolate else 0.0
    return edges[b] + inside * (edges[b + 1] - edges[b])


def _cost(labels, scores, threshold, c_fp, c_fn, total=False, inclusive=False):
    flagged = scores >= threshold if inclusive else scores > threshold
    cost = c_fp * np.sum(flagged & (labels == 0)) + c_fn * np.sum(~flagged & (labels == 1))
    return float(cost if total else cost / len(labels))


def _record_as_state_dict(model):
    return model.state_dict()


def _scaler_from_client_stds(records):
    stats = [FeatureStats(int(r["count"]), np.asarray(r["total"]), np.asarray(r["total-sq"])) for r in records]
    n = sum(s.count for s in stats)
    stds = [np.sqrt(np.maximum(s.total_sq / s.count - (s.total / s.count) ** 2, 1e-12)) for s in stats]
    return Scaler(sum(s.total for s in stats) / n, np.average(stds, axis=0, weights=[s.count for s in stats]))


def _windows(features, window, by_metric=False):
    return np.stack([(features[i:i + window].T if by_metric else features[i:i + window]).ravel()
                     for i in range(len(features) - window + 1)])


def _recall_starting_inside(alarms, starts, window, events):
    return float(np.mean([alarms[(starts >= e.start) & (starts < e.stop)].any() for e in events]))


def _ks_of_pdfs(a, b):
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return 2.0 + float(np.max(np.abs(cdf_a - cdf_b)))


def _rates(scores, threshold, window, inclusive=False):
    alarms = scores >= threshold if inclusive else scores > threshold
    return np.array([alarms[i:i + window].mean() for i in range(0, len(scores), window)])


def _average_updates(glob, states, clip, n, clip_first=True, divide_by_updates=False):
    updates = [{k: s[k] - glob[k] for k in glob} for s in states]
    if clip_first:
        updates = [{k: u[k] * min(1.0, clip / update_norm({k: u[k] + glob[k] for k in u}, glob)) for k in u}
                   for u in updates]
    denominator = len(states) if divide_by_updates or not clip_first else n
    return {k: glob[k] + sum(u[k] for u in updates) / denominator for k in glob}


def _noise(state, clip, sigma, n, generator, std=None, use_generator=True):
    std = sigma * clip if std is None else std
    return {k: v + std * (torch.randn(v.shape, generator=generator) if use_generator else torch.randn(v.shape))
            for k, v in state.items()}


def _rounds(sigma, rate, delta, target, offset):
    r = 0
    while epsilon(sigma, rate, r + 1, delta) <= target:
        r += 1
    return r + offset


def _lower_median(glob, states, weights, rnd):
    return {k: torch.stack([s[k] for s in states]).median(dim=0).values for k in glob}


def _feature_errors_unscaled(detector, rows):
    with torch.no_grad():
        x = torch.from_numpy(rows)
        return ((detector.model(x) - x) ** 2).numpy()


def _top(errors, k, baseline, divide=True, largest_first=True):
    ratio = errors / baseline if divide else errors
    top = np.argsort(-ratio, axis=1)[:, :k]
    return top if largest_first else top[:, ::-1]


def _pca_latent(train, test, components, divide=True, scale_test_by_itself=False):
    from sklearn.decomposition import PCA

    scaler = Scaler.fit(train)
    pca = PCA(n_components=components).fit(scaler.transform(train))
    codes = pca.transform((Scaler.fit(test) if scale_test_by_itself else scaler).transform(test))
    return ((codes**2) / (pca.explained_variance_ if divide else 1.0)).sum(axis=1)


def _trimmed(per_row, trim, drop="highest", detach=False):
    keep = per_row.numel() - int(trim * per_row.numel())
    kept = torch.sort(per_row, descending=(drop == "lowest")).values[:keep]
    return kept.mean().detach() if detach else kept.mean()


def _honest_attacker(client, factor):
    return lambda i, state, glob, rnd: {k: glob[k] + factor * (state[k] - glob[k]) for k in glob}


def _center(sums, counts, eps, weighted=True, rule=True, signed=True, torch_sign=False):
    if weighted:
        mean = torch.stack(sums).sum(dim=0) / sum(counts)
    else:
        mean = torch.stack([s / n for s, n in zip(sums, counts, strict=True)]).mean(dim=0)
    if not rule:
        return mean
    sign = torch.where(mean < 0, -1.0, 1.0) if signed else torch.ones_like(mean)
    if torch_sign:  # the learner's likely slip: torch.sign leaves an exact zero at 0
        sign = torch.sign(mean)
    return torch.where(mean.abs() < eps, sign.to(mean.dtype) * eps, mean)


def _collapsed(scores, spread="iqr", relative=True, zero=True):
    q25, median, q75 = np.percentile(scores, [25, 50, 75])
    width = q75 - q25 if spread == "iqr" else np.std(scores)
    if median == 0:
        return zero
    return bool(width < (0.01 * (median if spread == "iqr" else np.mean(scores)) if relative else 1e-6))


def _svdd_parts(model, x):
    return model.encode(x) - model.center


WRONG_ANSWERS = [
    # (check, wrong answer(s), text the hint must contain)
    (nb00.check_feature_stats, [lambda rows: (len(rows), rows.sum(0), (rows**2).sum(0))], "return a FeatureStats"),
    (nb00.check_feature_stats, [lambda rows: FeatureStats(len(rows), rows.sum(1), (rows**2).sum(0))],
     "sum over rows (axis=0)"),
    (nb00.check_feature_stats, [lambda rows: FeatureStats(len(rows), rows.sum(0), np.abs(rows).sum(0))],
     "sum of squared values"),
    (nb00.check_leaves_the_client, [lambda items: set(items)], "does not leave the client"),
    (nb00.check_leaves_the_client, [lambda items: {"model weights"} & set(items)], "does leave the client"),
    (nb01.check_norm_score, [lambda f: np.linalg.norm(f, axis=0)], "reduce over the features (axis=1)"),
    (nb01.check_norm_score, [lambda f: -np.linalg.norm(f, axis=1)], "do not rank rows like their Euclidean norm"),
    (nb01.check_split, [_split_last_rows], "the test rows are the last rows"),
    (nb01.check_split, [_split_unseeded], "the same seed must give the same split"),
    (nb01.check_split, [_split_ignoring_seed], "a different seed should give a different split"),
    (nb01.check_anomaly_share, [_percent_share], "not a percentage"),
    (nb02.check_reconstruction_score, [lambda m, x: ((m(x) - x) ** 2).sum(dim=1)], "you summed"),
    (nb02.check_reconstruction_score, [lambda m, x: ((m(x) - x) ** 2).mean(dim=1).sqrt()], "RMSE"),
    (nb02.check_reconstruction_score, [lambda m, x: ((m(x) - x) ** 2).mean(dim=0)], "not over the rows"),
    (nb02.check_percentile_threshold, [lambda s, q: np.percentile(s, q / 100)], "q is given in percent"),
    (nb02.check_percentile_threshold, [lambda s, q: np.percentile(s, q, method="higher")], "Interpolate linearly"),
    (nb02.check_precision_recall_f1, [lambda y, f: _metrics(y, f, swap=True)], "precision and recall are swapped"),
    (nb02.check_precision_recall_f1, [lambda y, f: _metrics(y, f)[:2] + (0.5,)], "harmonic mean"),
    (nb03.check_kl_divergence, [lambda mu, lv: (mu**2 + lv.exp() - 1 - lv).sum(dim=1)], "factor 1/2"),
    (nb03.check_kl_divergence, [lambda mu, lv: 0.5 * (mu**2 + (2 * lv).exp() - 1 - 2 * lv).sum(dim=1)],
     "logvar is the log of the variance"),
    (nb03.check_kl_divergence, [lambda mu, lv: 0.5 * (mu**2 + lv.exp() - 1 - lv).mean(dim=1)], "closed form"),
    (nb03.check_reparameterise, [lambda mu, lv: _reparameterise(mu, lv, shared_noise=True)], "its own random noise"),
    (nb03.check_reparameterise, [lambda mu, lv: _reparameterise(mu, lv, sigma=torch.exp)], "not exp(logvar)"),
    (nb03.check_reparameterise, [lambda mu, lv: _reparameterise(mu, lv).detach()], "no gradient flows through z"),
    (nb03.check_negative_elbo, [lambda vae, x: _elbo_parts(vae, x)[0]], "only the reconstruction term"),
    (nb03.check_negative_elbo, [lambda vae, x: sum(_elbo_parts(vae, x)[:2])], "multiply the KL term by"),
    (nb03.check_negative_elbo, [lambda vae, x: 2 * _elbo_parts(vae, x)[0] + 0.3 * _elbo_parts(vae, x)[1]],
     "0.5 * the sum of squared errors"),
    (nb03.check_negative_elbo, [lambda vae, x: _elbo_parts(vae, x)[0] / x.shape[1] + 0.3 * _elbo_parts(vae, x)[1]],
     "(not a mean)"),
    (nb03.check_negative_elbo, [lambda vae, x: vae.row_loss(x)], "score with z = mu"),
    (nb04.check_fedavg, [lambda st, w: fedavg(st, [1] * len(w))], "you took the plain mean"),
    (nb04.check_fedavg, [lambda st, w: fedavg_dividing_by(st, w, total=1.0)], "divide by the sum"),
    (nb04.check_fedavg, [fedavg_in_place], "do not modify the clients' state dicts"),
    (nb04.check_sample_clients, [lambda n, f, s, r: _clients(n, f, s, r, order=list)], "sorted"),
    (nb04.check_sample_clients, [lambda n, f, s, r: _clients(n, f, s, r, rng=lambda s, r: np.random.default_rng())],
     "the same (seed, round) must give the same clients"),
    (nb04.check_sample_clients, [lambda n, f, s, r: _clients(n, f, s, r, rng=lambda s, r: np.random.default_rng(s))],
     "the choice must depend on the round"),
    (nb04.check_sample_clients, [_clients_rounded_down], "clients, got"),
    (nb04.check_aggregate_scaler, [_scaler_of_means], "you averaged the clients' means"),
    (nb04.check_aggregate_scaler, [_scaler_of_stds], "std differs from the pooled"),
    (nb05.check_histogram_quantile, [lambda c, e, q: _histogram_quantile(c, e, q, interpolate=False)],
     "interpolate linearly inside it"),
    (nb05.check_histogram_quantile, [lambda c, e, q: float(e[1])], "find the first bin"),
    (nb05.check_fpr_threshold, [lambda s, fpr: np.percentile(s, 100 * fpr)], "you flag the bottom of the scores"),
    (nb05.check_fpr_threshold, [lambda s, fpr: np.percentile(s, 100 * (1 - 2 * fpr))], "the (1 - fpr) quantile"),
    (nb05.check_expected_cost, [lambda *a: _cost(*a, total=True)], "you returned the total cost"),
    (nb05.check_expected_cost, [lambda y, s, t, fp, fn: _cost(y, s, t, fn, fp)], "costs swapped"),
    (nb05.check_expected_cost, [lambda *a: _cost(*a, inclusive=True)], "strictly above"),
    (nb07.check_average_path_length, [path_length_no_special_cases], "special cases"),
    (nb07.check_average_path_length, [lambda n: average_path_length(n) if n <= 2 else 2.0 * np.log(n - 1)],
     "np.euler_gamma"),
    (nb07.check_pooled_scores, [lambda s, t, psi: np.mean(s, axis=0)], "averaging the scores is not exact"),
    (nb07.check_pooled_scores, [lambda s, t, psi: pooled_depths(s, t, psi, weighted=False)],
     "weight each client's mean path length"),
    (nb07.check_mahalanobis, [lambda tr, te: ((te - tr.mean(0)) ** 2).sum(1)], "Euclidean distance"),
    (nb07.check_mahalanobis, [lambda tr, te: ((te - te.mean(0)) ** 2 / tr.var(0)).sum(1)], "inverse of the training"),
    (nb08.check_sliding_windows, [lambda f, w: _windows(f, w, by_metric=True)], "flattened metric by metric"),
    (nb08.check_sliding_windows, [lambda f, w: _windows(f[::-1], w)], "window i holds steps i"),
    (nb08.check_event_recall, [_recall_starting_inside], "not only when it starts inside the event"),
    (nb08.check_event_recall, [lambda *a: 0.5], "count the events with at least one"),
    (nb08.check_false_alarm_episodes, [lambda alarms, labels: int(np.sum(alarms & (labels == 0)))],
     "you counted windows"),
    (nb08.check_false_alarm_episodes, [lambda alarms, labels: 0], "split the alarms into runs"),
    (nb09.check_ks_statistic, [_ks_of_pdfs], "lies between 0 and 1"),
    (nb09.check_ks_statistic, [lambda a, b: abs(np.mean(a) - np.mean(b)) / 10], "empirical CDFs"),
    (nb09.check_psi, [lambda ref, rec, bins: psi(rec, ref, bins)], "REFERENCE scores' quantiles"),
    (nb09.check_psi, [lambda ref, rec, bins: -psi(ref, rec, bins)], "so the PSI is too"),
    (nb09.check_psi, [lambda ref, rec, bins: 2 * psi(ref, rec, bins)], "floored at 1e-4"),
    (nb09.check_alarm_rate_per_window, [lambda s, t, w: _rates(s, t, w, inclusive=True)], "strictly above"),
    (nb09.check_alarm_rate_per_window, [lambda s, t, w: _rates(s, t, w)[:-1]], "the last one may be shorter"),
    (nb10.check_clipped_average, [lambda g, st, c, n: _average_updates(g, st, c, n, clip_first=False)],
     "you averaged without clipping"),
    (nb10.check_clipped_average, [lambda g, st, c, n: _average_updates(g, st, c, n, divide_by_updates=True)],
     "divide the sum of the clipped updates by num_clients"),
    (nb10.check_add_noise, [_noise], "you forgot to divide by num_clients"),
    (nb10.check_add_noise, [lambda st, c, s, n, g: _noise(st, c, s, n, g, std=s * c / n, use_generator=False)],
     "draw the noise from the generator you are given"),
    (nb10.check_rounds_for_budget, [lambda *a: _rounds(*a, offset=-1)], "find the largest number of rounds"),
    (nb10.check_rounds_for_budget, [lambda *a: _rounds(*a, offset=1)], "over the budget"),
    (nb11.check_median, [_lower_median], "torch.median returns the lower"),
    (nb11.check_median, [lambda g, st, w, r: fedavg(st, w)], "that is FedAvg's weighted mean"),
    (nb11.check_norm_clipping, [lambda g, st, w, m: fedavg(st, w)], "no client was clipped"),
    (nb11.check_scaled_attack, [lambda client, factor: None], "return a function"),
    (nb11.check_scaled_attack, [_honest_attacker], "is honest: return its weights unchanged"),
    (nb12.check_feature_errors, [_feature_errors_unscaled], "scale the rows with detector.scaler.transform"),
    (nb12.check_top_features, [lambda e, k, b: _top(e, k, b, divide=False)], "divide the errors by the baseline"),
    (nb12.check_top_features, [lambda e, k, b: _top(e, k, b, largest_first=False)], "wrong order"),
    (nb12.check_chance_hit_rate, [lambda d, t, k: t * k / d], "C(d - t, k) / C(d, k)"),
    (nb13.check_pca_latent, [lambda tr, te, c: _pca_latent(tr, te, c, divide=False)], "explained variance"),
    (nb13.check_pca_latent, [lambda tr, te, c: _pca_latent(tr, te, c, scale_test_by_itself=True)],
     "with the TRAINING rows' mean and std"),
    (nb13.check_trimmed_mean, [lambda per_row, trim: _trimmed(per_row, trim, drop="lowest")], "HIGHEST loss"),
    (nb13.check_trimmed_mean, [lambda per_row, trim: _trimmed(per_row, trim, detach=True)], "lost its gradient"),
    (nb13.check_trimmed_mean, [lambda per_row, trim: _trimmed(per_row, trim).detach().numpy()], "a torch tensor"),
    (nb14.check_center, [lambda s, n, eps: _center(s, n, eps, weighted=False)], "you averaged the clients' means"),
    (nb14.check_center, [lambda s, n, eps: _center(s, n, eps, rule=False)], "(the eps rule)"),
    (nb14.check_center, [lambda s, n, eps: _center(s, n, eps, signed=False)], "keep each small coordinate's sign"),
    (nb14.check_center, [lambda s, n, eps: _center(s, n, eps, torch_sign=True)], "an exact zero has no sign"),
    (nb14.check_center, [lambda s, n, eps: _center(s, n, eps)[:2]], "return one centre"),
    (nb14.check_center, [lambda s, n, eps: 2 * _center(s, n, eps)], "divide the summed sums by the summed counts"),
    (nb14.check_collapse, [lambda scores: not _collapsed(scores)], "every answer is the opposite"),
    (nb14.check_collapse, [lambda scores: _collapsed(scores, relative=False)], "not with a fixed number"),
    (nb14.check_collapse, [lambda scores: _collapsed(scores, spread="std")], "measure the spread with the quartiles"),
    (nb14.check_collapse, [lambda scores: _collapsed(scores, zero=False)], "scores that are all 0 are all equal"),
    (nb14.check_collapse, [lambda scores: float(_collapsed(scores))], "return True or False"),
    (nb14.check_svdd_score, [lambda m, x: (_svdd_parts(m, x) ** 2).sum(dim=1).sqrt()], "SQUARED distance"),
    (nb14.check_svdd_score, [lambda m, x: (_svdd_parts(m, x) ** 2).mean(dim=1)], "sums them"),
    (nb14.check_svdd_score, [lambda m, x: (m.encode(x) ** 2).sum(dim=1)], "subtract model.center"),
    (nb14.check_svdd_score, [lambda m, x: (_svdd_parts(m, x) ** 2).sum(dim=0)], "not over the rows"),
    (nb14.check_svdd_score, [lambda m, x: (_svdd_parts(m, x).abs()).sum(dim=1)], "model.score(x)"),
]


@pytest.mark.parametrize(("check", "answers", "hint"), [
    pytest.param(check, answers, hint, id=f"{check.__module__.rsplit('.', 1)[1]}.{check.__name__}: {hint}")
    for check, answers, hint in WRONG_ANSWERS])
def test_a_typical_wrong_answer_gets_its_hint(check, answers, hint):
    outcome = check(*answers)
    assert outcome.status == "wrong", outcome
    assert hint in outcome.message, outcome.message


@pytest.mark.parametrize(("check", "answers", "hint"), [
    (nb06.check_array_record, (_record_as_state_dict, lambda record, spec: None), "flwr.app.ArrayRecord"),
    (nb06.check_scaler_from_replies, (_scaler_from_client_stds,), "pooled sum of squares"),
])
def test_the_flower_hints(check, answers, hint):
    pytest.importorskip("flwr")
    outcome = check(*answers)
    assert outcome.status == "wrong" and hint in outcome.message, outcome.message


def test_fedavg_in_float64_is_correct():
    assert nb04.check_fedavg(_fedavg_float64).status == "correct"


def test_the_centre_in_float64_and_the_collapse_test_on_numpy_booleans_are_correct():
    assert nb14.check_center(_center).status == "correct"
    assert nb14.check_collapse(lambda scores: np.bool_(_collapsed(scores))).status == "correct"
    assert nb14.check_svdd_score(lambda m, x: (_svdd_parts(m, x).double() ** 2).sum(dim=1)).status == "correct"
