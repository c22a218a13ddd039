"""Scoring a CSV file of any size with a trained detector, in bounded memory (``fedad score``).

The rows are read, validated and scored in chunks (:class:`~fedad_tutorial.csvio.NodeCsvReader`);
each chunk's scores are appended to a temporary output file that is renamed onto the output only
when every row has been scored. A bad value anywhere (even in the last chunk) therefore leaves no
output. Only the scores and labels, small next to the rows, are kept for the summary and metrics.

With ``explain``, each flagged row also gets the metrics that contribute most to its score (or the
metrics the user named): name, value, the model's normal range and the metric's term of the score
(:func:`~fedad_tutorial.explain.score_contributions`: the terms of all metrics add up to the score),
computed chunk by chunk for the flagged rows only. ``report`` draws the highest-scoring alarms as
notebook 12 does (HTML or PNG), with the same columns and numbers as the CSV.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedad_tutorial.atomic import atomic_path
from fedad_tutorial.csvio import CHUNK_ROWS, NodeCsvReader, csv_writer
from fedad_tutorial.detector import Detector
from fedad_tutorial.errors import RowError, UserError
from fedad_tutorial.outputs import REPORT_GENERATOR, SCORES_HEADER, check_output_file
from fedad_tutorial.progress import progress_bar

if TYPE_CHECKING:  # pandas is imported where a report's tables are made
    import pandas as pd

#: Alarms drawn in a ``report`` (the highest scores).
REPORT_ALARMS = 6
#: Metrics per alarm in a ``report`` when ``explain`` does not say.
REPORT_METRICS = 5
REPORT_SUFFIXES = (".html", ".png")


@dataclass
class ScoredFile:
    """What :func:`score_csv` wrote: every row's score and flag, and the labels if the file had them."""

    scores: np.ndarray
    flags: np.ndarray
    labels: np.ndarray | None
    threshold: float = float("nan")
    top_alarms: list[tuple[float, int, np.ndarray]] = field(default_factory=list)  # (score, line, raw row)


#: The explanation columns of one metric (``top{i}_`` or ``{name}_`` before each): see :class:`Explainer`.
PARTS = ("value", "normal_low", "normal_high", "score_term")
#: What each explanation column is, as ``score --help``, the report and the docs say it.
SCORE_TERM = ("score_term: the metric's term of the row's score (its squared reconstruction error divided by the "
              "number of metrics, or by 2 for a VAE scored by its ELBO); the terms of all metrics "
              "(plus latent_score_term for an ELBO score) add up to the score")


class Explainer:
    """The explanation columns of ``fedad score --explain``: ``top{i}_feature, top{i}_value,
    top{i}_normal_low, top{i}_normal_high, top{i}_score_term`` for the ``k`` largest terms of the score,
    or ``{name}_value, {name}_normal_low, ...`` for named metrics; ``latent_score_term`` too for a
    VAE scored by ELBO (with every metric listed, the terms then add up to the score: :data:`SCORE_TERM`).
    The report's tables (:meth:`table`) are the same columns with the same numbers."""

    def __init__(self, detector: Detector, explain: int | list[str]) -> None:
        from fedad_tutorial.explain import normal_range

        self.detector = detector
        names = detector.feature_names
        d = len(names)
        if isinstance(explain, int):
            if not 1 <= explain <= d:
                raise UserError(f"--explain {explain}: the model has {d} features; give a number from 1 to {d}")
            self.k, self.fixed = explain, None
            prefixes = [f"top{i + 1}" for i in range(explain)]
        else:
            unknown = [f for f in explain if f not in names]
            if unknown:
                raise UserError(f"--explain: unknown feature {unknown[0]!r}; the model's features are "
                                f"{', '.join(names[:8])}{', ...' if d > 8 else ''}")
            if len(set(explain)) != len(explain):
                raise UserError("--explain: a feature is named twice")
            self.k, self.fixed = len(explain), np.array([names.index(f) for f in explain])
            prefixes = list(explain)
        self.latent = detector.score_method == "elbo"
        self.low, self.high = normal_range(detector)
        self.header = []
        for prefix in prefixes:
            self.header += ([f"{prefix}_feature"] if self.fixed is None else []) + [
                f"{prefix}_{part}" for part in PARTS]
        if self.latent:
            self.header.append("latent_score_term")
        self.blank = [""] * len(self.header)

    def explain(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The explained metrics of each row (indices, shape ``(rows, k)``), the score's terms
        (``(rows, features)``) and its latent term (``(rows,)``)."""
        from fedad_tutorial.explain import score_contributions, top_features

        terms, latent = score_contributions(self.detector, rows)
        idx = top_features(terms, self.k) if self.fixed is None else np.broadcast_to(self.fixed, (len(rows), self.k))
        return idx, terms, latent

    def cells(self, rows: np.ndarray, flagged: np.ndarray) -> list[list[str]]:
        """The cells of each row: the explanation of flagged rows, blanks otherwise; numbers exact."""
        out = [self.blank] * len(rows)
        picked = np.flatnonzero(flagged)
        if not picked.size:
            return out
        idx, terms, latent = self.explain(rows[picked])
        names = self.detector.feature_names
        for r, (row_idx, i) in enumerate(zip(idx, picked, strict=True)):
            parts = []
            for j in row_idx:
                if self.fixed is None:
                    parts.append(names[j])
                parts += [_exact(rows[i, j]), _exact(self.low[j]), _exact(self.high[j]), _exact(terms[r, j])]
            if self.latent:
                parts.append(_exact(latent[r]))
            out[i] = parts
        return out

    def table(self, row: np.ndarray) -> pd.DataFrame:
        """One row's explanation as a table: a line per explained metric, the CSV's columns without their
        prefix (``feature``, then :data:`PARTS`); ``attrs["latent_score_term"]`` for an ELBO score."""
        import pandas as pd

        row = np.asarray(row, dtype=np.float64).reshape(1, -1)
        idx, terms, latent = self.explain(row)
        j = idx[0]
        table = pd.DataFrame({"feature": [self.detector.feature_names[i] for i in j], "value": row[0, j],
                              "normal_low": self.low[j], "normal_high": self.high[j], "score_term": terms[0, j]})
        if self.latent:
            table.attrs["latent_score_term"] = float(latent[0])
        return table


def _exact(value) -> str:
    """A number as the shortest text that reads back to the same bits (a float32 in float32's own form)."""
    return str(value) if isinstance(value, np.float32) else repr(float(value))


def parse_explain(text: str) -> int | list[str]:
    """``--explain``'s value: a whole number K (the K largest contributions) or comma-separated feature names."""
    text = text.strip()
    if re.fullmatch(r"[+-]?[0-9]+", text):  # ASCII digits only: str.isdigit() also takes '²', which int() refuses
        return int(text)
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise UserError(f"--explain: expected a number of features or comma-separated feature names, got {text!r}")
    return names


def score_csv(detector: Detector, data: str | Path, output: str | Path, model: str | Path | None = None,
              chunk_rows: int = CHUNK_ROWS, threshold: float | None = None, explain: int | list[str] | None = None,
              report: str | Path | None = None, quiet: bool = True, overwrite: bool = False) -> ScoredFile:
    """Score every row of the CSV ``data``; write ``score`` and ``is_anomaly`` columns to ``output``.

    ``threshold``: flag rows above it instead of the detector's saved threshold. ``explain``: add the
    :class:`Explainer` columns for flagged rows. ``report``: also write an HTML or PNG page of the
    highest-scoring alarms. ``quiet=False`` shows a progress bar on stderr for files that take a while.

    ``output`` must not be a folder, a special file, the data file or the ``model`` file, nor (unless
    ``overwrite``) an existing file that ``score`` did not write
    (:func:`~fedad_tutorial.outputs.check_output_file`); the same holds for ``report``. Raises
    :class:`UserError` naming the file, line and column of the first bad value; nothing is written then.
    """
    data, output = Path(data), Path(output)
    inputs = [data] + ([model] if model is not None else [])
    check_output_file(output, inputs, "scores", overwrite)
    if report is not None:
        report = Path(report)
        if report.suffix.lower() not in REPORT_SUFFIXES:
            raise UserError(f"{report}: a report is an .html or .png file")
        check_output_file(report, inputs + [output], "report", overwrite)
        if report.resolve() == output.resolve():
            raise UserError(f"{report}: is also the --output file; give the report its own path")
    if explain is not None or report is not None:
        from fedad_tutorial.explain import check_reconstruction

        check_reconstruction(detector, "--explain" if explain is not None else "--report",
                             str(model) if model is not None else "the model")
    threshold = detector.threshold if threshold is None else float(threshold)
    explainer = Explainer(detector, explain) if explain is not None else None
    scores, flags, labels, top = [], [], [], []
    with (NodeCsvReader(data) as reader, atomic_path(output) as tmp,
          tmp.open("w", newline="", encoding="utf-8") as out,
          progress_bar(data.stat().st_size, f"scoring {data.name}", "B", quiet, unit_scale=True) as bar):
        detector.check_features(reader.feature_names, source=str(data))
        header = SCORES_HEADER.split(",") + (explainer.header if explainer else [])
        writer = csv_writer(out, header + list(detector.feature_names))
        writer.writerow(header)
        for chunk in reader.chunks(chunk_rows):
            try:
                chunk_scores = detector.decision_function(chunk.features)
            except RowError as exc:
                raise UserError(f"{data}, line {chunk.lines[exc.row]}, column '{exc.column}': {exc.reason}") from None
            chunk_flags = (chunk_scores > threshold).astype(np.int64)
            cells = explainer.cells(chunk.features, chunk_flags.astype(bool)) if explainer else [[]] * len(chunk_flags)
            writer.writerows([repr(s), str(f), *c] for s, f, c in zip(chunk_scores.tolist(), chunk_flags.tolist(),
                                                                        cells, strict=True))
            if report is not None:
                _keep_top(top, chunk_scores, chunk_flags, chunk)
            scores.append(chunk_scores)
            flags.append(chunk_flags)
            if chunk.labels is not None:
                labels.append(chunk.labels)
            bar.update(reader.bytes_read - bar.n)
        alarms = [(s, -neg_line, row) for s, neg_line, row in sorted(top, key=lambda t: t[:2], reverse=True)]
        scored = ScoredFile(np.concatenate(scores), np.concatenate(flags),
                            np.concatenate(labels) if reader.labelled else None, threshold, alarms)
        if report is not None:  # written before the scores are renamed into place: both or neither
            shown = explainer if explainer is not None and explainer.fixed is None else Explainer(
                detector, min(REPORT_METRICS, len(detector.feature_names)))
            write_report(shown, scored, report, data)
    return scored


def _keep_top(top: list, scores: np.ndarray, flags: np.ndarray, chunk) -> None:
    """Keep the :data:`REPORT_ALARMS` highest-scoring flagged rows seen so far in the min-heap ``top``
    of ``(score, -line, row)`` (on equal scores, the earlier line stays)."""
    for i in np.flatnonzero(flags):
        item = (float(scores[i]), -int(chunk.lines[i]), chunk.features[i].copy())
        if len(top) < REPORT_ALARMS:
            heapq.heappush(top, item)
        elif item[:2] > top[0][:2]:
            heapq.heapreplace(top, item)


_RANGE = {True: "1st-99th percentile of the federation's training rows",
          False: "the federation's mean &plusmn; 2.33 standard deviations"}


def readable(text: str) -> str:
    """``text`` as it can be written to a UTF-8 page: a file name's undecodable bytes (kept by Python as
    lone surrogates) become U+FFFD instead of failing the write."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def plain_text(text: str) -> str:
    """``text`` for Matplotlib, drawn as written: ``$`` escaped (``$x_$`` would be parsed as mathtext and
    fail), undecodable bytes replaced (:func:`readable`)."""
    return readable(text).replace("$", r"\$")


def write_report(explainer: Explainer, scored: ScoredFile, path: Path, data: Path) -> Path:
    """Draw the top alarms (notebook 12's figure: each alarm's top metrics, with their values and the model's
    normal ranges) to a PNG, or to an HTML page with the figure and one table per alarm. The bars and tables
    are ``explainer``'s: the CSV's columns and numbers (:data:`SCORE_TERM`).

    Names from the data (the file's, the columns') are escaped wherever drawn or written: HTML-escaped
    in the page, :func:`plain_text` in the figure. Both files carry :data:`~fedad_tutorial.outputs.
    REPORT_GENERATOR`, so a later ``score`` recognises them as its own."""
    import base64
    import html
    import io
    import warnings

    from matplotlib.figure import Figure

    from fedad_tutorial.explain import plot_alarm

    detector = explainer.detector
    alarms = scored.top_alarms
    has_range = detector.feature_range is not None
    n_flagged = int(scored.flags.sum())
    title = (f"{readable(data.name)}: {n_flagged} of {len(scored.scores)} rows flagged (threshold "
             f"{scored.threshold:.4g}); the {len(alarms)} highest-scoring alarms")
    cols = 2 if len(alarms) > 1 else 1
    rows = max(1, (len(alarms) + cols - 1) // cols)
    fig = Figure(figsize=(6 * cols, 3.2 * rows), layout="constrained")
    tables = []
    if alarms:
        for ax, (score, line, row) in zip(np.atleast_1d(fig.subplots(rows, cols)).ravel(), alarms, strict=False):
            table = explainer.table(row)
            drawn = table.copy()  # the names as Matplotlib must be given them
            drawn["feature"] = drawn["feature"].map(plain_text)
            plot_alarm(drawn, ax=ax, title=f"line {line}, score {score:.4g}")
            tables.append((line, score, table))
        for ax in np.atleast_1d(fig.axes)[len(alarms):]:
            ax.set_visible(False)
    else:
        fig.text(0.5, 0.5, "no row is above the threshold", ha="center", va="center")
    fig.suptitle(plain_text(title), fontsize=10)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # a name in a script the font lacks: drawn as boxes, not warned about
        warnings.filterwarnings("ignore", "Glyph .* missing from", UserWarning)
        fig.savefig(buffer, format="png", dpi=110, metadata={"Software": REPORT_GENERATOR})
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".png":
            tmp.write_bytes(buffer.getvalue())
        else:
            image = base64.b64encode(buffer.getvalue()).decode("ascii")
            parts = [f"<!doctype html><html><head><meta charset='utf-8'>"
                     f"<meta name='generator' content='{REPORT_GENERATOR}'><title>{html.escape(title)}</title>"
                     "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
                     "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style></head><body>",
                     f"<h1>fedad score: top alarms</h1><p>{html.escape(title)}. normal_low, normal_high: "
                     f"{_RANGE[has_range]}; {html.escape(SCORE_TERM)}. The same columns as the CSV's "
                     "<code>--explain</code> columns.</p>",
                     f"<img alt='top alarms' src='data:image/png;base64,{image}'>"]
            for line, score, table in tables:
                latent = table.attrs.get("latent_score_term")
                also = f", latent_score_term {latent:.6g}" if latent is not None else ""
                parts.append(f"<h2>line {line}, score {score:.6g}{also}</h2>")
                shown = table.copy()
                shown["feature"] = shown["feature"].map(readable)
                parts.append(shown.to_html(index=False, float_format=lambda v: f"{v:.6g}", escape=True))
            tmp.write_text("\n".join(parts) + "</body></html>\n", encoding="utf-8")
    return path
