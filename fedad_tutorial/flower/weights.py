"""A model's weights as one Flower ``Array``: a message carries two weight objects, not two per tensor.

Flower moves every ``Array`` of a message (and its chunk) as separate objects, one HTTP request
each, at every hop between the ServerApp, the SuperLink, a SuperNode and its ClientApp; with one
``Array`` per tensor, a message of the default autoencoder is 28 objects. Here the tensors travel
end to end in one flat array, in the model's ``state_dict`` order: both sides build the same model
from the message's settings, so the names and shapes need not travel. The bytes are the tensors'
own (no conversion), so training and averaging see exactly the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

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
