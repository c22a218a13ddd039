"""``fedad server``'s checkpoint: what a killed server needs to continue its run (``--resume RUN``).

After every completed round (its weights aggregated and its evaluation reported) the server
replaces ``RUN/checkpoint.pt`` in one rename (:func:`~fedad_tutorial.atomic.atomic_path`): the
global weights, the round, the history rows so far, the global scaler, the settings, and the
federation's nodes (their ``--node-id``, data name, row counts, features and, with node
authentication, key fingerprint; which of them still answer). The file is ``torch.save`` of
tensors and plain containers only, read back with ``weights_only=True``: loading it never runs code.

No random state is stored because none is needed: every draw a round makes is seeded by the run's
seed and that round (:func:`~fedad_tutorial.federated.sample_clients`) or by seed, round and client
(:func:`~fedad_tutorial.training.client_generator`, each node's batches), and the initial weights,
the one draw from PyTorch's global generator, are replaced by the checkpoint's. So the rounds after
the checkpoint give what they give in an uninterrupted run (``tests/test_resume.py`` checks it).

A run folder holding ``checkpoint.pt`` is an unfinished run: ``--resume`` continues it, and a new
run refuses to replace it. The finished run folder is written whole without it (``write_run``), so
a folder without one is either complete or not a server's run, and ``--resume`` refuses both.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from fedad_tutorial.atomic import atomic_path
from fedad_tutorial.errors import UserError
from fedad_tutorial.flower.files import read_bounded, shown
from fedad_tutorial.flower.settings import FlowerSettings
from fedad_tutorial.outputs import CHECKPOINT, MARKER, is_run_dir, write_marker
from fedad_tutorial.scaling import Scaler

#: The version of the checkpoint's layout (a file of another layout is refused, not guessed at).
FORMAT = 1
#: Largest checkpoint read: a model of this package and its history are far smaller; anything bigger is not ours.
MAX_CHECKPOINT_BYTES = 1 << 30
#: Settings that may change between a run and its resumption: how long to wait, not what is trained.
OPERATIONAL = frozenset({"wait-timeout", "round-timeout", "output-dir"})


@dataclass(frozen=True)
class NodeRecord:
    """A node of the federation as the checkpoint keeps it (what identifies it on resumption)."""

    index: int  # 0-based (``--node-id`` - 1)
    name: str
    key: str  # the fingerprint of its key ("" without authentication)
    n_train: int
    n_test: int
    features: tuple[str, ...]
    labelled: bool
    alive: bool  # still answering when the checkpoint was written


@dataclass
class Checkpoint:
    """One completed round of a server's run."""

    round: int
    settings: dict  # FlowerSettings.to_run_config()
    state: dict[str, torch.Tensor]
    history: list[dict]
    scaler: Scaler
    nodes: list[NodeRecord]
    missing: list[str]  # "name (why)" of each dropped node
    authentication: bool

    @property
    def rounds(self) -> int:
        return int(self.settings["rounds"])

    def to_plain(self) -> dict:
        return {"format": FORMAT, "round": self.round, "settings": dict(self.settings),
                "state": {k: v.detach().clone() for k, v in self.state.items()},
                "history": [{k: _plain(v) for k, v in r.items()} for r in self.history],
                "scaler": {"mean": torch.from_numpy(np.asarray(self.scaler.mean, dtype=np.float32).copy()),
                           "std": torch.from_numpy(np.asarray(self.scaler.std, dtype=np.float32).copy())},
                "nodes": [{f.name: list(v) if isinstance(v := getattr(n, f.name), tuple) else v
                           for f in fields(NodeRecord)} for n in self.nodes],
                "missing": list(self.missing), "authentication": self.authentication}


def _plain(value):
    """A history cell as a Python scalar (``weights_only`` loading refuses NumPy's)."""
    return value.item() if isinstance(value, np.generic) else value


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT


def save_checkpoint(run_dir: str | Path, checkpoint: Checkpoint) -> Path:
    """Replace ``RUN/checkpoint.pt`` in one rename (a folder that does not exist yet is made a run folder
    first, with its marker, so that the final ``write_run`` may replace it)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / MARKER).exists():
        write_marker(run_dir, _version())
    path = checkpoint_path(run_dir)
    with atomic_path(path) as tmp:
        torch.save(checkpoint.to_plain(), tmp)
    return path


def _version() -> str:
    from fedad_tutorial import __version__

    return __version__


def unfinished(run_dir: str | Path) -> str | None:
    """If ``run_dir`` holds a checkpoint, a phrase saying how far its run got (for a new run's refusal)."""
    path = checkpoint_path(run_dir)
    if not os.path.lexists(path):
        return None
    try:
        done = load_checkpoint(run_dir)
        return f"round {done.round} of {done.rounds}"
    except UserError:
        return "its checkpoint cannot be read"


def check_not_unfinished(run_dir: str | Path) -> None:
    """A new run must not replace an unfinished one: its checkpoint is the only way to continue it."""
    how_far = unfinished(run_dir)
    if how_far is not None:
        raise UserError(f"{shown(run_dir)}: holds an unfinished run ({how_far}); continue it with "
                        f"`fedad server --resume {shown(run_dir)} ...`, or remove {CHECKPOINT} from it, "
                        "or choose another --output-dir")


def _bad(path: Path, why: str) -> UserError:
    return UserError(f"{shown(path)}: {why}; it cannot be resumed")


def _read(path: Path) -> bytes:
    """The checkpoint's bytes: a regular file (never through a symlink), at most MAX_CHECKPOINT_BYTES."""
    # FileNotFoundError: the caller says what a missing checkpoint means
    return read_bounded(path, MAX_CHECKPOINT_BYTES, lambda why: _bad(path, f"{why} (a checkpoint fedad writes)"),
                        follow=False)


def _check(condition: bool, path: Path, what: str) -> None:
    if not condition:
        raise _bad(path, f"damaged ({what})")


def load_checkpoint(run_dir: str | Path) -> Checkpoint:
    """The checkpoint of the unfinished run in ``run_dir``; a one-line :class:`UserError` for anything else:
    a missing, symlinked or special folder or file, a complete run, a damaged or foreign file."""
    run_dir = Path(run_dir)
    if os.path.islink(run_dir):
        raise UserError(f"{shown(run_dir)}: is a symbolic link; give the run folder itself to --resume")
    if not run_dir.is_dir():
        raise UserError(f"{shown(run_dir)}: {'is not a folder' if run_dir.exists() else 'does not exist'}; "
                        "--resume takes the run folder of a killed fedad server")
    path = checkpoint_path(run_dir)
    try:
        raw = _read(path)
    except FileNotFoundError:
        if is_run_dir(run_dir) and (run_dir / "summary.json").exists():
            raise UserError(f"{shown(run_dir)}: is a complete run (it has summary.json and no {CHECKPOINT}); "
                            "there is nothing to resume") from None
        raise UserError(f"{shown(run_dir)}: holds no {CHECKPOINT}; --resume takes the run folder of a "
                        "fedad server killed after at least one round") from None
    try:
        plain = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - whatever the unpickler says, the file is not a checkpoint
        raise _bad(path, f"not a checkpoint written by fedad server ({type(exc).__name__})") from None
    return _from_plain(plain, path)


def _from_plain(plain, path: Path) -> Checkpoint:
    """Every field checked for its type: a file that loads but holds something else is damaged, not a crash."""
    _check(isinstance(plain, dict), path, "not a mapping")
    _check(plain.get("format") == FORMAT, path, f"layout {plain.get('format')!r}, expected {FORMAT}")
    names = {"format", "round", "settings", "state", "history", "scaler", "nodes", "missing", "authentication"}
    _check(set(plain) == names, path, "unexpected entries")
    rnd, settings, state = plain["round"], plain["settings"], plain["state"]
    _check(isinstance(settings, dict) and all(isinstance(k, str) for k in settings), path, "settings")
    try:
        parsed = FlowerSettings.from_run_config(settings)
    except (UserError, TypeError, ValueError) as exc:
        raise _bad(path, f"damaged settings ({exc})") from None
    rounds = parsed.config.rounds
    _check(isinstance(rnd, int) and not isinstance(rnd, bool) and 1 <= rnd < rounds, path,
           f"round {rnd!r} of {rounds}")
    _check(isinstance(state, dict) and bool(state) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                           for k, v in state.items()), path, "model weights")
    _check(all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()), path,
           "non-finite weights")
    history = plain["history"]
    _check(isinstance(history, list) and all(isinstance(r, dict) for r in history), path, "history")
    _check(all(r.get("round") in range(1, rnd + 1) for r in history), path, "history rounds")
    scaler = plain["scaler"]
    _check(isinstance(scaler, dict) and set(scaler) == {"mean", "std"}
           and all(isinstance(v, torch.Tensor) and v.dim() == 1 for v in scaler.values())
           and scaler["mean"].shape == scaler["std"].shape, path, "scaler")
    nodes = plain["nodes"]
    _check(isinstance(nodes, list) and bool(nodes) and all(isinstance(n, dict) for n in nodes), path, "nodes")
    try:
        records = [NodeRecord(**{**n, "features": tuple(n["features"])}) for n in nodes]
    except (TypeError, KeyError) as exc:
        raise _bad(path, f"damaged nodes ({exc})") from None
    _check(sorted(n.index for n in records) == sorted({n.index for n in records}), path, "duplicate nodes")
    _check(all(len(n.features) == scaler["mean"].shape[0] for n in records), path, "node features")
    missing = plain["missing"]
    _check(isinstance(missing, list) and all(isinstance(m, str) for m in missing), path, "missing nodes")
    _check(isinstance(plain["authentication"], bool), path, "authentication")
    model = parsed.config.model_spec(scaler["mean"].shape[0]).build()
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise _bad(path, f"weights that do not fit the configured model: {str(exc).splitlines()[0]}") from None
    return Checkpoint(rnd, settings, state, history, Scaler(scaler["mean"].numpy(), scaler["std"].numpy()),
                      records, missing, plain["authentication"])


def served(settings: FlowerSettings) -> FlowerSettings:
    """The settings a deployment trains with: the loop engine (each node trains its own model) and the global
    scaler (from the nodes' statistics), whatever the flags say."""
    return replace(settings, config=replace(settings.config, engine="loop", scaling="global"))


def check_same_settings(checkpoint: Checkpoint, settings: FlowerSettings, path: Path) -> None:
    """The resumed run must train what the checkpoint's run trained: every setting but the waiting times
    (:data:`OPERATIONAL`) equal, else a one-line :class:`UserError` naming the first differences."""
    now = served(settings).to_run_config()
    then: Mapping = checkpoint.settings
    differ = [k for k in sorted(set(now) | set(then)) if k not in OPERATIONAL and now.get(k) != then.get(k)]
    if differ:
        shown_ = ", ".join(f"--{k} {then.get(k)!r} (checkpoint) vs {now.get(k)!r} (now)" for k in differ[:3])
        more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
        raise UserError(f"{shown(path)}: was written with other settings: {shown_}{more}; give the flags "
                        "the run was started with")

