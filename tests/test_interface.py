"""One scoring interface for every detector in the course: ``decision_function``, higher = more anomalous.

The name and sign follow PyOD. scikit-learn's ``score_samples`` means the opposite (higher = more
normal), so no course detector defines it: a learner who knows scikit-learn cannot call it by habit
and get reversed scores.
"""

import numpy as np
import pytest
import torch

from fedad_tutorial.chapters.baselines import IsolationForestBaseline, NormBaseline, PCABaseline
from fedad_tutorial.chapters.forest import FederatedIsolationForest
from fedad_tutorial.detector import Detector
from fedad_tutorial.models import ModelSpec
from fedad_tutorial.scaling import Scaler
from fedad_tutorial.training import LocalTraining, train_local

rng = np.random.default_rng(0)
MIXING = rng.normal(size=(3, 6))
TRAIN = (rng.normal(size=(400, 3)) @ MIXING + 0.1 * rng.normal(size=(400, 6))).astype(np.float32)
NORMAL = (rng.normal(size=(20, 3)) @ MIXING).astype(np.float32)
FAR = np.full((1, 6), 12.0, dtype=np.float32)


def _autoencoder() -> Detector:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = ModelSpec("ae", 6, (8,), 3).build()
    scaler = Scaler.fit(TRAIN)
    train_local(model, torch.from_numpy(scaler.transform(TRAIN)), LocalTraining(epochs=20, trim=0.0),
                torch.Generator().manual_seed(0))
    return Detector(model, scaler, 1.0, [f"m{i}" for i in range(6)])


DETECTORS = {
    "autoencoder": _autoencoder,
    "federated forest": lambda: FederatedIsolationForest(trees_per_client=20, seed=0).fit([TRAIN[:200], TRAIN[200:]]),
    "PCA reconstruction": lambda: PCABaseline(2).fit(TRAIN),
    "PCA latent": lambda: PCABaseline(2, "latent").fit(TRAIN),
    "norm": lambda: NormBaseline().fit(TRAIN),
    "isolation forest": lambda: IsolationForestBaseline(seed=0).fit(TRAIN),
}


@pytest.mark.parametrize("name", DETECTORS)
def test_decision_function_is_higher_for_a_far_row(name):
    detector = DETECTORS[name]()
    scores = detector.decision_function(np.vstack([NORMAL, FAR]))
    assert scores.shape == (21,) and scores.dtype == np.float64
    assert scores[-1] > scores[:-1].max()
    assert not hasattr(detector, "score_samples")
