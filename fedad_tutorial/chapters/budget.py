"""The training budget: how detection and the unlabelled validation loss move round by round.

Chapter 13 asks how long to train when the training rows are contaminated with unlabelled
anomalies: the validation loss keeps falling while detection gets worse, because the model slowly
learns the anomalies too. :func:`budget_curve` measures both on the WDBC hospitals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from fedad_tutorial.data import hold_out
from fedad_tutorial.federated import RECOMMENDED, FederatedConfig, RecordingAggregator, run_federated
from fedad_tutorial.metrics import roc_auc
from fedad_tutorial.params import TEST_FRACTION

if TYPE_CHECKING:
    import pandas as pd

    from fedad_tutorial.chapters.datasets import Hospital


def budget_curve(hospitals: Sequence[Hospital], rounds: int = 60, config: FederatedConfig = RECOMMENDED,
                 test_fraction: float = TEST_FRACTION.default) -> pd.DataFrame:
    """Round by round: the ROC-AUC on the held-out test rows and the loss on unlabelled validation rows.

    Trains as ``fedad simulate`` does (``test_fraction`` of each hospital's training rows kept back by
    :func:`~fedad_tutorial.data.hold_out`) and records the global weights after every round with a
    :class:`~fedad_tutorial.federated.RecordingAggregator`.
    The validation loss is the mean score of the kept-back rows (the AE's score is its loss); it
    needs no labels, so it is what an early-stopping rule could watch.

    Returns:
        One row per round: ``round, roc_auc, validation_loss``.
    """
    import pandas as pd

    splits = hold_out([h.train for h in hospitals], test_fraction, config.seed)
    recorder = RecordingAggregator()
    detector = run_federated(splits, replace(config, rounds=rounds), progress=False, aggregator=recorder).detector
    test = np.concatenate([h.test.features for h in hospitals])
    labels = np.concatenate([h.test.labels for h in hospitals])
    validation = np.concatenate([s.test for s in splits])
    rows = []
    for rnd, state in enumerate(recorder.states, start=1):
        detector.model.load_state_dict(state)
        rows.append({"round": rnd, "roc_auc": roc_auc(labels, detector.decision_function(test)),
                     "validation_loss": float(detector.decision_function(validation).mean())})
    return pd.DataFrame(rows)
