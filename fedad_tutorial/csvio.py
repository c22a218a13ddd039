"""Node CSV files: reading with validation that names the file, line and column, atomic writing.

Contract: one row per observation; a header; numeric feature columns with any names; an optional
``label`` column (0 normal, 1 anomaly) that is kept apart and never used for training.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from fedad_tutorial.atomic import atomic_path
from fedad_tutorial.data import NodeData
from fedad_tutorial.errors import UserError

LABEL = "label"


def read_node_csv(path: str | Path) -> NodeData:
    """Read and validate one node's CSV; the node is named after the file (``node_1.csv`` -> ``node_1``).

    Raises:
        UserError: missing or empty file, no data rows, a row with the wrong number of cells,
            a cell that is not a finite number, or a label other than 0/1, naming where.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text CSV file (could not decode as UTF-8)") from None
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise UserError(f"{path}: file is empty (expected a header line and data rows)")
    header = [cell.strip() for cell in rows[0]]
    _check_header(path, header)
    data_rows = [(i + 2, r) for i, r in enumerate(rows[1:]) if any(cell.strip() for cell in r)]
    if not data_rows:
        raise UserError(f"{path}: no data rows after the header")
    values = np.empty((len(data_rows), len(header)), dtype=np.float64)
    for k, (line, row) in enumerate(data_rows):
        if len(row) != len(header):
            raise UserError(f"{path}, line {line}: {len(row)} values, expected {len(header)} (one per header column)")
        for j, cell in enumerate(row):
            values[k, j] = _number(path, line, header[j], cell)
    label_col = header.index(LABEL) if LABEL in header else None
    features_idx = [j for j in range(len(header)) if j != label_col]
    labels = None
    if label_col is not None:
        labels = values[:, label_col]
        bad = np.flatnonzero((labels != 0) & (labels != 1))
        if bad.size:
            line = data_rows[int(bad[0])][0]
            raise UserError(f"{path}, line {line}, column '{LABEL}': expected 0 or 1, got {labels[bad[0]]:g}")
        labels = labels.astype(np.int64)
    return NodeData(name=path.stem, features=values[:, features_idx].astype(np.float32),
                    feature_names=[header[j] for j in features_idx], labels=labels)


def _check_header(path: Path, header: list[str]) -> None:
    if any(not name for name in header):
        raise UserError(f"{path}, line 1: empty column name in the header")
    dupes = sorted({name for name in header if header.count(name) > 1})
    if dupes:
        raise UserError(f"{path}, line 1: duplicate column name(s) {', '.join(dupes)}")
    if [h for h in header if h != LABEL] == []:
        raise UserError(f"{path}: no feature columns (only '{LABEL}')")
    for name in header:
        try:
            float(name)
        except ValueError:
            continue
        raise UserError(f"{path}, line 1: header expected, found a number ({name!r}) in column names")


def _number(path: Path, line: int, column: str, cell: str) -> float:
    text = cell.strip()
    if not text:
        raise UserError(f"{path}, line {line}, column '{column}': missing value")
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{path}, line {line}, column '{column}': {text[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise UserError(f"{path}, line {line}, column '{column}': {text!r} is not a finite number")
    return value


def write_node_csv(path: str | Path, node: NodeData, include_labels: bool = True) -> Path:
    """Write a node's rows (and its labels, if any and asked for) as CSV, atomically."""
    path = Path(path)
    header = list(node.feature_names)
    with_labels = include_labels and node.labels is not None
    if with_labels:
        header.append(LABEL)
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for k, row in enumerate(node.features):
            cells = [f"{v:.6g}" for v in row]
            if with_labels:
                cells.append(str(int(node.labels[k])))
            writer.writerow(cells)
    return path


def find_node_csvs(data_dir: str | Path) -> list[Path]:
    """The ``node_*.csv`` files of a data folder, in natural order (node_2 before node_10)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: no such data folder")
    files = [p for p in data_dir.glob("node_*.csv") if p.is_file()]
    if not files:
        raise UserError(f"{data_dir}: no node_*.csv files (one CSV per client is expected)")

    def natural(p: Path) -> tuple:
        suffix = p.stem[len("node_"):]
        return (0, int(suffix), "") if suffix.isdigit() else (1, 0, suffix)

    return sorted(files, key=natural)
