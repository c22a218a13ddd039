"""A run folder: the artefacts of one training run, written all at once or not at all.

Layout: ``.fedad-run`` (a marker: :mod:`fedad_tutorial.outputs` replaces only folders that hold
it), ``model.pt`` (the :class:`~fedad_tutorial.detector.Detector`), ``history.csv`` (one row per
round and client), ``summary.json`` (configuration, data description, final metrics) and
``figures/f1_per_round.png`` (skipped by ``fedad simulate --no-figure``) and ``tensorboard/``
(the history as TensorBoard events: :mod:`fedad_tutorial.tensorboard_log`).
``fedad simulate``, ``fedad run`` and the Flower server all write a run folder. A run trained with
DP-FedAvg also reports its privacy guarantee (``summary.json``'s ``privacy``, TensorBoard's
``privacy/epsilon``: :func:`fedad_tutorial.privacy.privacy_summary`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from fedad_tutorial import __version__
from fedad_tutorial.atomic import atomic_dir
from fedad_tutorial.outputs import check_run_dir, write_marker
from fedad_tutorial.tensorboard_log import FOLDER as TENSORBOARD_FOLDER
from fedad_tutorial.tensorboard_log import write_events

if TYPE_CHECKING:
    from fedad_tutorial.federated import FederationResult
    from fedad_tutorial.thresholds import ScoreHistogram

MODEL_FILE = "model.pt"


def _clean(value):
    """JSON-safe values: NaN becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def run_privacy(result: FederationResult, data: dict) -> dict | None:
    """The run's :func:`~fedad_tutorial.privacy.privacy_summary` over the ``data["clients"]`` it started
    with (``None`` without DP-FedAvg)."""
    if not result.config.private:
        return None
    from fedad_tutorial.privacy import privacy_summary  # imported here: it needs PyTorch

    return privacy_summary(result.config, len(data["clients"]))


def write_run(output_dir: str | Path, result: FederationResult, data: dict, *, figure: bool = True,
              heldout: dict[str, ScoreHistogram] | None = None, unfinished: bool = False, **extra) -> Path:
    """Write a complete run folder for ``result`` to ``output_dir`` (replacing an older one only on success).

    ``output_dir`` must pass :func:`~fedad_tutorial.outputs.check_run_dir` (commands check it, with
    their inputs, before training too). ``summary.json`` holds the configuration, ``data`` (a
    description of the clients' data; ``data["clients"]`` names them), the saved threshold and score
    method, the final round's means and rows, ``privacy`` (the run's DP-FedAvg guarantee, or null
    without DP-FedAvg), then ``extra`` entries. ``heldout``: the final model's held-out score histograms
    for TensorBoard (:func:`~fedad_tutorial.tensorboard_log.heldout_histograms`), if the caller has them.
    With ``figure=False`` no figure is drawn (and Matplotlib is not imported). ``unfinished``: the folder
    may hold an unfinished server run's checkpoint (``fedad server`` finishing that run, which replaces it).
    """
    output_dir = check_run_dir(output_dir, unfinished=unfinished)
    detector = result.detector
    privacy = run_privacy(result, data)
    summary = {
        "fedad_tutorial_version": __version__,
        "config": result.config.to_dict(),
        "data": data,
        "global_threshold": detector.threshold,
        "score_method": detector.score_method,
        "final_round_mean": result.summary(),
        "final_round_per_client": [{k: v for k, v in r.items() if k != "round"} for r in result.final_round_records()],
        "privacy": privacy,
        **extra,
    }
    with atomic_dir(output_dir) as tmp:
        write_marker(tmp, __version__)
        detector.save(tmp / MODEL_FILE)
        result.write_history_csv(tmp / "history.csv")
        (tmp / "summary.json").write_text(json.dumps(_clean(summary), indent=2) + "\n")
        write_events(tmp / TENSORBOARD_FOLDER, result.records(), result.config.to_dict(), detector.threshold,
                     heldout, privacy)
        if figure and any(not math.isnan(r.get("f1", math.nan)) for r in result.records()):
            from fedad_tutorial.plots import plot_f1_per_round, save_figure  # drawn last: Matplotlib imported here

            save_figure(plot_f1_per_round(result.history), tmp / "figures" / "f1_per_round.png")
    return output_dir
