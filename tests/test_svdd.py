"""Deep SVDD: a bias-free network, a centre agreed from sums, and the model selectable everywhere."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PLAIN, default_splits, generate_and_simulate
from torch import nn

from fedad_tutorial import models
from fedad_tutorial.center import CENTER_EPS, center_from_sums, embedding_sums, federated_center
from fedad_tutorial.cli import main
from fedad_tutorial.data import make_cloud_federation, train_test_split
from fedad_tutorial.detector import Detector
from fedad_tutorial.errors import UserError
from fedad_tutorial.federated import RECOMMENDED, FederatedConfig, run_federated
from fedad_tutorial.models import DeepSVDD, ModelSpec
from fedad_tutorial.scaling import Scaler
from fedad_tutorial.training import LocalTraining, client_generator, needs_noise, train_local


def _model(input_dim: int = 6, hidden: tuple[int, ...] = (8, 5), latent: int = 3, seed: int = 0) -> DeepSVDD:
    torch.manual_seed(seed)
    return ModelSpec(kind="svdd", input_dim=input_dim, hidden=hidden, latent_dim=latent).build()


def test_network_has_no_bias_and_the_centre_is_a_saved_buffer():
    model = _model()
    assert isinstance(model, DeepSVDD) and needs_noise(model) is None
    assert [name for name, _ in model.named_parameters()] == ["encoder.0.weight", "encoder.2.weight",
                                                              "encoder.4.weight"]
    assert all(layer.bias is None for layer in model.encoder if isinstance(layer, nn.Linear))
    assert [type(layer) for layer in model.encoder] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert "center" in model.state_dict() and torch.equal(model.center, torch.zeros(3))
    assert models.SCORE_METHODS["svdd"] == ("distance",)
    x = torch.randn(7, 6)
    with torch.no_grad():
        model.center.copy_(torch.tensor([0.5, -0.2, 1.0]))
    expected = ((model.encode(x) - model.center) ** 2).sum(dim=1)
    torch.testing.assert_close(model.row_loss(x), expected)
    torch.testing.assert_close(model.score(x), expected)
    torch.testing.assert_close(model.loss(x), expected.mean())
    with pytest.raises(UserError, match="score method for 'svdd'"):
        model.score(x, "reconstruction")


def test_centre_from_sums_is_the_pooled_mean_of_the_embeddings():
    model = _model(hidden=(16,), latent=4, seed=1)
    gen = torch.Generator().manual_seed(0)
    rows = [3.0 * torch.randn(n, 6, generator=gen) + 1.0 for n in (5, 40, 17)]
    sums, counts = zip(*(embedding_sums(model, r) for r in rows), strict=True)
    assert list(counts) == [5, 40, 17]
    with torch.no_grad():
        pooled = model.encode(torch.cat(rows)).double().mean(dim=0)
    assert (pooled.abs() >= CENTER_EPS).all()  # rows shifted off zero: no coordinate is moved by the eps rule
    center = center_from_sums(sums, counts)
    assert center.dtype == torch.float32
    torch.testing.assert_close(center.double(), pooled, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(federated_center(model, rows), center, rtol=0.0, atol=0.0)


def test_eps_rule_moves_small_coordinates_off_zero_keeping_their_sign():
    sums = [torch.tensor([0.0, 0.05, -0.05, 0.3, -0.3, -0.0999], dtype=torch.float64)]
    center = center_from_sums(sums, [1], eps=0.1)
    torch.testing.assert_close(center, torch.tensor([0.1, 0.1, -0.1, 0.3, -0.3, -0.1]))
    assert torch.equal(center_from_sums(sums, [1], eps=0.0), sums[0].float())
    with pytest.raises(UserError):
        center_from_sums(sums, [0])


def test_gradient_of_the_loss_is_autograd_s():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(3, 9, 4, generator=gen, dtype=torch.float64)
    center = torch.randn(4, generator=gen, dtype=torch.float64)
    weights = torch.rand(3, 9, generator=gen, dtype=torch.float64)
    leaf = z.clone().requires_grad_()
    (expected,) = torch.autograd.grad((models.squared_distance(leaf, center) * weights).sum(), leaf)
    torch.testing.assert_close(models.squared_distance_backward(z, center, weights), expected, rtol=1e-12, atol=1e-12)


def test_save_and_load_keep_the_centre_and_the_scores(tmp_path):
    model = _model()
    rows = np.random.default_rng(0).normal(size=(30, 6)).astype("float32")
    with torch.no_grad():
        model.center.copy_(federated_center(model, [torch.from_numpy(rows)]))
    det = Detector(model.eval(), Scaler.fit(rows), 0.5, list("abcdef"))
    assert det.score_method == "distance"
    back = Detector.load(det.save(tmp_path / "model.pt"))
    assert isinstance(back.model, DeepSVDD) and torch.equal(back.model.center, model.center)
    np.testing.assert_array_equal(back.decision_function(rows), det.decision_function(rows))
    # a damaged centre is a damaged file
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    payload["state_dict"]["center"][0] = float("nan")
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(UserError, match="damaged fedad model file.*center"):
        Detector.load(tmp_path / "nan.pt")


def test_run_federated_sets_the_centre_before_round_1_and_never_moves_it():
    splits = [train_test_split(n, 0.3, seed=0) for n in make_cloud_federation(3, 120, 6, seed=2)]
    config = FederatedConfig(model="svdd", rounds=2, local_epochs=1, hidden=(8,), latent_dim=3, seed=4, **PLAIN)
    result = run_federated(splits, config, progress=False)
    torch.manual_seed(config.seed)  # the initial model run_federated builds
    initial = config.model_spec(6).build()
    scaler = result.detector.scaler
    expected = federated_center(initial, [torch.from_numpy(scaler.transform(s.train)) for s in splits])
    assert torch.equal(result.detector.model.center, expected)
    assert not torch.equal(result.detector.model.encoder[0].weight, initial.encoder[0].weight)  # it trained


def test_with_bias_the_network_collapses_onto_the_centre():
    """The reason for bias-free layers: with biases, the same network trained the same way drifts to the
    constant map onto the centre, so even rows far from every training row end close to it.

    The bound (a tenth of the bias-free network's distance for those rows) is loose: other seeds gave
    ratios many times smaller, and the collapse only deepens with more epochs.
    """
    features = make_cloud_federation(1, 400, 8, seed=0)[0].features
    rows = torch.from_numpy(Scaler.fit(features).transform(features))
    far = 4.0 * torch.randn(200, 8, generator=torch.Generator().manual_seed(0))  # 4 standard deviations out

    def far_distance(model: DeepSVDD) -> float:
        with torch.no_grad():
            model.center.copy_(federated_center(model, [rows]))
        for epoch in range(30):
            train_local(model, rows, LocalTraining(epochs=1, batch_size=64, lr=1e-2, trim=0.0),
                        client_generator(0, epoch, 0))
        with torch.no_grad():
            return float(model.score(far).mean())

    free = _model(input_dim=8, hidden=(16,), latent=4)
    biased = _model(input_dim=8, hidden=(16,), latent=4)
    biased.encoder = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    assert far_distance(biased) < 0.1 * far_distance(free)


# --- the command line ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def svdd_flow(tmp_path_factory):
    """Generate 3 small nodes; ``fedad simulate --model svdd`` for 2 rounds."""
    root = tmp_path_factory.mktemp("svdd_flow")
    data, _ = generate_and_simulate(root, rows=300, features=12, seed=1, rounds=1)
    run = root / "svdd_run"
    assert main(["simulate", "--model", "svdd", "--data-dir", str(data), "--output-dir", str(run), "--rounds", "2",
                 "--local-epochs", "1", "--quiet", "--no-figure"]) == 0
    return root, data, run


def test_simulate_and_score_an_svdd_model(svdd_flow, capsys):
    root, data, run = svdd_flow
    summary = json.loads((run / "summary.json").read_text())
    assert summary["config"]["model"] == "svdd" and summary["global_threshold"] > 0
    detector = Detector.load(run / "model.pt")
    assert isinstance(detector.model, DeepSVDD) and (detector.model.center.abs() >= CENTER_EPS).all()
    capsys.readouterr()
    out = root / "scores.csv"
    assert main(["score", "--model", str(run / "model.pt"), "--data", str(data / "node_2.csv"),
                 "--output", str(out), "--max-alarm-rate", "0.05"]) == 0
    scores = pd.read_csv(out)
    frame = pd.read_csv(data / "node_2.csv")
    np.testing.assert_allclose(scores["score"], detector.decision_function(frame.iloc[:, :-1].to_numpy()), rtol=1e-5)
    assert "ROC-AUC" in capsys.readouterr().out
    flagged = scores["is_anomaly"].mean()
    assert 0.0 < flagged < 0.2  # about the 5 % of training rows asked for, plus the file's anomalies


@pytest.mark.parametrize("flag", [["--explain", "3"], ["--report", "alarms.html"]])
def test_explanations_of_an_svdd_model_are_refused_in_one_line(svdd_flow, capsys, tmp_path, flag):
    _, data, run = svdd_flow
    capsys.readouterr()
    out = tmp_path / "s.csv"
    assert main(["score", "--model", str(run / "model.pt"), "--data", str(data / "node_1.csv"),
                 "--output", str(out), *flag]) == 2
    err = capsys.readouterr().err
    assert "need a reconstruction model (ae or vae)" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "alarms.html").exists()


def test_fedad_run_trains_an_svdd_model(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", "--model", "svdd", "--num-nodes", "2", "--rounds", "1", "--local-epochs", "1",
                 "--output-dir", str(run), "--quiet"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["config"]["model"] == "svdd"
    assert 0.5 < summary["final_round_mean"]["roc_auc"] <= 1.0
    assert isinstance(Detector.load(run / "model.pt").model, DeepSVDD)


# --- detection quality --------------------------------------------------------------------------

#: Below the lowest ROC-AUC of three seeds (the default federation's seed and two others, on the AVX2 and
#: the default CPU path) by about three times the range those seeds spanned, and far above chance (0.5).
QUALITY_FLOOR = 0.94


def test_federated_svdd_detects_on_the_default_federation():
    """``fedad simulate --model svdd``'s settings (the command line's defaults, 10 rounds) on the default
    federation: ROC-AUC far above chance (:data:`QUALITY_FLOOR`)."""
    config = replace(RECOMMENDED, model="svdd", rounds=10)
    result = run_federated(default_splits(), config, progress=False)
    assert float(result.final_round()["roc_auc"].mean()) >= QUALITY_FLOOR
