"""The vectorized engine gives the loop engine's per-client updates, alone and inside ``run_federated``.

Exact equality is not possible: the batched engine sums losses and matrix products in a different
order (padded batches, batched matmuls), so results agree up to float32 rounding. The tolerance
used, ``atol=1e-5, rtol=1e-4``, is far above the differences seen (about 1e-7) and far below any
real divergence (a wrong batch, noise draw or Adam step changes weights by ~1e-3 or more).
The objectives' hand-written gradients (models.py) are checked against autograd separately.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import PLAIN

from fedad_tutorial import models, vectorized
from fedad_tutorial.center import federated_center
from fedad_tutorial.data import make_cloud_federation, train_test_split
from fedad_tutorial.federated import FederatedConfig, loop_engine, run_federated
from fedad_tutorial.scaling import Scaler
from fedad_tutorial.vectorized import vectorized_engine

TOL = {"atol": 1e-5, "rtol": 1e-4}
SIZES = (37, 64, 130, 201)  # uneven: 2, 2, 5 and 7 batches of 32, all with a short last batch but one


@pytest.fixture(scope="module")
def nodes():
    return make_cloud_federation(num_nodes=4, samples_per_node=(60, 200), num_features=12, seed=0)


@pytest.fixture(scope="module")
def client_rows(nodes) -> list[torch.Tensor]:
    """Scaled rows cut into clients of :data:`SIZES` rows."""
    features = np.vstack([n.features for n in nodes])
    rows = torch.from_numpy(Scaler.fit(features).transform(features))
    return list(rows[: sum(SIZES)].split(SIZES))


def build(config: FederatedConfig, rows: list[torch.Tensor]) -> torch.nn.Module:
    """The config's model for 12 features; a Deep SVDD one with its centre over ``rows`` (a real,
    non-zero centre, as run_federated sets it)."""
    model = config.model_spec(12).build()
    if config.model == "svdd":
        with torch.no_grad():
            model.center.copy_(federated_center(model, rows))
    return model


def assert_same_updates(expected, actual) -> None:
    assert len(expected) == len(actual)
    for (state_a, loss_a), (state_b, loss_b) in zip(expected, actual, strict=True):
        assert list(state_a) == list(state_b)
        for key in state_a:
            assert state_a[key].shape == state_b[key].shape, key
            assert torch.allclose(state_a[key], state_b[key], **TOL), key
        assert loss_b == pytest.approx(loss_a, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("model, hidden, latent, beta", [
    ("ae", (16, 8), 4, 1.0),
    ("vae", (16, 8), 4, 1.0),
    ("ae", (), 3, 1.0),  # a single linear layer each way
    ("vae", (), 2, 0.5),  # the VAE encoder is then only a ReLU
    ("vae", (20,), 5, 2.0),
    ("svdd", (16, 8), 4, 1.0),  # bias-free layers, no decoder
    ("svdd", (), 3, 1.0),
])
def test_engine_matches_loop(client_rows, model, hidden, latent, beta):
    config = FederatedConfig(model=model, hidden=hidden, latent_dim=latent, beta=beta, local_epochs=3,
                             batch_size=32, seed=3, **PLAIN)
    torch.manual_seed(0)
    global_model = build(config, client_rows)
    before = {k: v.clone() for k, v in global_model.state_dict().items()}
    ids = [4, 0, 7, 2]
    expected = loop_engine(global_model, client_rows, ids, 2, config)
    actual = vectorized_engine(global_model, client_rows, ids, 2, config)
    assert_same_updates(expected, actual)
    for key, value in global_model.state_dict().items():  # the global model is left untouched
        assert torch.equal(value, before[key])


@pytest.mark.parametrize("model", ["ae", "vae", "svdd"])
def test_float64_agrees_to_rounding(client_rows, model):
    """In float64 the engines agree to ~1e-12: the float32 tolerance above covers rounding only."""
    config = FederatedConfig(model=model, hidden=(16, 8), latent_dim=4, local_epochs=3, batch_size=32, **PLAIN)
    torch.manual_seed(0)
    global_model = build(config, client_rows).double()
    rows = [r.double() for r in client_rows]
    for (state_a, loss_a), (state_b, loss_b) in zip(loop_engine(global_model, rows, [0, 1, 2, 3], 1, config),
                                                    vectorized_engine(global_model, rows, [0, 1, 2, 3], 1, config),
                                                    strict=True):
        assert loss_b == pytest.approx(loss_a, rel=1e-12)
        for key in state_a:
            assert state_b[key].dtype == torch.float64
            assert torch.allclose(state_a[key], state_b[key], atol=1e-12, rtol=1e-10), key


def test_vae_clamped_log_variance(client_rows):
    """Latent dimensions whose log-variance is clamped (above 10, below -10) get no gradient through it."""
    config = FederatedConfig(model="vae", hidden=(16,), latent_dim=4, local_epochs=2, batch_size=32, **PLAIN)
    torch.manual_seed(2)
    global_model = config.model_spec(12).build()
    with torch.no_grad():
        global_model.to_logvar.bias[:2] = torch.tensor([12.0, -12.0])
    assert_same_updates(loop_engine(global_model, client_rows, [0, 1, 2, 3], 1, config),
                        vectorized_engine(global_model, client_rows, [0, 1, 2, 3], 1, config))


def test_chunks_and_order_do_not_matter(client_rows, monkeypatch):
    """Chunks of 3 clients (so one chunk of 1), clients not sorted by size: same updates."""
    monkeypatch.setattr(vectorized, "CHUNK_CLIENTS", 3)
    config = FederatedConfig(model="vae", hidden=(16, 8), latent_dim=4, local_epochs=2, batch_size=32, **PLAIN)
    torch.manual_seed(1)
    global_model = config.model_spec(12).build()
    rows = [client_rows[1], client_rows[3], client_rows[0], client_rows[2]]
    assert_same_updates(loop_engine(global_model, rows, [1, 3, 0, 2], 1, config),
                        vectorized_engine(global_model, rows, [1, 3, 0, 2], 1, config))


@pytest.mark.parametrize("model, trim", [("ae", 0.0), ("vae", 0.0), ("ae", 0.1), ("vae", 0.1), ("svdd", 0.0),
                                         ("svdd", 0.1)])
def test_run_federated_same_history(nodes, model, trim):
    splits = [train_test_split(n, 0.3, seed=0) for n in nodes]
    base = FederatedConfig(model=model, rounds=3, local_epochs=2, batch_size=32, hidden=(16, 8),
                           latent_dim=4, fraction=0.5, seed=5, trim=trim, threshold="global", engine="loop")
    loop = run_federated(splits, base, progress=False)
    vec = run_federated(splits, FederatedConfig(**{**base.__dict__, "engine": "vectorized"}), progress=False)
    assert loop.history["selected"].tolist() == vec.history["selected"].tolist()
    assert not loop.history["selected"].all()  # sampling really left clients out
    for column in ("loss", "threshold", "f1", "roc_auc"):
        np.testing.assert_allclose(vec.history[column], loop.history[column], equal_nan=True, **TOL)
    assert loop.detector.threshold == pytest.approx(vec.detector.threshold, rel=1e-4)
    for key, value in loop.detector.model.state_dict().items():
        assert torch.allclose(vec.detector.model.state_dict()[key], value, **TOL), key


# Trimmed training (``trim > 0``): per client and step, the lowest-loss valid rows only.
# Sizes with batches of 32: short last batches of 13 rows (drop 1) shared by two clients at the same
# step, or a client whose only batch is short (30 rows: drop 3) next to full ones, and 28 (drop 2).
TRIM_SIZES = [(45, 45, 141, 201), (30, 77, 124, 201)]


def _recut(client_rows, sizes):
    return list(torch.cat(client_rows)[: sum(sizes)].split(sizes))


@pytest.mark.parametrize("sizes", TRIM_SIZES)
@pytest.mark.parametrize("model, hidden, latent, beta", [
    ("ae", (16, 8), 4, 1.0),
    ("vae", (16, 8), 4, 1.0),
    ("vae", (), 2, 0.5),
    ("svdd", (16, 8), 4, 1.0),
])
def test_trimmed_engine_matches_loop(client_rows, sizes, model, hidden, latent, beta):
    config = FederatedConfig(model=model, hidden=hidden, latent_dim=latent, beta=beta, local_epochs=3,
                             batch_size=32, seed=3, trim=0.1, engine="vectorized")
    torch.manual_seed(0)
    global_model = config.model_spec(12).build()
    rows = _recut(client_rows, sizes)
    expected = loop_engine(global_model, rows, [4, 0, 7, 2], 2, config)
    assert_same_updates(expected, vectorized_engine(global_model, rows, [4, 0, 7, 2], 2, config))
    # trimming really changed the steps: the untrimmed updates are elsewhere
    untrimmed = loop_engine(global_model, rows, [4, 0, 7, 2], 2, FederatedConfig(**{**config.__dict__, "trim": 0.0}))
    assert any(not torch.allclose(a[0][k], b[0][k], **TOL) for a, b in zip(expected, untrimmed, strict=True)
               for k in a[0])


@pytest.mark.parametrize("model", ["ae", "vae", "svdd"])
def test_trimmed_float64_agrees_to_rounding(client_rows, model):
    config = FederatedConfig(model=model, hidden=(16, 8), latent_dim=4, local_epochs=3, batch_size=32, trim=0.1,
                             engine="loop")
    torch.manual_seed(0)
    global_model = build(config, client_rows).double()
    rows = [r.double() for r in _recut(client_rows, TRIM_SIZES[1])]
    for (state_a, loss_a), (state_b, loss_b) in zip(loop_engine(global_model, rows, [0, 1, 2, 3], 1, config),
                                                    vectorized_engine(global_model, rows, [0, 1, 2, 3], 1, config),
                                                    strict=True):
        assert loss_b == pytest.approx(loss_a, rel=1e-12)
        for key in state_a:
            assert torch.allclose(state_a[key], state_b[key], atol=1e-12, rtol=1e-10), key


def test_trimmed_weights_pick_rows_as_batch_loss():
    """Heavily tied losses: every client keeps exactly the rows ``batch_loss``'s ``topk`` keeps."""
    gen = torch.Generator().manual_seed(0)
    per_row = torch.randint(0, 3, (6, 40), generator=gen).double()  # few distinct values: many ties
    per_row[:, 35:] = -1.0  # padding of the short clients, lower than any loss: must never be kept
    groups = ((0, 2, 40), (2, 5, 35), (5, 6, 11))
    for trim in (0.05, 0.1, 0.3, 0.49):
        weights = vectorized._trimmed_weights(per_row, groups, trim)
        for first, last, n in groups:
            keep = n - int(trim * n)
            for c in range(first, last):
                kept = torch.topk(per_row[c, :n].clone(), keep, largest=False, sorted=False).indices
                expected = torch.zeros(per_row.shape[1], dtype=per_row.dtype)
                expected[kept] = 1.0 / keep
                assert torch.equal(weights[c], expected), (trim, c)


def _autograd(value_fn, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    leaves = [t.clone().requires_grad_() for t in inputs]
    return torch.autograd.grad(value_fn(*leaves), leaves)


def test_objective_gradients_are_the_derivatives_of_the_objectives():
    """Each ``*_backward`` in models.py (what the vectorized engine uses) is autograd's gradient of the
    function next to it (what the models and the loop engine use), in float64, on batched shapes."""
    gen = torch.Generator().manual_seed(0)
    shape, latent = (3, 7, 5), (3, 7, 4)
    recon, x = torch.randn(*shape, generator=gen, dtype=torch.float64), torch.randn(*shape, generator=gen,
                                                                                    dtype=torch.float64)
    mu, noise = torch.randn(*latent, generator=gen, dtype=torch.float64), torch.randn(*latent, generator=gen,
                                                                                      dtype=torch.float64)
    raw_logvar = 8.0 * torch.randn(*latent, generator=gen, dtype=torch.float64)  # some beyond the clamp
    assert (raw_logvar > 10.0).any() and (raw_logvar < -10.0).any()
    logvar = models.bound_logvar(raw_logvar)
    weights = torch.rand(3, 7, generator=gen, dtype=torch.float64)
    upstream = torch.randn(*latent, generator=gen, dtype=torch.float64)

    def close(actual, expected):
        for a, e in zip(actual, expected, strict=True):
            torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)

    close([models.squared_error_backward(recon, x, weights)],
          _autograd(lambda r: (models.squared_error(r, x).mean(dim=-1) * weights).sum(), [recon]))
    beta = 0.3
    close(models.elbo_rows_backward(recon, x, mu, logvar, beta, weights),
          _autograd(lambda r, m, lv: (models.elbo_rows(r, x, m, lv, beta) * weights).sum(), [recon, mu, logvar]))
    close(models.reparameterize_backward(logvar, noise, upstream),
          _autograd(lambda m, lv: (models.reparameterize(m, lv, noise) * upstream).sum(), [mu, logvar]))
    close([models.bound_logvar_backward(raw_logvar, upstream)],
          _autograd(lambda raw: (models.bound_logvar(raw) * upstream).sum(), [raw_logvar]))
    center = torch.randn(latent[-1], generator=gen, dtype=torch.float64)
    close([models.squared_distance_backward(mu, center, weights)],
          _autograd(lambda z: (models.squared_distance(z, center) * weights).sum(), [mu]))
