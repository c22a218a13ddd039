"""Feature scaling that a federation can agree on without pooling raw rows.

Each client shares only three summary vectors of its training rows (count, sum, sum of squares).
The server adds them up and derives one global mean and standard deviation, exactly the values a
scaler fitted on the pooled rows would give. ``local`` scaling (each client standardises with its
own statistics) is kept as an option so the course can compare the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedad_tutorial.errors import RowError, UserError

#: The largest magnitude a value may have: float32's largest finite number (the models compute in float32).
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: Standard deviations below this are treated as constant features (scaled by 1, not divided by 0).
MIN_STD = 1e-8


@dataclass(frozen=True)
class FeatureStats:
    """Sufficient statistics of one client's training rows: all a global scaler needs."""

    count: int
    total: np.ndarray
    total_sq: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray) -> FeatureStats:
        x = np.asarray(features, dtype=np.float64)
        return cls(count=int(x.shape[0]), total=x.sum(axis=0), total_sq=(x * x).sum(axis=0))

    def __add__(self, other: FeatureStats) -> FeatureStats:
        return FeatureStats(self.count + other.count, self.total + other.total,
                            self.total_sq + other.total_sq)


@dataclass(frozen=True)
class Scaler:
    """Standardisation ``(x - mean) / std`` with fixed, shareable parameters."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def from_stats(cls, stats: FeatureStats) -> Scaler:
        if stats.count < 1:
            raise UserError("cannot fit a scaler on zero rows")
        mean = stats.total / stats.count
        var = np.maximum(stats.total_sq / stats.count - mean**2, 0.0)
        std = np.sqrt(var)
        return cls(mean=mean.astype(np.float32), std=np.where(std < MIN_STD, 1.0, std).astype(np.float32))

    @classmethod
    def fit(cls, features: np.ndarray) -> Scaler:
        return cls.from_stats(FeatureStats.of(features))

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Standardised rows in float32; a value pushed beyond float32's range becomes infinite, without
        a warning (:meth:`transform_checked` refuses it instead)."""
        with np.errstate(over="ignore"):
            return ((np.asarray(features, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def transform_checked(self, features: np.ndarray, feature_names: list[str]) -> np.ndarray:
        """:meth:`transform`, refusing a value that standardisation pushes beyond float32 (one far
        outside the training range) with a :class:`~fedad_tutorial.errors.RowError` naming where."""
        z = self.transform(features)
        bad = ~np.isfinite(z)
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            value = float(np.asarray(features)[row, col])
            raise RowError(row, feature_names[col], f"the scaled value overflows float32 ({value:g} with training "
                                                    f"mean {self.mean[col]:.4g} and std {self.std[col]:.4g})")
        return z


def federated_scaler(client_stats: list[FeatureStats]) -> Scaler:
    """The global scaler from every client's summary statistics (FedAvg of moments)."""
    if not client_stats:
        raise UserError("no client statistics to aggregate")
    total = client_stats[0]
    for stats in client_stats[1:]:
        total = total + stats
    return Scaler.from_stats(total)
