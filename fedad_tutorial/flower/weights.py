"""A model's weights as one Flower ``Array``: a message carries two weight objects, not two per tensor.

Flower moves every ``Array`` of a message (and its chunk) as separate objects, one HTTP request
each, at every hop between the ServerApp, the SuperLink, a SuperNode and its ClientApp; with one
``Array`` per tensor, a message of the default autoencoder is 28 objects. Here the tensors travel
end to end in one flat array, in the model's ``state_dict`` order: both sides build the same model
from the message's settings, so the names and shapes need not travel. The bytes are the tensors'
own (no conversion), so training and averaging see exactly the same numbers.

A forest (``iforest``, and an ``ensemble``'s forest and calibration) mixes whole numbers and floats
of shapes that depend on the data: :func:`model_to_record` sends it as one ``Array`` per state entry
(a few, once per run), and :func:`model_from_record` rebuilds and checks it as a model file's
(:func:`~fedad_tutorial.detector.model_from_state`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from torch import nn

from fedad_tutorial.models import NETWORK_KINDS, ModelSpec

_KEY = "weights"


def to_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """The tensors of ``state`` (all of one dtype), flattened in order into one ``Array``."""
    tensors = [t.detach().cpu().numpy() for t in state.values()]
    if len({t.dtype for t in tensors}) != 1:
        raise ValueError(f"a model's weights must share one dtype, got {sorted({str(t.dtype) for t in tensors})}")
    return ArrayRecord({_KEY: Array(np.concatenate([t.ravel() for t in tensors]))})


def from_record(record: ArrayRecord, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict packed by :func:`to_record`, with the names, shapes and dtype of ``like``."""
    flat = record[_KEY].numpy()
    sizes = [t.numel() for t in like.values()]
    if flat.ndim != 1 or flat.size != sum(sizes):
        raise ValueError(f"the weights have {flat.size} numbers; this model has {sum(sizes)}")
    dtype = next(iter(like.values())).dtype
    ends = np.cumsum(sizes)
    return {name: torch.from_numpy(flat[end - size:end].copy()).reshape(t.shape).to(dtype)
            for (name, t), size, end in zip(like.items(), sizes, ends, strict=True)}


def model_to_record(model: nn.Module) -> ArrayRecord:
    """A model to evaluate: a network's weights packed by :func:`to_record`; a forest's or an ensemble's state
    entries one ``Array`` each, by name."""
    if model.spec.kind in NETWORK_KINDS:
        return to_record(model.state_dict())
    return state_to_record(model.state_dict())


def state_to_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """State entries of mixed dtypes and data-dependent shapes (a forest's trees, an ensemble's parts), one
    ``Array`` each, by name; :func:`state_from_record` reads them back."""
    return ArrayRecord({name: Array(np.ascontiguousarray(t.detach().cpu().numpy())) for name, t in state.items()})


def state_from_record(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """The entries :func:`state_to_record` packed, as tensors (unchecked: the model built from them checks)."""
    return {name: torch.from_numpy(record[name].numpy().copy()) for name in record}


def model_from_record(record: ArrayRecord, spec: ModelSpec) -> nn.Module:
    """The model :func:`model_to_record` packed: an ensemble (it has a ``calibration``) or a forest (its
    ``feature`` array) from its entries, checked; otherwise a network of ``spec``'s architecture."""
    from dataclasses import replace

    from fedad_tutorial.detector import model_from_state

    if _KEY in record:
        model = spec.build()
        model.load_state_dict(from_record(record, model.state_dict()))
        return model.eval()
    kind = "ensemble" if "calibration" in record else "iforest"
    return model_from_state(replace(spec, kind=kind), state_from_record(record))
