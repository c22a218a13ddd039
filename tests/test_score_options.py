"""``fedad score`` options: --explain (additive explanations), --report, --percentile / --max-alarm-rate
(from the score histogram in the model file), the progress bar, and their bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PLAIN, generate_and_simulate

from fedad_tutorial import progress
from fedad_tutorial.cli import main
from fedad_tutorial.data import hold_out, make_cloud_federation
from fedad_tutorial.detector import Detector
from fedad_tutorial.errors import UserError
from fedad_tutorial.explain import score_contributions
from fedad_tutorial.federated import FederatedConfig, run_federated
from fedad_tutorial.models import ModelSpec
from fedad_tutorial.scaling import Scaler
from fedad_tutorial.scoring import score_csv


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    root = tmp_path_factory.mktemp("score_options")
    data, run = generate_and_simulate(root, rows=300, features=10, seed=5, rounds=2)
    return root, data, run


def _score(flow, *flags: str, name: str = "out.csv") -> tuple[int, pd.DataFrame | None]:
    root, data, run = flow
    out = root / name
    rc = main(["score", "--model", str(run / "model.pt"), "--data", str(data / "node_2.csv"), "--output", str(out),
               *flags])
    return rc, (pd.read_csv(out) if rc == 0 else None)


@pytest.mark.parametrize(("kind", "method"), [("ae", "reconstruction"), ("vae", "reconstruction"), ("vae", "elbo")])
def test_contributions_add_up_to_the_score_for_every_model_type(kind, method):
    rng = np.random.default_rng(1)
    rows = (rng.lognormal(size=(64, 7)) * rng.uniform(1, 50, size=7)).astype(np.float32)
    torch.manual_seed(0)
    det = Detector(ModelSpec(kind, 7, (16,), 3).build(), Scaler.fit(rows), 1.0, list("abcdefg"), method)
    noisy = rows * rng.uniform(0.5, 3, size=rows.shape).astype(np.float32)
    terms, latent = score_contributions(det, noisy)
    np.testing.assert_allclose(terms.sum(axis=1) + latent, det.decision_function(noisy), rtol=1e-5)
    assert (terms >= 0).all() and (latent >= 0).all()
    assert (latent > 0).all() == (method == "elbo")


def test_explain_columns_rank_the_flagged_rows_metrics_and_add_up(flow):
    rc, plain = _score(flow, name="plain.csv")
    rc, frame = _score(flow, "--explain", "10")
    assert rc == 0 and len(frame) == len(plain)
    pd.testing.assert_frame_equal(frame[["score", "is_anomaly"]], plain)
    assert list(frame.columns[2:7]) == ["top1_feature", "top1_value", "top1_normal_low", "top1_normal_high",
                                        "top1_score_term"] and len(frame.columns) == 2 + 10 * 5
    flagged = frame[frame["is_anomaly"] == 1]
    assert 0 < len(flagged) < len(frame)
    assert frame.loc[frame["is_anomaly"] == 0, frame.columns[2:]].isna().all().all()  # blank unless flagged
    contributions = flagged[[f"top{i}_score_term" for i in range(1, 11)]].to_numpy()
    assert (np.diff(contributions, axis=1) <= 0).all()  # largest first
    np.testing.assert_allclose(contributions.sum(axis=1), flagged["score"], rtol=1e-4)  # all 10 metrics: the score
    raw = pd.read_csv(flow[1] / "node_2.csv").loc[flagged.index]
    for _, row in flagged.iterrows():
        assert len({row[f"top{i}_feature"] for i in range(1, 11)}) == 10
    first = flagged.iloc[0]
    assert first["top1_value"] == pytest.approx(raw.iloc[0][first["top1_feature"]], rel=1e-5)
    assert (flagged["top1_normal_low"] < flagged["top1_normal_high"]).all()


def test_explain_named_features_and_streaming_in_small_chunks(flow, tmp_path):
    root, data, run = flow
    det = Detector.load(run / "model.pt")
    names = [det.feature_names[3], det.feature_names[0]]
    big = score_csv(det, data / "node_2.csv", tmp_path / "a.csv", explain=names)
    small = score_csv(det, data / "node_2.csv", tmp_path / "b.csv", explain=names, chunk_rows=7)
    frame, chunked = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    # batch sizes may change float32 matmul rounding, never more than that
    pd.testing.assert_frame_equal(frame, chunked, rtol=1e-5)
    np.testing.assert_allclose(big.scores, small.scores, rtol=1e-5)
    assert list(frame.columns[2:]) == [f"{n}_{p}" for n in names for p in ("value", "normal_low", "normal_high",
                                                                           "score_term")]


def test_report_draws_the_top_alarms_as_html_or_png(flow):
    root, _, _ = flow
    assert _score(flow, "--explain", "3", "--report", str(root / "alarms.html"))[0] == 0
    page = (root / "alarms.html").read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page and page.count("<h2>line ") == 6
    assert _score(flow, "--report", str(root / "alarms.png"))[0] == 0
    assert (root / "alarms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained():
    splits = hold_out(make_cloud_federation(num_nodes=4, samples_per_node=(200, 400), num_features=8, seed=3), 0.3, 3)
    result = run_federated(splits, FederatedConfig(rounds=2, local_epochs=1, seed=3, **PLAIN), progress=False)
    return result, splits


@pytest.mark.parametrize("q", [50.0, 90.0, 95.0, 99.0, 99.9])
def test_threshold_at_another_percentile_is_the_exact_quantile_within_a_bin(trained, tmp_path, q):
    result, splits = trained
    det = Detector.load(result.detector.save(tmp_path / "model.pt"))
    assert det.threshold == result.detector.threshold == det.threshold_for(95.0)  # the saved one, from the same counts
    pooled = det.decision_function(np.concatenate([s.train for s in splits]))
    # the histogram finds the bin of the score at rank q% of n: the inverted-CDF quantile (no interpolation
    # between two scores, which can be far apart in the tail)
    exact = float(np.percentile(pooled, q, method="inverted_cdf"))
    assert abs(det.threshold_for(q) - exact) <= 1.01 * det.score_histogram.bin_width_at(exact)
    rate = 1 - q / 100
    assert det.threshold_for(max_alarm_rate=rate) == det.threshold_for(100 * (1 - rate))
    assert det.score_histogram.total == len(pooled)


def _without_histogram(src, dst):
    payload = torch.load(src, weights_only=True)
    del payload["score_histogram"]
    torch.save(payload, dst)
    return dst


def test_old_model_files_load_and_refuse_another_percentile_in_one_line(flow, capsys):
    root, data, run = flow
    old = _without_histogram(run / "model.pt", root / "old.pt")
    assert Detector.load(old).score_histogram is None
    assert main(["score", "--model", str(old), "--data", str(data / "node_1.csv"), "--output",
                 str(root / "old.csv")]) == 0
    capsys.readouterr()
    assert main(["score", "--model", str(old), "--data", str(data / "node_1.csv"), "--output",
                 str(root / "old2.csv"), "--percentile", "90"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no histogram of training scores" in err
    assert not (root / "old2.csv").exists()


def test_a_damaged_histogram_is_refused(flow, tmp_path):
    _, _, run = flow
    payload = torch.load(run / "model.pt", weights_only=True)
    for bad in (torch.zeros(5, dtype=torch.int64), -payload["score_histogram"], payload["score_histogram"].double()):
        torch.save({**payload, "score_histogram": bad}, tmp_path / "bad.pt")
        with pytest.raises(UserError, match="damaged fedad model file"):
            Detector.load(tmp_path / "bad.pt")
    flipped = payload["feature_range"].flip(0)  # low above high
    for bad in (flipped, payload["feature_range"][:, :3], payload["feature_range"] * float("nan")):
        torch.save({**payload, "feature_range": bad}, tmp_path / "bad.pt")
        with pytest.raises(UserError, match="damaged fedad model file"):
            Detector.load(tmp_path / "bad.pt")


def test_percentile_and_max_alarm_rate_move_the_threshold(flow, capsys):
    _, base = _score(flow, name="base.csv")
    rc, low = _score(flow, "--percentile", "80", name="p80.csv")
    out = capsys.readouterr().out
    assert rc == 0 and "the 80th percentile" in out
    assert low["is_anomaly"].sum() > base["is_anomaly"].sum() and (low["score"] == base["score"]).all()
    rc, rate = _score(flow, "--max-alarm-rate", "0.2", name="r20.csv")
    assert rc == 0 and (rate["is_anomaly"] == low["is_anomaly"]).all()


@pytest.mark.parametrize(("flags", "message"), [
    (["--explain", "11"], "--explain 11: the model has 10 features"),
    (["--explain", "0"], "--explain 0: the model has 10 features"),
    (["--explain", "nosuch,cpu"], "--explain: unknown feature 'nosuch'"),
    (["--explain", "a,,b"], "expected a number of features or comma-separated feature names"),
    (["--percentile", "100"], "--percentile: must be in (0, 100)"),
    (["--percentile", "0"], "--percentile: must be in (0, 100)"),
    (["--percentile", "x"], "--percentile: expected a number"),
    (["--max-alarm-rate", "1"], "--max-alarm-rate: must be in (0, 1)"),
    (["--percentile", "90", "--max-alarm-rate", "0.1"], "not allowed with argument"),
    (["--report", "alarms.txt"], "a report is an .html or .png file"),
])
def test_bad_score_options_are_one_line_and_write_nothing(flow, capsys, flags, message):
    root = flow[0]
    rc, _ = _score(flow, *flags, name="bad.csv")
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and message in err, err
    assert not (root / "bad.csv").exists()


def test_progress_bar_on_stderr_only_when_asked(flow, tmp_path, monkeypatch, capsys):
    _, data, run = flow
    det = Detector.load(run / "model.pt")
    monkeypatch.setattr(progress, "DELAY", 0.0)
    score_csv(det, data / "node_1.csv", tmp_path / "a.csv", quiet=False)
    shown = capsys.readouterr()
    assert "scoring node_1.csv" in shown.err and shown.out == ""
    score_csv(det, data / "node_1.csv", tmp_path / "b.csv", quiet=True)
    assert capsys.readouterr().err == ""
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_the_model_file_keeps_each_metrics_federated_normal_range(trained, tmp_path):
    result, splits = trained
    det = Detector.load(result.detector.save(tmp_path / "model.pt"))
    pooled = np.concatenate([s.train for s in splits]).astype(np.float64)
    exact = np.percentile(pooled, [1.0, 99.0], axis=0, method="inverted_cdf")
    bin_width = 0.05 * det.scaler.std  # the shared bins are 0.05 standard deviations wide
    assert (np.abs(det.feature_range - exact) <= 1.01 * bin_width + 1e-6 * np.abs(exact)).all()
    from fedad_tutorial.explain import normal_range

    low, high = normal_range(det)
    assert (low == det.feature_range[0]).all() and (high == det.feature_range[1]).all()
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    del payload["feature_range"]
    torch.save(payload, tmp_path / "old.pt")
    low, high = normal_range(Detector.load(tmp_path / "old.pt"))  # older files: mean +- 2.33 std
    np.testing.assert_allclose((low + high) / 2, det.scaler.mean, rtol=1e-5, atol=1e-6)
