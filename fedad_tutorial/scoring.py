"""Scoring a CSV file of any size with a trained detector, in bounded memory (``fedad score``).

The rows are read, validated and scored in chunks (:class:`~fedad_tutorial.csvio.NodeCsvReader`);
each chunk's scores are appended to a temporary output file that is renamed onto the output only
when every row has been scored. A bad value anywhere (even in the last chunk) therefore leaves no
output. Only the scores and labels, small next to the rows, are kept for the summary and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedad_tutorial.atomic import atomic_path
from fedad_tutorial.csvio import CHUNK_ROWS, NodeCsvReader
from fedad_tutorial.detector import Detector
from fedad_tutorial.errors import RowError, UserError
from fedad_tutorial.outputs import check_output_file


@dataclass
class ScoredFile:
    """What :func:`score_csv` wrote: every row's score and flag, and the labels if the file had them."""

    scores: np.ndarray
    flags: np.ndarray
    labels: np.ndarray | None


def score_csv(detector: Detector, data: str | Path, output: str | Path, model: str | Path | None = None,
              chunk_rows: int = CHUNK_ROWS) -> ScoredFile:
    """Score every row of the CSV ``data``; write ``score`` and ``is_anomaly`` columns to ``output``.

    ``output`` must not be a folder, the data file or the ``model`` file
    (:func:`~fedad_tutorial.outputs.check_output_file`). Raises :class:`UserError` naming the file,
    line and column of the first bad value; nothing is written then.
    """
    data, output = Path(data), Path(output)
    check_output_file(output, [data] + ([model] if model is not None else []))
    scores, flags, labels = [], [], []
    with NodeCsvReader(data) as reader, atomic_path(output) as tmp, tmp.open("w", newline="") as out:
        detector.check_features(reader.feature_names, source=str(data))
        out.write("score,is_anomaly\n")
        for chunk in reader.chunks(chunk_rows):
            try:
                chunk_scores = detector.decision_function(chunk.features)
            except RowError as exc:
                raise UserError(f"{data}, line {chunk.lines[exc.row]}, column '{exc.column}': {exc.reason}") from None
            chunk_flags = (chunk_scores > detector.threshold).astype(np.int64)
            out.writelines(f"{s:.6g},{f}\n" for s, f in zip(chunk_scores.tolist(), chunk_flags.tolist(), strict=True))
            scores.append(chunk_scores)
            flags.append(chunk_flags)
            if chunk.labels is not None:
                labels.append(chunk.labels)
    return ScoredFile(np.concatenate(scores), np.concatenate(flags),
                      np.concatenate(labels) if reader.labelled else None)
