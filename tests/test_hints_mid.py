"""Every hint of the exercise checks of chapters 07-12, reached by a plausible wrong answer, and no check that
fails on its own when an answer has the wrong type or shape.

A learner who returns ``None``, a list, a string or a tensor still attached to autograd must get a hint that
names what was expected, never "your code raised TypeError" for an error the check itself made. Each row of
``HINTS`` is one branch of one check: the wrong answer that reaches it and a piece of the hint it must print.
That right answers are accepted is proven by the solution notebooks (their check cells are checked outputs).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from wrong_answers import path_length_no_special_cases, pooled_depths

from fedad_tutorial.chapters.drift import alarm_rate_per_window, psi
from fedad_tutorial.chapters.forest import average_path_length
from fedad_tutorial.chapters.privacy import epsilon
from fedad_tutorial.chapters.robust import scaled_update_attack, update_norm
from fedad_tutorial.chapters.timeseries import sliding_windows
from fedad_tutorial.exercises import nb07, nb08, nb09, nb10, nb11, nb12
from fedad_tutorial.exercises.checking import learner_array, learner_number
from fedad_tutorial.explain import chance_hit_rate, feature_errors, top_features
from fedad_tutorial.federated import fedavg

CHECKS = {
    "7.1": nb07.check_average_path_length, "7.2": nb07.check_pooled_scores, "7.3": nb07.check_mahalanobis,
    "8.1": nb08.check_sliding_windows, "8.2": nb08.check_event_recall, "8.3": nb08.check_false_alarm_episodes,
    "9.1": nb09.check_ks_statistic, "9.2": nb09.check_psi, "9.3": nb09.check_alarm_rate_per_window,
    "10.1": nb10.check_clipped_average, "10.2": nb10.check_add_noise, "10.3": nb10.check_rounds_for_budget,
    "11.1": nb11.check_median, "11.2": nb11.check_norm_clipping, "11.3": nb11.check_scaled_attack,
    "12.1": nb12.check_feature_errors, "12.2": nb12.check_top_features, "12.3": nb12.check_chance_hit_rate,
}
ARITY = {"7.1": 1, "7.2": 3, "7.3": 2, "8.1": 2, "8.2": 4, "8.3": 2, "9.1": 2, "9.2": 3, "9.3": 3,
         "10.1": 4, "10.2": 5, "10.3": 4, "11.1": 4, "11.2": 4, "11.3": 2, "12.1": 2, "12.2": 3, "12.3": 3}


# --- plausible wrong answers ------------------------------------------------------------------------------


def _path_length_log2(n):
    return average_path_length(n) if n <= 2 else 2.0 * np.log(n - 1)


def _mahalanobis(train, test, centre_on_test=False):
    centred = test - (test if centre_on_test else train).mean(axis=0)
    return np.einsum("ij,jk,ik->i", centred, np.linalg.inv(np.cov(train.T)), centred)


def _windows_by_metric(features, window):
    return np.stack([features[i:i + window].T.ravel() for i in range(len(features) - window + 1)])


def _windows_list(features, window):
    return [features[i:i + window].ravel() for i in range(len(features) - window + 1)]


def _recall_starting_inside(alarms, starts, window, events):
    return float(np.mean([alarms[(starts >= e.start) & (starts < e.stop)].any() for e in events]))


def _ks_of_histograms(a, b):
    return float(np.abs(np.histogram(a, 10)[0] - np.histogram(b, 10)[0]).sum())


def _rates(scores, threshold, window, inclusive=False):
    flagged = scores >= threshold if inclusive else scores > threshold
    return np.array([flagged[i:i + window].mean() for i in range(0, len(scores), window)])


def _clipped_average(glob, states, clip, n, clip_first=True, divide_by_updates=False, per_tensor=False):
    total = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in glob.items()}
    for state in states:
        delta = {k: state[k].double() - glob[k].double() for k in glob}
        if per_tensor:  # clips each tensor on its own: a plausible misreading of "the update's norm"
            delta = {k: d * min(1.0, clip / float(d.norm())) for k, d in delta.items()}
        elif clip_first:
            norm = float(torch.sqrt(sum((d**2).sum() for d in delta.values())))
            delta = {k: d * min(1.0, clip / norm) for k, d in delta.items()}
        for k in total:
            total[k] += delta[k]
    denominator = len(states) if divide_by_updates else n
    return {k: glob[k].double() + total[k] / denominator for k in glob}


def _noise(state, clip, sigma, n, generator, std=None, use_generator=True, offset=0.0, in_place=False):
    std = sigma * clip if std is None else std
    out = state if in_place else {k: v.clone() for k, v in state.items()}
    for v in out.values():
        draw = torch.randn(v.shape, generator=generator) if use_generator else torch.randn(v.shape)
        v += std * draw + offset
    return out


def _rounds(sigma, rate, delta, target, offset=0):
    rounds = 0
    while epsilon(sigma, rate, rounds + 1, delta) <= target:
        rounds += 1
    return rounds + offset


def _lower_median(glob, states, weights, r):
    return {k: torch.stack([s[k] for s in states]).median(dim=0).values for k in states[0]}


def _mean_unweighted(glob, states, weights, r):
    return {k: torch.stack([s[k] for s in states]).mean(dim=0) for k in states[0]}


def _median_sorting_in_place(glob, states, weights, r):
    result = {k: torch.quantile(torch.stack([s[k].double() for s in states]), 0.5, dim=0).float()
              for k in states[0]}
    for s in states:
        for v in s.values():
            v.zero_()
    return result


def _clipped_fedavg(glob, states, weights, max_norm, clip_global=False):
    clipped = []
    for state in states:
        delta = {k: state[k].double() - glob[k].double() for k in glob}
        reference = state if clip_global else delta  # clip_global: clips the weights, not the update
        norm = float(torch.sqrt(sum((v.double() ** 2).sum() for v in reference.values())))
        scale = min(1.0, max_norm / norm)
        clipped.append({k: glob[k].double() + scale * delta[k] for k in glob})
    return fedavg(clipped, weights)


def _attack(client, factor, honest_too=False, no_global=False):
    def hook(i, state, global_state, r):
        if i != client and not honest_too:
            return state
        if no_global:
            return {k: factor * v for k, v in state.items()}
        return {k: global_state[k] + factor * (state[k] - global_state[k]) for k in global_state}
    return hook


def _feature_errors_unscaled(detector, rows):
    x = torch.from_numpy(rows)
    with torch.no_grad():
        return ((detector.model(x) - x) ** 2).numpy()


def _feature_errors_summed(detector, rows):
    return feature_errors(detector, rows).sum(axis=1, keepdims=True) * np.ones((1, rows.shape[1]))


def _feature_errors_with_grad(detector, rows):
    scaled = torch.from_numpy(detector.scaler.transform(rows))
    return (detector.model(scaled) - scaled) ** 2  # a tensor still attached to autograd


def _top(errors, k, baseline, divide=True, largest_first=True):
    ratio = errors / baseline if divide else errors
    order = np.argsort(ratio if not largest_first else -ratio, axis=1, kind="stable")
    return order[:, -k:] if not largest_first else order[:, :k]


HINTS = [
    ("7.1", path_length_no_special_cases, "special cases"),
    ("7.1", _path_length_log2, "Euler's gamma"),
    ("7.2", lambda s, t, p: np.mean(s, axis=0), "averaging the scores is not exact"),
    ("7.2", lambda s, t, p: pooled_depths(s, t, p, weighted=False), "weight each client's mean path length"),
    ("7.2", lambda s, t, p: np.stack(s), "expected one score per row"),
    ("7.3", lambda tr, te: ((te - tr.mean(0)) ** 2).sum(1), "Euclidean distance"),
    ("7.3", lambda tr, te: _mahalanobis(tr, te, centre_on_test=True), "centre with the training mean"),
    ("7.3", lambda tr, te: np.zeros(len(te)), "not proportional"),
    ("7.3", lambda tr, te: _mahalanobis(tr, te)[:-1], "expected one distance per test row"),
    ("8.1", _windows_by_metric, "flattened metric by metric"),
    ("8.1", lambda f, w: sliding_windows(f[::-1].copy(), w)[0], "window i holds steps i"),
    ("8.1", lambda f, w: sliding_windows(f, w)[0][:-1], "expected shape"),
    ("8.1", lambda f, w: _windows_list(f, w)[:1] + [np.zeros(3)], "as a numpy array"),
    ("8.2", _recall_starting_inside, "not only when it starts inside the event"),
    ("8.2", lambda *a: 0.5, "count the events with at least one"),
    ("8.3", lambda alarms, labels: int(np.sum(alarms & (labels == 0))), "you counted windows"),
    ("8.3", lambda alarms, labels: 0, "split the alarms into runs"),
    ("9.1", _ks_of_histograms, "lies between 0 and 1"),
    ("9.1", lambda a, b: abs(np.mean(a) - np.mean(b)) / 10, "empirical CDFs"),
    ("9.2", lambda ref, rec, bins: psi(rec, ref, bins), "REFERENCE scores' quantiles"),
    ("9.2", lambda ref, rec, bins: -psi(ref, rec, bins), "so the PSI is too"),
    ("9.2", lambda ref, rec, bins: 2 * psi(ref, rec, bins), "floored at 1e-4"),
    ("9.3", lambda s, t, w: _rates(s, t, w, inclusive=True), "strictly above"),
    ("9.3", lambda s, t, w: _rates(s, t, w)[:-1], "the last one may be shorter"),
    ("9.3", lambda s, t, w: _rates(s, t, w) * 100, "rates differ"),
    ("9.3", lambda s, t, w: alarm_rate_per_window(s, t, w), "expected"),
    ("10.1", lambda g, st, c, n: _clipped_average(g, st, c, n, clip_first=False), "you averaged without clipping"),
    ("10.1", lambda g, st, c, n: _clipped_average(g, st, c, n, divide_by_updates=True),
     "divide the sum of the clipped updates by num_clients"),
    ("10.1", lambda g, st, c, n: _clipped_average(g, st, c, n, per_tensor=True), "norm over all of the client's"),
    ("10.1", lambda g, st, c, n: [_clipped_average(g, st, c, n)], "return a dict"),
    ("10.2", _noise, "you forgot to divide by num_clients"),
    ("10.2", lambda st, c, s, n, g: _noise(st, c, s, n, g, std=s * c / n**2), "should be noise_multiplier * clip"),
    ("10.2", lambda st, c, s, n, g: _noise(st, c, s, n, g, std=s * c / n, offset=s * c / n), "mean 0"),
    ("10.2", lambda st, c, s, n, g: _noise(st, c, s, n, g, std=s * c / n, use_generator=False),
     "draw the noise from the generator"),
    ("10.2", lambda st, c, s, n, g: _noise(st, c, s, n, g, std=s * c / n, in_place=True), "in place"),
    ("10.2", lambda st, c, s, n, g: _noise(st, c, s, n, g, std=s * c / n)["w"], "return a dict"),
    ("10.3", lambda *a: _rounds(*a, offset=-1), "find the largest number of rounds"),
    ("10.3", lambda *a: _rounds(*a, offset=1), "over the budget"),
    ("10.3", lambda *a: -1, "cannot be negative"),
    ("10.3", lambda *a: _rounds(*a) + 0.5, "whole number"),
    ("11.1", _lower_median, "torch.median returns the lower"),
    ("11.1", lambda g, st, w, r: fedavg(st, w), "that is FedAvg's weighted mean"),
    ("11.1", _mean_unweighted, "take the median of each coordinate"),
    ("11.1", _median_sorting_in_place, "do not modify the clients' state dicts"),
    ("11.1", lambda g, st, w, r: list(st), "return a dict"),
    ("11.2", lambda g, st, w, m: fedavg(st, w), "no client was clipped"),
    ("11.2", lambda g, st, w, m: _clipped_fedavg(g, st, w, m, clip_global=True), "norm over ALL tensors"),
    ("11.2", lambda g, st, w, m: None, "return a dict like a state_dict, got None (did you forget `return`?)"),
    ("11.3", lambda client, factor: None, "return a function"),
    ("11.3", lambda client, factor: _attack(client, factor, honest_too=True), "is honest"),
    ("11.3", lambda client, factor: _attack(client, factor, no_global=True), "global + factor"),
    ("11.3", lambda client, factor: (lambda i, state, global_state, r: None), "return a dict"),
    ("12.1", _feature_errors_unscaled, "scale the rows with detector.scaler.transform"),
    ("12.1", _feature_errors_summed, "square the difference"),
    ("12.1", lambda d, rows: feature_errors(d, rows).mean(axis=1), "expected shape"),
    ("12.2", lambda e, k, b: _top(e, k, b, divide=False), "divide the errors by the baseline"),
    ("12.2", lambda e, k, b: _top(e, k, b, largest_first=False), "wrong order"),
    ("12.2", lambda e, k, b: top_features(e, k + 1, b)[:, 1:], "not the k largest"),
    ("12.2", lambda e, k, b: top_features(e, k, b)[:, 0], "expected shape"),
    ("12.3", lambda d, t, k: t * k / d, "C(d - t, k) / C(d, k)"),
    ("12.3", lambda d, t, k: [chance_hit_rate(d, t, k)] * 2, "one number"),
]


@pytest.mark.parametrize(("exercise", "answer", "hint"), HINTS, ids=[f"{e}-{h[:30]}" for e, _, h in HINTS])
def test_a_plausible_wrong_answer_gets_its_hint(exercise, answer, hint, capsys):
    outcome = CHECKS[exercise](answer)
    assert outcome.status == "wrong", outcome
    assert hint in outcome.message, outcome.message
    assert not outcome.message.startswith("your code raised"), outcome.message
    assert str(outcome) in capsys.readouterr().out  # what the learner sees is the hint


def test_every_hint_of_every_check_is_reached():
    """Each check of chapters 07-12 has at least two wrong answers above, one of them its most specific hint."""
    assert set(CHECKS) == {e for e, _, _ in HINTS}
    assert min(sum(e == name for e, _, _ in HINTS) for name in CHECKS) >= 2


BAD_RETURNS = {"None": None, "a string": "0.5", "an empty list": [], "a ragged list": [[1.0], [1.0, 2.0]]}


@pytest.mark.parametrize("exercise", list(CHECKS))
@pytest.mark.parametrize("bad", list(BAD_RETURNS))
def test_a_wrongly_typed_answer_gets_a_hint_not_the_checks_own_error(exercise, bad):
    value = BAD_RETURNS[bad]
    outcome = CHECKS[exercise](lambda *args: value)
    assert outcome.status == "wrong", outcome
    assert not outcome.message.startswith("your code raised"), outcome.message


def test_an_error_in_the_learners_own_code_is_reported_as_such():
    def broken(*args):
        raise KeyError("w")

    for name, check in CHECKS.items():
        outcome = check(broken)
        assert outcome.status == "wrong" and outcome.message == "your code raised KeyError: 'w'", (name, outcome)


def test_a_tensor_still_attached_to_autograd_is_read_not_a_crash():
    assert nb12.check_feature_errors(_feature_errors_with_grad).status == "correct"


def test_right_answers_in_other_types_are_accepted():
    """A numpy scalar, a 0-d tensor, a list and a float count are the same answers as their plain values."""
    assert nb07.check_average_path_length(lambda n: torch.tensor(average_path_length(n), dtype=torch.float64))
    assert nb08.check_sliding_windows(lambda f, w: sliding_windows(f, w)[0].tolist())
    assert nb12.check_chance_hit_rate(lambda d, t, k: np.float64(chance_hit_rate(d, t, k)))
    assert nb10.check_rounds_for_budget(lambda *a: float(_rounds(*a)))
    assert nb12.check_top_features(lambda e, k, b: top_features(e, k, b).astype(float))


def test_the_helpers_name_what_was_expected():
    for value, described in ((None, "None (did you forget `return`?)"), ("x", "a str"),
                             ([1, 2], "a list of 2 items"), (np.zeros((2, 3)), "a ndarray of shape (2, 3)")):
        with pytest.raises(AssertionError, match=re.escape(f"return the answer (one number), got {described}")):
            learner_number(value, "the answer")
    with pytest.raises(AssertionError, match="as a numpy array, got a list of 2 items of different lengths"):
        learner_array([[1.0], [1.0, 2.0]], "the rows")
    assert learner_number(torch.tensor([2.5], requires_grad=True), "x") == 2.5
    assert learner_array(torch.ones(2, requires_grad=True) * 2, "x").tolist() == [2.0, 2.0]
    assert math.isclose(learner_number(np.float32(0.1), "x"), 0.1, rel_tol=1e-6)


def test_the_fixtures_reach_the_branch_they_name():
    """Guards for the answers above: update_norm and scaled_update_attack behave as the hints assume."""
    glob = {"w": torch.zeros(3)}
    assert update_norm({"w": torch.tensor([3.0, 4.0, 0.0])}, glob) == pytest.approx(5.0)
    assert torch.equal(scaled_update_attack(0, 2.0)(0, {"w": torch.ones(3)}, glob, 1)["w"], 2 * torch.ones(3))
