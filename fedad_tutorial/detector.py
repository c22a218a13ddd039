"""A trained detector as one object and one file: model, scaler, threshold and feature names.

The file is written with :func:`torch.save` and read back with ``torch.load(weights_only=True)``,
which only rebuilds tensors and plain containers: loading a model file never runs code from it.

>>> import numpy as np
>>> from fedad_tutorial.models import ModelSpec
>>> from fedad_tutorial.scaling import Scaler
>>> rows = np.random.default_rng(0).normal(size=(50, 4)).astype("float32")
>>> det = Detector(ModelSpec(input_dim=4, latent_dim=2).build(), Scaler.fit(rows), 1.0,
...                ["a", "b", "c", "d"])
>>> det.score_samples(rows).shape, set(det.predict(rows)) <= {0, 1}
((50,), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedad_tutorial import __version__
from fedad_tutorial.atomic import atomic_path
from fedad_tutorial.errors import UserError
from fedad_tutorial.models import ModelSpec, default_score_method
from fedad_tutorial.scaling import Scaler

FORMAT = "fedad-detector"
FORMAT_VERSION = 1


@dataclass
class Detector:
    """Scores rows of raw (unscaled) features; flags those above ``threshold``."""

    model: nn.Module
    scaler: Scaler
    threshold: float
    feature_names: list[str]
    score_method: str | None = None

    def __post_init__(self) -> None:
        if self.score_method is None:
            self.score_method = default_score_method(self.model.spec.kind)

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec

    def check_features(self, feature_names: list[str], source: str = "data") -> None:
        """Raise a clear error unless ``feature_names`` are the model's features, in order."""
        if list(feature_names) == list(self.feature_names):
            return
        missing = [f for f in self.feature_names if f not in feature_names]
        extra = [f for f in feature_names if f not in self.feature_names]
        detail = "; ".join(part for part in (
            f"missing {', '.join(missing)}" if missing else "",
            f"unexpected {', '.join(extra)}" if extra else "",
            "same columns in another order" if not (missing or extra) else "",
        ) if part)
        raise UserError(f"{source}: feature columns do not match the model's "
                        f"{len(self.feature_names)} features ({detail})")

    def scaled(self, features: np.ndarray) -> torch.Tensor:
        """Raw rows as the model sees them: checked for the model's width, scaled, float32."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise UserError(f"expected rows with {len(self.feature_names)} features, got shape {x.shape}")
        return torch.from_numpy(self.scaler.transform(x))

    @torch.no_grad()
    def score_samples(self, features: np.ndarray) -> np.ndarray:
        """One anomaly score per row, higher = more anomalous."""
        x = self.scaled(features)
        self.model.eval()
        return self.model.score(x, self.score_method).numpy().astype(np.float64)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """1 for rows whose score is above the threshold, else 0."""
        return (self.score_samples(features) > self.threshold).astype(np.int64)

    def save(self, path: str | Path) -> Path:
        """Write the detector to ``path`` atomically (a temporary file, then a rename)."""
        path = Path(path)
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "spec": self.spec.to_dict(),
            "state_dict": self.model.state_dict(),
            "feature_names": list(self.feature_names),
            "scaler_mean": torch.from_numpy(np.asarray(self.scaler.mean, dtype=np.float32)),
            "scaler_std": torch.from_numpy(np.asarray(self.scaler.std, dtype=np.float32)),
            "threshold": float(self.threshold),
            "score_method": self.score_method,
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Detector:
        """Read a detector written by :meth:`save`; never executes code from the file."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such model file")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any unreadable or unsafe file is the user's input problem
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{path}: not a fedad model file ({reason[:120]})") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise UserError(f"{path}: not a fedad model file")
        if payload.get("format_version") != FORMAT_VERSION:
            raise UserError(
                f"{path}: model file format {payload.get('format_version')} "
                f"(written by fedad-tutorial {payload.get('package_version')}) is not supported "
                f"by fedad-tutorial {__version__}, which reads format {FORMAT_VERSION}")
        try:
            spec = ModelSpec.from_dict(payload["spec"])
            model = spec.build()
            model.load_state_dict(payload["state_dict"])
            scaler = Scaler(payload["scaler_mean"].numpy(), payload["scaler_std"].numpy())
            feature_names = [str(f) for f in payload["feature_names"]]
            if len(feature_names) != spec.input_dim:
                raise ValueError("feature names do not match the input size")
            return cls(model.eval(), scaler, float(payload["threshold"]), feature_names,
                       payload["score_method"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise UserError(f"{path}: damaged fedad model file ({str(exc).splitlines()[0][:120]})") from None
