"""Every hint of the checks of chapters 00-06, reached by a plausible wrong answer, and none of them raises.

A learner who gets an answer wrong should read what is wrong, never a Python error from the check itself
("your code raised TypeError ..." when the check failed to unpack an answer of another shape). Each case
below is one branch of one check: the answer a learner might plausibly write that takes it, and words
the hint must contain. ``tests/test_exercises.py`` covers the placeholder and the random state of every
check; this file covers every hint path of chapters 00-06 (fast: each check runs on small fresh data).
"""

import numpy as np
import pytest
import torch
from wrong_answers import fedavg_dividing_by, fedavg_in_place

from fedad_tutorial.exercises import nb00, nb01, nb02, nb03, nb04, nb05, nb06
from fedad_tutorial.federated import fedavg
from fedad_tutorial.scaling import FeatureStats, Scaler, federated_scaler

# --- chapter 00 -------------------------------------------------------------------------------------------


def _stats(rows, count=None, total=None, total_sq=None):
    x = np.asarray(rows, dtype=np.float64)
    return FeatureStats(len(x) if count is None else count, x.sum(0) if total is None else total,
                        (x**2).sum(0) if total_sq is None else total_sq)


def _stats_slightly_off(rows):
    """Statistics within the per-client tolerance whose error the server's subtraction magnifies."""
    x = np.asarray(rows, dtype=np.float64)
    return _stats(x, total_sq=(x**2).sum(0) * (1 + 9e-6))


def _shared(items, extra=(), drop=()):
    keep = ({"model weights", "row count", "feature sums", "score histogram"} | set(extra)) - set(drop)
    return {item for item in items if item in keep}


def _no_return(*args):
    return None


# --- chapter 01 -------------------------------------------------------------------------------------------


def _split(n, fraction, seed, *, rng=None, last=False, as_float=False, overlap=False, duplicate=False,
           short=False, n_test=None):
    n_test = min(n - 1, max(1, int(round(fraction * n)))) if n_test is None else n_test
    order = np.arange(n)[::-1] if last else (rng or np.random.default_rng(seed)).permutation(n)
    train, test = np.sort(order[n_test:]), np.sort(order[:n_test])
    if overlap:
        train = np.append(train, test[0])
    if duplicate:
        test = np.append(test, test[0])
    if short:
        train = train[1:]
    return (train.astype(float), test.astype(float)) if as_float else (train, test)


def _percent(nodes):
    return {n.name: 100.0 * float(n.labels.mean()) for n in nodes}


def _share_of_normal(nodes):
    return {n.name: float(1 - n.labels.mean()) for n in nodes}


# --- chapter 02 -------------------------------------------------------------------------------------------


def _metrics(labels, flagged, swap=False, f1=None):
    tp = int(np.sum((labels == 1) & (flagged == 1)))
    fp, fn = int(np.sum((labels == 0) & (flagged == 1))), int(np.sum((labels == 1) & (flagged == 0)))
    precision, recall = tp / (tp + fp) if tp + fp else 0.0, tp / (tp + fn) if tp + fn else 0.0
    f = (2 * precision * recall / (precision + recall) if precision + recall else 0.0) if f1 is None else f1
    return (recall, precision, f) if swap else (precision, recall, f)


def _metrics_nan_when_nothing_flagged(labels, flagged):
    precision, recall, f1 = _metrics(labels, flagged)
    return (float("nan"), recall, float("nan")) if not flagged.any() else (precision, recall, f1)


# --- chapter 03 -------------------------------------------------------------------------------------------


def _kl(mu, logvar, scale=0.5, sigma_sq=torch.exp, reduce="sum", offset=0.0):
    per_dim = scale * (mu**2 + sigma_sq(logvar) - 1.0 - torch.log(sigma_sq(logvar)))
    return (per_dim.sum(dim=1) if reduce == "sum" else per_dim.mean(dim=1) if reduce == "mean"
            else per_dim.sum()) + offset


def _sample(mu, logvar, *, noise="own", sigma=lambda lv: torch.exp(0.5 * lv), detach_mu=False, detach_logvar=False,
            shift=0.0, numpy=False):
    eps = {"own": torch.randn_like(mu), "shared": torch.randn(mu.shape[-1]), "none": torch.zeros_like(mu)}[noise]
    z = (mu.detach() if detach_mu else mu) + sigma(logvar.detach() if detach_logvar else logvar) * eps + shift
    return z.detach().numpy() if numpy else z


def _elbo_parts(vae, x, z=None):
    mu, logvar = vae.encode(x)
    recon = 0.5 * ((vae.decoder(mu if z is None else z) - x) ** 2).sum(dim=1)
    return recon, 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(dim=1)


# --- chapter 04 -------------------------------------------------------------------------------------------


def _fedavg_wrong_alone(states, weights):
    return fedavg(states, weights) if len(states) > 1 else {k: v + 1.0 for k, v in states[0].items()}


def _clients(num, fraction, seed, rnd, rng=lambda s, r: np.random.default_rng([s, r]), k=None, order=sorted,
             replace=False):
    k = max(1, int(round(fraction * num))) if k is None else k(num, fraction)
    return order(int(i) for i in rng(seed, rnd).choice(num, size=k, replace=replace))


def _pooled(stats):
    n = sum(s.count for s in stats)
    mean = sum(s.total for s in stats) / n
    return n, mean, np.sqrt(np.maximum(sum(s.total_sq for s in stats) / n - mean**2, 0.0))


def _mean_of_means(stats):
    return np.mean([s.total / s.count for s in stats], axis=0), _pooled(stats)[2]


def _mean_of_stds(stats):
    stds = [np.sqrt(np.maximum(s.total_sq / s.count - (s.total / s.count) ** 2, 0.0)) for s in stats]
    return _pooled(stats)[1], np.mean(stds, axis=0)


# --- chapter 05 -------------------------------------------------------------------------------------------


def _quantile(counts, edges, q, percent=100.0, interpolate=True):
    cumulative = np.cumsum(counts)
    target = q / percent * cumulative[-1]
    b = int(np.searchsorted(cumulative, target))
    below = cumulative[b - 1] if b else 0
    inside = (target - below) / max(counts[b], 1) if interpolate else 0.0
    return edges[b] + inside * (edges[b + 1] - edges[b])


def _cost(labels, scores, threshold, c_fp, c_fn, total=False, inclusive=False, mean_of=None):
    flagged = scores >= threshold if inclusive else scores > threshold
    cost = c_fp * np.sum(flagged & (labels == 0)) + c_fn * np.sum(~flagged & (labels == 1))
    return float(cost if total else cost / (len(labels) if mean_of is None else mean_of(labels)))


# --- chapter 06 -------------------------------------------------------------------------------------------


def _to_record(model):
    from flwr.app import ArrayRecord

    return ArrayRecord(model.state_dict())


def _to_record_renamed(model):
    from flwr.app import ArrayRecord

    return ArrayRecord({f"layer.{k}": v for k, v in model.state_dict().items()})


def _from_record(record, spec):
    model = spec.build()
    model.load_state_dict(record.to_torch_state_dict())
    return model


class _Shifted(torch.nn.Module):
    """A model with the right weights whose score differs (e.g. a hand-made class with its own score)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def state_dict(self, *args, **kwargs):
        return self.inner.state_dict(*args, **kwargs)

    def score(self, rows):
        return self.inner.score(rows) + 1.0


def _replies_stats(records):
    return [FeatureStats(int(r["count"]), np.asarray(r["total"]), np.asarray(r["total-sq"])) for r in records]


def _scaler_mean_of_means(records):
    stats = _replies_stats(records)
    want = federated_scaler(stats)
    return Scaler(np.mean([s.total / s.count for s in stats], axis=0), want.std)


def _scaler_mean_of_stds(records):
    stats = _replies_stats(records)
    stds = [np.sqrt(np.maximum(s.total_sq / s.count - (s.total / s.count) ** 2, 1e-12)) for s in stats]
    return Scaler(federated_scaler(stats).mean, np.mean(stds, axis=0))


def _scaler_tuple(records):
    scaler = federated_scaler(_replies_stats(records))
    return scaler.mean, scaler.std


CASES = [
    # (check, the wrong answer(s), words the hint must contain)
    # 0.1 a client's feature statistics
    (nb00.check_feature_stats, [lambda rows: (len(rows), rows.sum(0), (rows**2).sum(0))], "return a FeatureStats"),
    (nb00.check_feature_stats, [lambda rows: _stats(rows, count=rows.shape)], "count should be the number of rows"),
    (nb00.check_feature_stats, [lambda rows: _stats(rows, count=rows.shape[1])], "count should be the number of rows"),
    (nb00.check_feature_stats, [lambda rows: _stats(rows, total=rows.sum(1))], "one sum per feature"),
    (nb00.check_feature_stats, [lambda rows: _stats(rows, total=rows.mean(0))], "the per-feature sum"),
    (nb00.check_feature_stats, [lambda rows: _stats(rows, total_sq=rows.sum(0) ** 2)], "sum of squared values"),
    (nb00.check_feature_stats, [_stats_slightly_off], "sum in float64"),
    (nb00.check_feature_stats, [_no_return], "return a FeatureStats"),
    # 0.2 what leaves the client
    (nb00.check_leaves_the_client, [lambda items: set(items) | {"gradients"}], "only items from the list"),
    (nb00.check_leaves_the_client, [lambda items: _shared(items, extra={"row scores"})], "does not leave the client"),
    (nb00.check_leaves_the_client, [lambda items: _shared(items, drop={"score histogram"})], "does leave the client"),
    (nb00.check_leaves_the_client, [_no_return], "did you forget `return`?"),
    (nb00.check_leaves_the_client, [lambda items: "model weights"], "return a set of item names"),
    # 1.1 the norm score
    (nb01.check_norm_score, [lambda f: np.sqrt((f**2).sum(axis=0))], "reduce over the features (axis=1)"),
    (nb01.check_norm_score, [lambda f: np.where(f[:, 0] > 0, np.linalg.norm(f, axis=1), np.nan)], "NaN or infinite"),
    (nb01.check_norm_score, [lambda f: np.abs(f).max(axis=1)], "do not rank rows like their Euclidean norm"),
    # 1.2 a held-out split
    (nb01.check_split, [lambda n, f, s: _split(n, f, s)[1]], "return a pair (train_idx, test_idx)"),
    (nb01.check_split, [lambda n, f, s: [_split(n, f, s)[0]]], "return a pair (train_idx, test_idx)"),
    (nb01.check_split, [lambda n, f, s: tuple(np.atleast_2d(p) for p in _split(n, f, s))], "two 1-D arrays"),
    (nb01.check_split, [lambda n, f, s: _split(n, f, s, as_float=True)], "indices must be integers"),
    (nb01.check_split, [lambda n, f, s: _split(n, f, s, overlap=True)], "a leak"),
    (nb01.check_split, [lambda n, f, s: _split(n, f, s, duplicate=True)], "an index appears twice"),
    (nb01.check_split, [lambda n, f, s: _split(n, f, s, short=True)], "cover every row"),
    (nb01.check_split, [lambda n, f, s: _split(n, f, s, n_test=int(f * n) + 1)], "round(test_fraction * n_rows)"),
    (nb01.check_split, [lambda n, f, s: _split(n, f, s, last=True)], "the test rows are the last rows"),
    (nb01.check_split, [lambda n, f, s: _split(n, f, s, rng=np.random.default_rng())], "the same seed must give"),
    (nb01.check_split, [lambda n, f, s: _split(n, f, s, rng=np.random.default_rng(0))], "a different seed should"),
    # 1.3 anomalies per node
    (nb01.check_anomaly_share, [lambda nodes: [float(n.labels.mean()) for n in nodes]], "return a dict"),
    (nb01.check_anomaly_share, [lambda nodes: {i: float(n.labels.mean()) for i, n in enumerate(nodes)}],
     "the keys should be the node names"),
    (nb01.check_anomaly_share, [_percent], "not a percentage"),
    (nb01.check_anomaly_share, [_share_of_normal], "anomalous rows / all rows"),
    # 2.1 the reconstruction-error score
    (nb02.check_reconstruction_score, [lambda m, x: ((m(x) - x) ** 2).mean(dim=0)], "not over the rows"),
    (nb02.check_reconstruction_score, [lambda m, x: ((m(x) - x) ** 2).sum(dim=1)], "you summed"),
    (nb02.check_reconstruction_score, [lambda m, x: ((m(x) - x) ** 2).mean(dim=1).sqrt()], "RMSE"),
    (nb02.check_reconstruction_score, [lambda m, x: (m(x) - x).abs().mean(dim=1)], "differ from model.score(x)"),
    (nb02.check_reconstruction_score, [_no_return], "did you forget `return`?"),
    # 2.2 a percentile threshold
    (nb02.check_percentile_threshold, [lambda s, q: np.percentile(s, q / 100)], "q is given in percent"),
    (nb02.check_percentile_threshold, [lambda s, q: np.percentile(s, q, method="higher")], "Interpolate linearly"),
    (nb02.check_percentile_threshold, [lambda s, q: np.percentile(s, [q], method="lower")], "Interpolate linearly"),
    (nb02.check_percentile_threshold, [lambda s, q: np.percentile(s, [q, 100 - q])], "(one number)"),
    (nb02.check_percentile_threshold, [_no_return], "did you forget `return`?"),
    # 2.3 precision, recall and F1
    (nb02.check_precision_recall_f1, [lambda y, f: _metrics(y, f)[:2]], "return a tuple (precision, recall, f1)"),
    (nb02.check_precision_recall_f1, [_no_return], "return a tuple (precision, recall, f1)"),
    (nb02.check_precision_recall_f1, [lambda y, f: _metrics(y, f, swap=True)], "precision and recall are swapped"),
    (nb02.check_precision_recall_f1, [lambda y, f: _metrics(y, f, f1=0.5)], "harmonic mean"),
    (nb02.check_precision_recall_f1, [_metrics_nan_when_nothing_flagged], "a ratio with a zero denominator is 0"),
    (nb02.check_precision_recall_f1, [lambda y, f: ("high", 0.5, 0.5)], "return precision (one number)"),
    # 3.1 the KL divergence
    (nb03.check_kl_divergence, [lambda mu, lv: _kl(mu, lv, reduce="all")], "one KL value per row"),
    (nb03.check_kl_divergence, [lambda mu, lv: _kl(mu, lv, scale=1.0)], "factor 1/2"),
    (nb03.check_kl_divergence, [lambda mu, lv: _kl(mu, lv, sigma_sq=lambda v: torch.exp(2 * v))], "sigma^2 = exp"),
    (nb03.check_kl_divergence, [lambda mu, lv: _kl(mu, lv, reduce="mean")], "closed form"),
    (nb03.check_kl_divergence, [lambda mu, lv: _kl(mu, lv, offset=1e-5)], "must be 0"),
    # 3.2 the reparameterisation trick
    (nb03.check_reparameterise, [lambda mu, lv: _sample(mu, lv)[:, :2]], "return a tensor shaped like mu"),
    (nb03.check_reparameterise, [lambda mu, lv: _sample(mu, lv, numpy=True)], "return a tensor shaped like mu"),
    (nb03.check_reparameterise, [lambda mu, lv: _sample(mu, lv, noise="shared")], "its own random noise"),
    (nb03.check_reparameterise, [lambda mu, lv: _sample(mu, lv, shift=0.5)], "expected mu"),
    (nb03.check_reparameterise, [lambda mu, lv: _sample(mu, lv, sigma=torch.exp)], "not exp(logvar)"),
    (nb03.check_reparameterise, [lambda mu, lv: _sample(mu, lv, sigma=lambda v: 2 * torch.exp(0.5 * v))],
     "z = mu + exp(0.5 * logvar) * eps"),
    (nb03.check_reparameterise, [lambda mu, lv: _sample(mu, lv).detach()], "no gradient flows through z"),
    (nb03.check_reparameterise, [lambda mu, lv: _sample(mu, lv, detach_mu=True)], "with respect to mu should be 1"),
    (nb03.check_reparameterise, [lambda mu, lv: _sample(mu, lv, detach_logvar=True)], "no gradient reaches logvar"),
    # 3.3 the negative-ELBO score
    (nb03.check_negative_elbo, [lambda vae, x: _elbo_parts(vae, x)[0][:5]], "one score per row"),
    (nb03.check_negative_elbo, [lambda vae, x: vae.row_loss(x)], "score with z = mu"),
    (nb03.check_negative_elbo, [lambda vae, x: _elbo_parts(vae, x)[0]], "only the reconstruction term"),
    (nb03.check_negative_elbo, [lambda vae, x: sum(_elbo_parts(vae, x))], "multiply the KL term by"),
    (nb03.check_negative_elbo, [lambda vae, x: 2 * _elbo_parts(vae, x)[0] + 0.3 * _elbo_parts(vae, x)[1]],
     "0.5 * the sum of squared errors"),
    (nb03.check_negative_elbo, [lambda vae, x: _elbo_parts(vae, x)[0] / 4 + 0.3 * _elbo_parts(vae, x)[1]],
     "not a mean"),
    (nb03.check_negative_elbo, [lambda vae, x: _elbo_parts(vae, x)[0] / 8 + 0.3 * _elbo_parts(vae, x)[1]],
     "not a mean"),
    (nb03.check_negative_elbo, [lambda vae, x: _elbo_parts(vae, x)[0] - 0.3 * _elbo_parts(vae, x)[1]],
     "differ from vae.score(x, 'elbo')"),
    # 4.1 FedAvg
    (nb04.check_fedavg, [lambda st, w: list(fedavg(st, w).values())], "return a dict like a state_dict"),
    (nb04.check_fedavg, [lambda st, w: {f"m.{k}": v for k, v in fedavg(st, w).items()}], "keys differ"),
    (nb04.check_fedavg, [lambda st, w: {k: v.flatten() for k, v in fedavg(st, w).items()}], "expected shape"),
    (nb04.check_fedavg, [lambda st, w: fedavg(st, [1] * len(w))], "you took the plain mean"),
    (nb04.check_fedavg, [lambda st, w: fedavg_dividing_by(st, w, total=1.0)], "divide by the sum of the weights"),
    (nb04.check_fedavg, [fedavg_in_place], "do not modify the clients' state dicts"),
    (nb04.check_fedavg, [_fedavg_wrong_alone], "with a single client"),
    # 4.2 client sampling
    (nb04.check_sample_clients, [lambda n, f, s, r: _clients(n, f, s, r, k=lambda n, f: max(1, int(f * n)))],
     "clients, got"),
    (nb04.check_sample_clients, [lambda n, f, s, r: _clients(n, f, s, r, replace=True)], "picked twice"),
    (nb04.check_sample_clients, [lambda n, f, s, r: [i + 1 for i in _clients(n, f, s, r)]], "must lie in range"),
    (nb04.check_sample_clients, [lambda n, f, s, r: _clients(n, f, s, r, order=list)], "sorted"),
    (nb04.check_sample_clients, [lambda n, f, s, r: _clients(n, f, s, r, rng=lambda s, r: np.random.default_rng())],
     "the same (seed, round)"),
    (nb04.check_sample_clients, [lambda n, f, s, r: _clients(n, f, s, r, rng=lambda s, r: np.random.default_rng(s))],
     "depend on the round"),
    (nb04.check_sample_clients, [lambda n, f, s, r: _clients(n, f, s, r, rng=lambda s, r: np.random.default_rng(
        [s, r % 2]))], "only a few clients were ever picked"),
    # 4.3 a scaler from client statistics
    (nb04.check_aggregate_scaler, [federated_scaler], "got a Scaler"),
    (nb04.check_aggregate_scaler, [lambda stats: federated_scaler(stats).mean], "return a tuple (mean, std)"),
    (nb04.check_aggregate_scaler, [lambda stats: _pooled(stats)], "got a tuple of 3 values"),
    (nb04.check_aggregate_scaler, [lambda stats: ("mean", "std")], "arrays of numbers"),
    (nb04.check_aggregate_scaler, [lambda stats: (_pooled(stats)[1][:3], _pooled(stats)[2])], "shapes (6,)"),
    (nb04.check_aggregate_scaler, [_mean_of_means], "you averaged the clients' means"),
    (nb04.check_aggregate_scaler, [lambda stats: (_pooled(stats)[1] + 1, _pooled(stats)[2])],
     "sum of totals / sum of counts"),
    (nb04.check_aggregate_scaler, [_mean_of_stds], "std differs from the pooled"),
    # 5.1 a quantile from a histogram
    (nb05.check_histogram_quantile, [lambda c, e, q: _quantile(c, e, q, interpolate=False)], "interpolate linearly"),
    (nb05.check_histogram_quantile, [lambda c, e, q: float(e[1])], "find the first bin"),
    (nb05.check_histogram_quantile, [lambda c, e, q: _quantile(c, e, q, percent=1.0)], "q / 100 * total"),
    (nb05.check_histogram_quantile, [_no_return], "did you forget `return`?"),
    # 5.2 a threshold for a target false-positive rate
    (nb05.check_fpr_threshold, [lambda s, fpr: np.percentile(s, 100 * fpr)], "you flag the bottom of the scores"),
    (nb05.check_fpr_threshold, [lambda s, fpr: np.percentile(s, 100 * (1 - 2 * fpr))], "the (1 - fpr) quantile"),
    # 5.3 the expected cost of a threshold
    (nb05.check_expected_cost, [lambda *a: _cost(*a, total=True)], "you returned the total cost"),
    (nb05.check_expected_cost, [lambda *a: _cost(*a, inclusive=True)], "strictly above"),
    (nb05.check_expected_cost, [lambda y, s, t, fp, fn: _cost(y, s, t, fn, fp)], "costs swapped"),
    (nb05.check_expected_cost, [lambda *a: _cost(*a, mean_of=lambda y: max(1, int(y.sum())))],
     "cost_missed * missed anomalies"),
]

FLOWER_CASES = [
    # 6.1 a model as an ArrayRecord
    (nb06.check_array_record, [lambda model: model.state_dict(), _from_record], "flwr.app.ArrayRecord"),
    (nb06.check_array_record, [_to_record_renamed, _from_record], "under the same names"),
    (nb06.check_array_record, [_to_record, lambda record, spec: record.to_torch_state_dict()], "return a model"),
    (nb06.check_array_record, [_to_record, lambda record, spec: spec.build()], "differ after the round trip"),
    (nb06.check_array_record, [_to_record, lambda record, spec: _Shifted(_from_record(record, spec))],
     "scores rows differently"),
    # 6.2 the global scaler from stats replies
    (nb06.check_scaler_from_replies, [_scaler_tuple], "return a fedad_tutorial.scaling.Scaler"),
    (nb06.check_scaler_from_replies, [_scaler_mean_of_means], "divided by the sum of their counts"),
    (nb06.check_scaler_from_replies, [_scaler_mean_of_stds], "pooled sum of squares"),
]


def _case_id(check, hint):
    return f"{check.__module__.rsplit('.', 1)[1]}.{check.__name__}: {hint}"


def _assert_hint(check, answers, hint):
    outcome = check(*answers)
    assert outcome.status == "wrong", outcome
    assert hint in outcome.message, outcome.message
    assert "your code raised" not in outcome.message, outcome.message  # the check, not the learner, failed


@pytest.mark.parametrize(("check", "answers", "hint"),
                         [pytest.param(*case, id=_case_id(case[0], case[2])) for case in CASES])
def test_a_plausible_wrong_answer_gets_its_hint(check, answers, hint):
    _assert_hint(check, answers, hint)


@pytest.mark.parametrize(("check", "answers", "hint"),
                         [pytest.param(*case, id=_case_id(case[0], case[2])) for case in FLOWER_CASES])
def test_a_plausible_wrong_flower_answer_gets_its_hint(check, answers, hint):
    pytest.importorskip("flwr")
    _assert_hint(check, answers, hint)


def test_a_crash_in_the_learners_code_is_reported_as_theirs():
    """A learner's own exception is named as theirs (type and message), and the notebook carries on."""
    def crashes(rows):
        return rows["cpu"]

    outcome = nb00.check_feature_stats(crashes)
    assert outcome.status == "wrong"
    assert outcome.message.startswith("your code raised IndexError"), outcome.message


@pytest.mark.parametrize("answer", [
    pytest.param(lambda stats: tuple(federated_scaler(stats).__dict__.values()), id="a tuple of arrays"),
    pytest.param(lambda stats: [federated_scaler(stats).mean.tolist(), federated_scaler(stats).std.tolist()],
                 id="a list of lists"),
])
def test_the_scaler_exercise_accepts_any_pair_of_arrays(answer):
    assert nb04.check_aggregate_scaler(answer).status == "correct"


def test_the_feature_stats_exercise_accepts_float_counts_and_list_sums():
    answer = lambda rows: FeatureStats(float(len(rows)), rows.sum(0).tolist(), (rows**2).sum(0).tolist())  # noqa: E731
    assert nb00.check_feature_stats(answer).status == "correct"


def test_the_metrics_exercise_accepts_an_array():
    assert nb02.check_precision_recall_f1(lambda y, f: np.array(_metrics(y, f))).status == "correct"


def test_every_check_of_chapters_00_to_06_is_covered():
    """A new check (or a renamed one) must come with its wrong answers here."""
    import inspect

    covered = {check for check, _, _ in CASES + FLOWER_CASES}
    for module in (nb00, nb01, nb02, nb03, nb04, nb05, nb06):
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("check_") and fn.__module__ == module.__name__:
                assert fn in covered, f"{module.__name__}.{name} has no wrong answer in this file"

