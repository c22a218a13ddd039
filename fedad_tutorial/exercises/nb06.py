"""Checks for the exercises of notebook 06 (federated training with Flower).

- Exercise 6.1: pack a model's weights into a Flower ``ArrayRecord`` and back.
- Exercise 6.2: the server's global scaler from the clients' ``query.stats`` replies.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fedad_tutorial.exercises.checking import exercise, expect
from fedad_tutorial.models import ModelSpec
from fedad_tutorial.scaling import FeatureStats, Scaler, federated_scaler


@exercise("Exercise 6.1: a model as an ArrayRecord")
def check_array_record(to_record: Callable, from_record: Callable, seed: int = 606) -> None:
    """``to_record(model) -> ArrayRecord`` and ``from_record(record, spec) -> model`` must round-trip."""
    from flwr.app import ArrayRecord

    torch.manual_seed(seed)
    spec = ModelSpec("ae", input_dim=7, hidden=(16, 8), latent_dim=3)
    model = spec.build()
    record = to_record(model)
    expect(isinstance(record, ArrayRecord), f"to_record should return a flwr.app.ArrayRecord, got {type(record)}")
    expected = model.state_dict()
    expect(sorted(record.keys()) == sorted(expected.keys()),
           "the record should hold one array per entry of model.state_dict(), under the same names")
    torch.manual_seed(seed + 1)
    rebuilt = from_record(record, spec)
    expect(isinstance(rebuilt, torch.nn.Module), "from_record should return a model (spec.build(), then load)")
    got = rebuilt.state_dict()
    for name, tensor in expected.items():
        expect(torch.equal(got[name], tensor), f"weights of {name!r} differ after the round trip")
    rows = torch.randn(5, 7, generator=torch.Generator().manual_seed(seed))
    expect(torch.allclose(rebuilt.eval().score(rows), model.eval().score(rows)),
           "the rebuilt model scores rows differently")


@exercise("Exercise 6.2: the global scaler from stats replies")
def check_scaler_from_replies(scaler_from_replies: Callable, seed: int = 616) -> None:
    """``scaler_from_replies(list_of_MetricRecords) -> Scaler`` must equal the package's federated scaler."""
    from flwr.app import MetricRecord

    rng = np.random.default_rng(seed)
    parts = [rng.normal(loc=rng.uniform(-3, 3), scale=rng.uniform(0.5, 4), size=(int(n), 4))
             for n in rng.integers(20, 200, size=3)]
    parts[1][:, 2] = 5.0  # a constant feature on one client
    replies = []
    for x in parts:
        s = FeatureStats.of(x)
        replies.append(MetricRecord({"num-examples": s.count, "count": s.count, "total": s.total.tolist(),
                                     "total-sq": s.total_sq.tolist()}))
    got = scaler_from_replies(replies)
    want = federated_scaler([FeatureStats.of(x) for x in parts])
    expect(isinstance(got, Scaler), f"return a fedad_tutorial.scaling.Scaler, got {type(got)}")
    expect(np.allclose(got.mean, want.mean, rtol=1e-5),
           "the mean should be the sum of all clients' totals divided by the sum of their counts")
    expect(np.allclose(got.std, want.std, rtol=1e-4),
           "the std should come from the pooled sum of squares (E[x^2] - mean^2), not an average of "
           "the clients' own standard deviations")
