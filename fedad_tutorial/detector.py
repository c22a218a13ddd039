"""A trained detector as one object and one file: model, scaler, threshold and feature names.

The file is written with :func:`torch.save` and read back with ``torch.load(weights_only=True)``,
which only rebuilds tensors and plain containers: loading a model file never runs code from it.

A detector trained by a federation also keeps the federation's histogram of training scores
(:class:`~fedad_tutorial.thresholds.ScoreHistogram`: counts on the shared bins, never a score), so
:meth:`Detector.threshold_for` can move the threshold to another percentile without retraining.
Model files written before it existed load without one.

>>> import numpy as np
>>> from fedad_tutorial.models import ModelSpec
>>> from fedad_tutorial.scaling import FLOAT32_MAX, Scaler
>>> rows = np.random.default_rng(0).normal(size=(50, 4)).astype("float32")
>>> det = Detector(ModelSpec(input_dim=4, latent_dim=2).build(), Scaler.fit(rows), 1.0,
...                ["a", "b", "c", "d"])
>>> det.decision_function(rows).shape, set(det.predict(rows)) <= {0, 1}
((50,), True)
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedad_tutorial import __version__
from fedad_tutorial.atomic import atomic_path, describe_mode
from fedad_tutorial.errors import RowError, UserError
from fedad_tutorial.models import NETWORK_KINDS, ModelSpec, check_score_method, default_score_method
from fedad_tutorial.scaling import FLOAT32_MAX, Scaler
from fedad_tutorial.thresholds import ScoreHistogram

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
    score_histogram: ScoreHistogram | None = None  # the federation's training scores, as shared-bin counts
    #: each metric's 1st and 99th percentile on the federation's training rows, raw units, shape (2, features)
    feature_range: np.ndarray | None = None

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
        from fedad_tutorial.csvio import column_difference

        raise UserError(f"{source}: feature columns do not match the model's "
                        f"({column_difference(list(feature_names), list(self.feature_names))})")

    def check_rows(self, features: np.ndarray) -> np.ndarray:
        """The rows as a float32 array after checks like scikit-learn's ``check_array``.

        Rows must form a 2-D array of numbers, one column per model feature, each value finite and
        within float32's range (a larger value would become infinite). Raises :class:`UserError`
        (a :class:`~fedad_tutorial.errors.RowError` naming the first bad row and column).
        """
        try:
            x = np.asarray(features, dtype=np.float64)
        except (TypeError, ValueError):
            raise UserError("rows must be an array of numbers") from None
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise UserError(f"expected rows with {len(self.feature_names)} features, got shape {x.shape}")
        bad = ~(np.abs(x) <= FLOAT32_MAX)
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            raise RowError(row, self.feature_names[col],
                           f"{x[row, col]:g} is not a finite number within the float32 range")
        return x.astype(np.float32)

    def scaled(self, features: np.ndarray) -> torch.Tensor:
        """Raw rows as the model sees them: checked (:meth:`check_rows`), scaled, float32."""
        return torch.from_numpy(self.scaler.transform_checked(self.check_rows(features), self.feature_names))

    @torch.no_grad()
    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """One anomaly score per row, higher = more anomalous (PyOD's convention for this name).

        A row so far outside the training range that its score overflows float32 is an error
        (a :class:`~fedad_tutorial.errors.RowError` naming the row's most extreme column), not an
        infinite score.
        """
        x = self.scaled(features)
        self.model.eval()
        scores = self.model.score(x, self.score_method).numpy().astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            row = int(bad[0])
            col = int(np.argmax(np.abs(x[row].numpy())))
            raise RowError(row, self.feature_names[col], f"the anomaly score overflows float32: the value is "
                           f"{float(x[row, col]):.3g} standard deviations from the training mean")
        return scores

    def threshold_for(self, percentile: float | None = None, max_alarm_rate: float | None = None,
                      source: str = "the model file") -> float:
        """The saved threshold, or the one at ``percentile`` of the federation's training scores, or the one
        that flags at most a share ``max_alarm_rate`` of them (the ``100 * (1 - rate)``-th percentile).

        Read from :attr:`score_histogram`, so within one shared bin's width of the exact percentile.
        """
        if percentile is None and max_alarm_rate is None:
            return self.threshold
        if percentile is not None and max_alarm_rate is not None:
            raise UserError("give a percentile or a maximum alarm rate, not both")
        if max_alarm_rate is not None:
            if not 0.0 < max_alarm_rate < 1.0:
                raise UserError(f"the maximum alarm rate must be between 0 and 1 (exclusive), got {max_alarm_rate:g}")
            percentile = 100.0 * (1.0 - max_alarm_rate)
        if self.score_histogram is None:
            raise UserError(f"{source}: holds no histogram of training scores (written before fedad-tutorial "
                            "kept one), so only its saved threshold can be used; retrain to choose another")
        return self.score_histogram.quantile(percentile)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """1 for rows whose score is above the threshold, else 0."""
        return (self.decision_function(features) > self.threshold).astype(np.int64)

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
        if self.score_histogram is not None:
            payload["score_histogram"] = torch.from_numpy(self.score_histogram.counts.copy())
        if self.feature_range is not None:
            payload["feature_range"] = torch.from_numpy(np.asarray(self.feature_range, dtype=np.float64).copy())
        buffer = io.BytesIO()  # serialise first: a full disk then raises OSError (ENOSPC), not torch's error
        torch.save(payload, buffer)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Detector:
        """Read a detector written by :meth:`save`; never executes code from the file."""
        path = Path(path)
        if path.is_dir():
            raise UserError(f"{path}: is a folder, not a model file (give the run's {path / 'model.pt'})")
        if not path.is_file():
            raise UserError(f"{path}: is {describe_mode(path.stat().st_mode)}, not a model file" if path.exists()
                            else f"{path}: no such model file")
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
            return cls._from_payload(payload)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise UserError(f"{path}: damaged fedad model file ({str(exc).splitlines()[0][:160]})") from None

    @classmethod
    def _from_payload(cls, payload: dict) -> Detector:
        """Check every part of a loaded payload (the model: :func:`model_from_state`), then build the detector."""
        spec = ModelSpec.from_dict(payload["spec"])
        check_network_state(spec, payload["state_dict"])  # a forest's arrays are checked as it is built, below
        mean, std = payload["scaler_mean"], payload["scaler_std"]
        feature_names = [str(f) for f in payload["feature_names"]]
        if len(feature_names) != spec.input_dim:
            raise ValueError(f"{len(feature_names)} feature names for {spec.input_dim} inputs")
        for name, vector in (("scaler mean", mean), ("scaler std", std)):
            if not isinstance(vector, torch.Tensor) or tuple(vector.shape) != (spec.input_dim,):
                raise ValueError(f"the {name} does not have one value per feature ({spec.input_dim})")
        if not torch.isfinite(mean).all():
            raise ValueError("the scaler mean holds NaN or infinite values")
        if not (torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError("the scaler std must be finite and positive")
        threshold = float(payload["threshold"])
        if not math.isfinite(threshold):
            raise ValueError(f"the threshold is {threshold}")
        score_method = payload["score_method"]
        check_score_method(spec.kind, score_method)
        histogram = payload.get("score_histogram")
        if histogram is not None:
            if not isinstance(histogram, torch.Tensor):
                raise ValueError("the score histogram is not a tensor of counts")
            histogram = ScoreHistogram.from_counts(histogram.numpy())
        feature_range = payload.get("feature_range")
        if feature_range is not None:
            if not (isinstance(feature_range, torch.Tensor) and tuple(feature_range.shape) == (2, spec.input_dim)
                    and torch.isfinite(feature_range).all() and (feature_range[0] <= feature_range[1]).all()):
                raise ValueError("the feature range is not a finite low <= high pair per feature")
            feature_range = feature_range.double().numpy()
        model = model_from_state(spec, payload["state_dict"], checked=True)  # last: every other check has passed
        return cls(model.eval(), Scaler(mean.numpy(), std.numpy()), threshold, feature_names, score_method,
                   histogram, feature_range)


def check_network_state(spec: ModelSpec, state) -> None:
    """Raise ``ValueError`` unless ``state`` is a dictionary of tensors and, for a network, its shapes are the
    spec's and its numbers finite. The spec's shapes come from PyTorch's ``meta`` device (shapes only, no
    memory): a small file whose spec asks for huge layers is rejected without allocating them. A forest's
    arrays (an ``iforest``'s, an ``ensemble``'s) are checked by :func:`model_from_state` as they are built."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("the weights are not a dictionary of tensors")
    if spec.kind not in NETWORK_KINDS:
        return
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in spec.build().state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        raise ValueError(f"the weights' shapes do not match the model spec {spec.to_dict()}")
    for name, tensor in state.items():
        if not torch.isfinite(tensor).all():
            raise ValueError(f"weights {name} hold NaN or infinite values")


def model_from_state(spec: ModelSpec, state, checked: bool = False) -> nn.Module:
    """The model a file's (or a message's) spec and state dict describe, every part checked first
    (``checked``: :func:`check_network_state` has passed already); ``ValueError`` (or ``KeyError``/
    ``TypeError``) names what is wrong. A forest's arrays are checked as trees
    (:meth:`~fedad_tutorial.forest.Trees.check`); an ensemble's parts each as their own kind."""
    if not checked:
        check_network_state(spec, state)
    if spec.kind == "iforest":
        from fedad_tutorial.forest import forest_model

        return forest_model(spec.input_dim, state)
    if spec.kind == "ensemble":
        from dataclasses import replace

        from fedad_tutorial.ensemble import EnsembleModel

        parts = {prefix: {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
                 for prefix in ("ae", "forest")}
        extra = sorted(set(state) - {f"{p}.{k}" for p, part in parts.items() for k in part} - {"calibration"})
        if extra:
            raise ValueError(f"unexpected ensemble entries {extra[:3]}")
        ae = model_from_state(replace(spec, kind="ae"), parts["ae"])
        return EnsembleModel(ae, model_from_state(replace(spec, kind="iforest"), parts["forest"]),
                             state["calibration"])
    model = spec.build()
    model.load_state_dict(state)
    return model.eval()
