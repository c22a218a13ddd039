"""An autoencoder and a federated isolation forest as one detector (``--model ensemble``).

The two families fail on different tables: the autoencoder scores how far a row lies from the
structure it learned, the forest how quickly random cuts isolate it (chapter 13: an anomaly more
regular than the normal rows fools the first, not the second). Their scores live on different
scales, so each is first turned into a robust z-score, ``(score - median) / IQR``, with the median and
interquartile range of the federation's *training* scores read from a
:class:`~fedad_tutorial.thresholds.ScoreHistogram` (:class:`RobustCalibration`: counts on the shared
bins, the summary the federation already sends for its threshold, never a raw score). Then one rule,
:func:`combine`, makes one score of them; the threshold is a percentile of that score's training
histogram, as for every other model.

The histograms hold non-negative scores, so the ensemble's score is the combined z-score minus the
combination of each part's lowest possible z-score (a part's score is never below 0, so its z-score
never below ``-median / IQR``): the same ranking, never below 0 for a rule that grows with each part.

>>> rng = np.random.default_rng(0)
>>> from fedad_tutorial.thresholds import ScoreHistogram
>>> calibration = RobustCalibration.of(ScoreHistogram.of(rng.gamma(2.0, size=1000)))
>>> bool(calibration.iqr > 0), round(calibration.median, 1)
(True, 1.7)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedad_tutorial.forest import ForestModel
from fedad_tutorial.models import ModelSpec, check_score_method
from fedad_tutorial.thresholds import ScoreHistogram

#: Smallest interquartile range used as a divisor (a score constant on half the training rows).
MIN_IQR = 1e-12
#: The ensemble's parts, in the order of its calibration's rows.
PARTS = ("ae", "iforest")


@dataclass(frozen=True)
class RobustCalibration:
    """The median and interquartile range of training scores: ``(score - median) / iqr`` is a robust z-score."""

    median: float
    iqr: float

    @classmethod
    def of(cls, histogram: ScoreHistogram) -> RobustCalibration:
        """From a histogram of training scores (quantiles within one shared bin's width of the exact ones)."""
        q1, median, q3 = (histogram.quantile(q) for q in (25.0, 50.0, 75.0))
        return cls(median, max(q3 - q1, MIN_IQR))

    def z(self, scores: np.ndarray) -> np.ndarray:
        return (np.asarray(scores, dtype=np.float64) - self.median) / self.iqr


def combine(z: torch.Tensor) -> torch.Tensor:
    """THE combination rule of ``--model ensemble``: one score per row from the parts' robust z-scores
    (``z``: shape ``(parts, rows)``, in :data:`PARTS` order). The larger of them: a row is as unusual as the
    part that finds it most unusual.

    Why: when one family is fooled it is fooled towards "normal" (chapter 13: anomalies more regular than
    the normal rows get reconstruction errors *below* the training median), and a mean would average that
    wrong vote in; the maximum ignores it. On the development panel (``benchmarks/real_panel.py --rules``,
    docs/results.md, "The ensemble's rule") four rules without a parameter were fixed before the run: the
    mean and the maximum of the robust z-scores and of the training percentiles. Only the maximum of the
    z-scores had a mean ROC-AUC above both the autoencoder's and the central isolation forest's with no
    table more than 0.10 below the forest; percentiles lose how far beyond the training scores a row lies
    (PR-AUC suffers). The cost: a normal row that either part finds unusual is flagged."""
    return z.max(dim=0).values


class EnsembleModel(nn.Module):
    """The autoencoder ``ae``, the forest ``forest`` and their ``calibration`` (a buffer of shape
    ``(2, 2)``: median and IQR of each part's training scores, in :data:`PARTS` order): one model, one score."""

    def __init__(self, ae: nn.Module, forest: ForestModel, calibration: torch.Tensor) -> None:
        super().__init__()
        spec = ae.spec
        self.spec = ModelSpec("ensemble", spec.input_dim, spec.hidden, spec.latent_dim, spec.beta)
        self.ae, self.forest = ae, forest
        calibration = torch.as_tensor(calibration, dtype=torch.float64)
        if tuple(calibration.shape) != (len(PARTS), 2) or not torch.isfinite(calibration).all() \
                or not (calibration[:, 1] > 0).all():
            raise ValueError("the calibration is not a finite median and positive IQR per part")
        self.register_buffer("calibration", calibration.clone())

    @classmethod
    def calibrated(cls, ae: nn.Module, forest: ForestModel, histograms: list[ScoreHistogram]) -> EnsembleModel:
        """The ensemble whose parts are calibrated on the federation's training-score ``histograms`` (one per
        part, in :data:`PARTS` order)."""
        calibrations = [RobustCalibration.of(h) for h in histograms]
        return cls(ae, forest, torch.tensor([[c.median, c.iqr] for c in calibrations], dtype=torch.float64))

    def part_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Each part's own score of scaled rows, shape ``(parts, rows)``, float64."""
        self.ae.eval()
        with torch.no_grad():
            return torch.stack([self.ae.score(x).double(), self.forest.score(x)])

    @torch.no_grad()
    def score(self, x: torch.Tensor, method: str | None = None) -> torch.Tensor:
        """:func:`combine` of the parts' robust z-scores, minus its value at each part's lowest z-score."""
        check_score_method("ensemble", method)
        median, iqr = self.calibration[:, :1], self.calibration[:, 1:]
        z = (self.part_scores(x) - median) / iqr
        return (combine(z) - combine(-median / iqr)).clamp_min(0.0)
