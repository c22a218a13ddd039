"""Node CSV files: reading with validation that names the file, line and column, atomic writing.

Contract: one row per observation; a header; numeric feature columns with any names; an optional
``label`` column (0 normal, 1 anomaly) that is kept apart and never used for training. Files are
read as UTF-8 with or without a byte-order mark (Excel's "CSV UTF-8" writes one). Every value must
be a finite number that float32, the models' precision, can hold: a larger one would silently
become infinite in training or scoring.

:class:`NodeCsvReader` reads a file in chunks of rows, so a large file is validated and scored in
bounded memory; :func:`read_node_csv` reads a whole node.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedad_tutorial.atomic import atomic_dir, atomic_path
from fedad_tutorial.data import NodeData
from fedad_tutorial.errors import UserError
from fedad_tutorial.outputs import check_data_dir_output
from fedad_tutorial.scaling import FLOAT32_MAX

LABEL = "label"
#: Rows validated (and, by ``fedad score``, scored) at a time.
CHUNK_ROWS = 50_000
NODE_PATTERN = "node_*.csv"


@dataclass
class CsvChunk:
    """Consecutive data rows of a node CSV: features (float32), labels if any, and their line numbers."""

    features: np.ndarray
    labels: np.ndarray | None
    lines: np.ndarray


class NodeCsvReader:
    """An open node CSV whose header has been checked; :meth:`chunks` validates and yields the rows.

    Use as a context manager. ``feature_names`` and ``labelled`` are known once it is open.

    Raises:
        UserError: missing or empty file, a bad header, and (from :meth:`chunks`) no data rows, a row
            with the wrong number of cells, a cell that is not a number finite in float32, or a label
            other than 0/1, naming file, line and column.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = path = Path(path)
        if path.is_dir():
            raise UserError(f"{path}: is a folder, not a CSV file")
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        self._handle = path.open(newline="", encoding="utf-8-sig")
        try:
            self._reader = csv.reader(self._handle)
            first = next(self._rows(), None)
            if first is None or not any(cell.strip() for cell in first):
                raise UserError(f"{path}: file is empty (expected a header line and data rows)")
            self.header = [cell.strip() for cell in first]
            _check_header(path, self.header)
        except BaseException:
            self._handle.close()
            raise
        self.label_col = self.header.index(LABEL) if LABEL in self.header else None
        self._feature_idx = [j for j in range(len(self.header)) if j != self.label_col]
        self.feature_names = [self.header[j] for j in self._feature_idx]
        self.labelled = self.label_col is not None

    @property
    def bytes_read(self) -> int:
        """How far into the file reading has got, in bytes (read ahead by up to a buffer): for progress bars."""
        return self._handle.buffer.tell()

    def __enter__(self) -> NodeCsvReader:
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()

    def _rows(self) -> Iterator[list[str]]:
        """The CSV records, with decoding and csv-module errors turned into one-line errors."""
        while True:
            try:
                row = next(self._reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                raise UserError(f"{self.path}: not a text CSV file (could not decode as UTF-8)") from None
            except csv.Error as exc:
                raise UserError(f"{self.path}, line {self._reader.line_num}: {exc}") from None
            yield row

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[CsvChunk]:
        """Yield the data rows in chunks of up to ``rows``, each validated; blank lines are skipped."""
        pending: list[list[str]] = []
        lines: list[int] = []
        seen = False
        for row in self._rows():
            if not any(cell.strip() for cell in row):
                continue
            pending.append(row)
            lines.append(self._reader.line_num)
            if len(pending) == rows:
                yield self._parse(pending, lines)
                pending, lines, seen = [], [], True
        if pending:
            yield self._parse(pending, lines)
        elif not seen:
            raise UserError(f"{self.path}: no data rows after the header")

    def _parse(self, rows: list[list[str]], lines: list[int]) -> CsvChunk:
        try:  # fast path: numpy parses every cell; any doubt is settled cell by cell below
            values = np.array(rows, dtype=np.float64)
            fine = values.ndim == 2 and values.shape[1] == len(self.header) and bool(
                (np.abs(values) <= FLOAT32_MAX).all())
        except ValueError:
            fine = False
        if not fine:
            values = np.empty((len(rows), len(self.header)), dtype=np.float64)
            for k, (line, row) in enumerate(zip(lines, rows, strict=True)):
                if len(row) != len(self.header):
                    raise UserError(f"{self.path}, line {line}: {len(row)} values, expected {len(self.header)} "
                                    "(one per header column)")
                for j, cell in enumerate(row):
                    values[k, j] = _number(self.path, line, self.header[j], cell)
        labels = None
        if self.label_col is not None:
            labels = values[:, self.label_col]
            bad = np.flatnonzero((labels != 0) & (labels != 1))
            if bad.size:
                raise UserError(f"{self.path}, line {lines[bad[0]]}, column '{LABEL}': expected 0 or 1, "
                                f"got {labels[bad[0]]:g}")
            labels = labels.astype(np.int64)
        return CsvChunk(values[:, self._feature_idx].astype(np.float32), labels, np.asarray(lines))


def read_node_csv(path: str | Path) -> NodeData:
    """Read and validate one node's CSV; the node is named after the file (``node_1.csv`` -> ``node_1``).

    Raises:
        UserError: as :class:`NodeCsvReader`, naming file, line and column.
    """
    with NodeCsvReader(path) as reader:
        chunks = list(reader.chunks())
        labels = np.concatenate([c.labels for c in chunks]) if reader.labelled else None
        return NodeData(name=Path(path).stem, features=np.concatenate([c.features for c in chunks]),
                        feature_names=reader.feature_names, labels=labels)


def _check_header(path: Path, header: list[str]) -> None:
    if any(not name for name in header):
        raise UserError(f"{path}, line 1: empty column name in the header")
    dupes = sorted({name for name in header if header.count(name) > 1})
    if dupes:
        raise UserError(f"{path}, line 1: duplicate column name(s) {', '.join(dupes)}")
    for name in header:
        if name != LABEL and name.lower() == LABEL:
            raise UserError(f"{path}, line 1: column {name!r}: the label column must be named '{LABEL}' "
                            "(lower case), otherwise it would be used as a feature; rename it")
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
        raise UserError(f"{path}, line {line}, column '{column}': {text[:40]!r} is not a finite number")
    if abs(value) > FLOAT32_MAX:
        raise UserError(f"{path}, line {line}, column '{column}': {text[:40]!r} is too large "
                        f"(values must be within +-{FLOAT32_MAX:.4g}, the float32 range)")
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


def write_node_folder(folder: str | Path, nodes: Sequence[NodeData]) -> Path:
    """Write one ``<name>.csv`` per node into ``folder``, all at once, replacing its older node CSVs.

    The folder may already exist only if it holds nothing but node CSVs
    (:func:`~fedad_tutorial.outputs.check_data_dir_output`): it is replaced as a whole, so no
    node CSV of an older, larger federation stays behind.
    """
    folder = check_data_dir_output(folder, NODE_PATTERN)
    with atomic_dir(folder) as tmp:
        for node in nodes:
            write_node_csv(tmp / f"{node.name}.csv", node)
    return folder


def find_node_csvs(data_dir: str | Path) -> list[Path]:
    """The ``node_*.csv`` files of a data folder, in natural order (node_2 before node_10).

    A ``node_*.csv`` that is not a readable file (a folder, a broken link) is an error, not skipped.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: no such data folder")
    files = list(data_dir.glob(NODE_PATTERN))
    for p in files:
        if not p.is_file():
            what = "a broken symbolic link" if p.is_symlink() and not p.exists() else "not a file"
            raise UserError(f"{p}: is {what}; every {NODE_PATTERN} of the data folder must be a CSV file")
    if not files:
        raise UserError(f"{data_dir}: no {NODE_PATTERN} files (one CSV per client is expected)")

    def natural(p: Path) -> tuple:
        suffix = p.stem[len("node_"):]
        return (0, int(suffix), "") if suffix.isdigit() else (1, 0, suffix)

    return sorted(files, key=natural)
