import numpy as np
import pytest
import torch

from fedad_tutorial.detector import Detector
from fedad_tutorial.errors import UserError
from fedad_tutorial.models import VAE, Autoencoder, ModelSpec
from fedad_tutorial.scaling import Scaler
from fedad_tutorial.training import LocalTraining, client_generator, train_local


def test_autoencoder_default_architecture_is_30_64_32_10_mirrored():
    model = ModelSpec().build()
    assert isinstance(model, Autoencoder)
    sizes = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert sizes == [(30, 64), (64, 32), (32, 10), (10, 32), (32, 64), (64, 30)]


def test_vae_loss_is_an_elbo_with_beta_weighted_kl():
    torch.manual_seed(0)
    x, noise = torch.randn(16, 6), torch.randn(16, 3)
    vae = ModelSpec(kind="vae", input_dim=6, latent_dim=3, beta=1.0).build()
    assert isinstance(vae, VAE)
    mu, logvar = vae.encode(x)
    z = mu + torch.exp(0.5 * logvar) * noise
    recon = 0.5 * ((vae.decoder(z) - x) ** 2).sum(1)
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)
    assert vae.loss(x, noise).item() == pytest.approx((recon + kl).mean().item(), rel=1e-5)
    vae_b0 = ModelSpec(kind="vae", input_dim=6, latent_dim=3, beta=0.0).build()
    vae_b0.load_state_dict(vae.state_dict())
    assert vae_b0.loss(x, noise).item() == pytest.approx(recon.mean().item(), rel=1e-5)


def test_vae_scores_elbo_and_reconstruction():
    vae = ModelSpec(kind="vae", input_dim=5, latent_dim=2).build()
    x = torch.randn(7, 5)
    elbo, rec = vae.score(x), vae.score(x, "reconstruction")
    assert elbo.shape == rec.shape == (7,)
    assert (elbo >= 0).all() and not torch.allclose(elbo, rec)
    with pytest.raises(UserError, match="score method"):
        vae.score(x, "norm")


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_training_reduces_loss_and_is_reproducible(kind):
    x = torch.randn(120, 8) @ torch.randn(8, 8)
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        model = ModelSpec(kind=kind, input_dim=8, latent_dim=3).build()
        before = model.loss(x, torch.zeros(120, 3)).item()
        train_local(model, x, LocalTraining(epochs=20, batch_size=32, lr=3e-3, trim=0.0), client_generator(0, 1, 0))
        losses.append(model.loss(x, torch.zeros(120, 3)).item())
    assert losses[0] < 0.7 * before
    assert losses[0] == losses[1]


def _detector(kind="ae"):
    rows = np.random.default_rng(0).normal(size=(40, 4)).astype("float32")
    torch.manual_seed(0)
    return Detector(ModelSpec(kind=kind, input_dim=4, latent_dim=2).build(), Scaler.fit(rows), 0.5,
                    ["a", "b", "c", "d"]), rows


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_detector_save_load_round_trip(tmp_path, kind):
    det, rows = _detector(kind)
    path = det.save(tmp_path / "model.pt")
    back = Detector.load(path)
    np.testing.assert_array_equal(back.decision_function(rows), det.decision_function(rows))
    assert back.threshold == 0.5 and back.feature_names == ["a", "b", "c", "d"]
    assert back.spec == det.spec and back.score_method == det.score_method
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_loading_garbage_or_code_is_refused(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00\x01 not a model" * 50)
    with pytest.raises(UserError, match="not a fedad model file"):
        Detector.load(junk)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "fedad-detector", "obj": Scaler}, evil)  # a pickled class: not weights-only
    with pytest.raises(UserError, match="not a fedad model file"):
        Detector.load(evil)


def test_other_format_version_gets_a_clear_error(tmp_path):
    det, _ = _detector()
    path = det.save(tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, path)
    with pytest.raises(UserError, match="format 99.*not supported"):
        Detector.load(path)


def test_feature_mismatch_is_named():
    det, _ = _detector()
    with pytest.raises(UserError, match="4 columns, expected 4; missing 'd'; unexpected 'e'"):
        det.check_features(["a", "b", "c", "e"], "x.csv")
    with pytest.raises(UserError, match="another order"):
        det.check_features(["b", "a", "c", "d"], "x.csv")
