"""Node CSV files: reading with validation that names the file, line and column, atomic writing.

Contract: one row per observation; a header; numeric feature columns with any names; an optional
``label`` column (0 normal, 1 anomaly) that is kept apart and never used for training. Files are
read as UTF-8 with or without a byte-order mark (Excel's "CSV UTF-8" writes one). Every value must
be a finite number that float32, the models' precision, can hold: a larger one would silently
become infinite in training or scoring. Every line after the header is a row: an empty line is an
error naming it, never skipped (a skipped row would shift every later score onto the wrong row).

Writing: every number is written in the shortest form that reads back to the same bits
(:func:`number_cells`), and names are quoted as the csv module and pandas expect, whatever they
contain (:func:`csv_writer`).

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

from fedad_tutorial import __version__
from fedad_tutorial.atomic import atomic_dir, atomic_path, describe_mode
from fedad_tutorial.data import NodeData
from fedad_tutorial.errors import UserError
from fedad_tutorial.outputs import DATA_MARKER, check_data_dir_output, write_marker
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

    ``dtype``: the features' type in the chunks; float32 (the models' precision) unless a caller
    must keep the values exactly as written (``fedad split`` reads float64).

    Raises:
        UserError: missing or empty file, a bad header, and (from :meth:`chunks`) no data rows, an
            empty row, a row with the wrong number of cells, a cell that is not a number finite in
            float32, or a label other than 0/1, naming file, line and column.
    """

    def __init__(self, path: str | Path, dtype: type = np.float32) -> None:
        self.path = path = Path(path)
        self.dtype = dtype
        if path.is_dir():
            raise UserError(f"{path}: is a folder, not a CSV file")
        if not path.is_file():  # a FIFO would block the read forever, a device never end
            raise UserError(f"{path}: is {describe_mode(path.stat().st_mode)}, not a regular file" if path.exists()
                            else f"{path}: no such file")
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
        """Yield the data rows in chunks of up to ``rows``, each validated; an empty row is an error."""
        pending: list[list[str]] = []
        lines: list[int] = []
        seen = False
        for row in self._rows():
            if not any(cell.strip() for cell in row):
                raise UserError(f"{self.path}, line {self._reader.line_num}: empty row (expected {len(self.header)} "
                                "values, one per header column); delete the line or fill it in")
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
        return CsvChunk(values[:, self._feature_idx].astype(self.dtype), labels, np.asarray(lines))


def read_table_csv(path: str | Path, dtype: type = np.float32) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """A node CSV's feature names, features (as ``dtype``) and labels (or None), validated.

    Raises:
        UserError: as :class:`NodeCsvReader`, naming file, line and column.
    """
    with NodeCsvReader(path, dtype) as reader:
        chunks = list(reader.chunks())
        labels = np.concatenate([c.labels for c in chunks]) if reader.labelled else None
        return reader.feature_names, np.concatenate([c.features for c in chunks]), labels


def read_node_csv(path: str | Path) -> NodeData:
    """Read and validate one node's CSV; the node is named after the file (``node_1.csv`` -> ``node_1``).

    Raises:
        UserError: as :class:`NodeCsvReader`, naming file, line and column.
    """
    names, features, labels = read_table_csv(path)
    return NodeData(name=Path(path).stem, features=features, feature_names=names, labels=labels)


def column_difference(got: Sequence[str], expected: Sequence[str], shown: int = 5) -> str:
    """How the columns ``got`` differ from ``expected``, in a short line: counts, then the first few
    names missing and unexpected, or the first position where the same columns come in another order."""
    def first(names: list[str]) -> str:
        more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
        return ", ".join(repr(n) for n in names[:shown]) + more

    have = set(got)
    want = set(expected)
    missing = [n for n in expected if n not in have]
    extra = [n for n in got if n not in want]
    parts = [f"{len(got)} columns, expected {len(expected)}"]
    if missing:
        parts.append(f"missing {first(missing)}")
    if extra:
        parts.append(f"unexpected {first(extra)}")
    if not (missing or extra):  # names are unique (checked with the header): the same ones, reordered
        j = next(j for j, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
        parts.append(f"the same names in another order: column {j + 1} is {got[j]!r}, expected {expected[j]!r}")
    return "; ".join(parts)


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


def number_cells(values: np.ndarray) -> list[list[str]]:
    """Each row of ``values`` as text that reads back to the same bits: the shortest round-trip form
    for the array's type (``0.1`` for float32 0.1, ``1700000001.0`` for float64, never 6 digits)."""
    if values.dtype == np.float32:
        return [list(map(str, row)) for row in values]  # numpy prints a float32 in its shortest exact form
    if np.issubdtype(values.dtype, np.integer):
        return [list(map(str, row)) for row in values.tolist()]
    return [list(map(repr, row)) for row in np.asarray(values, dtype=np.float64).tolist()]


def csv_writer(handle, names: Sequence[str]):
    """A csv writer for a file whose header or cells hold ``names``: names with a comma, a quote or a
    line break are quoted. (The csv module does not quote a lone carriage return when lines end in
    ``\\n``, so then every cell is quoted; pandas and the csv module read both alike.)"""
    quoting = csv.QUOTE_ALL if any("\r" in name for name in names) else csv.QUOTE_MINIMAL
    return csv.writer(handle, lineterminator="\n", quoting=quoting)


def write_table_csv(path: str | Path, feature_names: Sequence[str], features: np.ndarray,
                    labels: np.ndarray | None = None) -> Path:
    """Write rows of ``features`` (and a ``label`` column if ``labels`` is given) as CSV, atomically,
    every value exactly (:func:`number_cells`)."""
    path = Path(path)
    header = list(feature_names) + ([LABEL] if labels is not None else [])
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv_writer(handle, header)
        writer.writerow(header)
        for start in range(0, len(features), CHUNK_ROWS):
            rows = number_cells(features[start:start + CHUNK_ROWS])
            if labels is not None:
                for row, label in zip(rows, labels[start:start + CHUNK_ROWS].tolist(), strict=True):
                    row.append(str(int(label)))
            writer.writerows(rows)
    return path


def write_node_csv(path: str | Path, node: NodeData, include_labels: bool = True) -> Path:
    """Write a node's rows (and its labels, if any and asked for) as CSV, atomically, every value exactly."""
    return write_table_csv(path, node.feature_names, node.features, node.labels if include_labels else None)


def write_node_folder(folder: str | Path, nodes: Sequence[NodeData], exact: Sequence[np.ndarray] | None = None) -> Path:
    """Write one ``<name>.csv`` per node into ``folder``, all at once, replacing its older node CSVs.

    The folder may already exist only if it is empty or fedad wrote it
    (:func:`~fedad_tutorial.outputs.check_data_dir_output`): it is replaced as a whole, so no
    node CSV of an older, larger federation stays behind; it gets the :data:`~fedad_tutorial.outputs.
    DATA_MARKER`. ``exact``: each node's features as read (e.g. float64), written instead of the
    node's float32 copy so that no digit of the input is lost.
    """
    folder = check_data_dir_output(folder, NODE_PATTERN)
    with atomic_dir(folder) as tmp:
        write_marker(tmp, __version__, DATA_MARKER)
        for k, node in enumerate(nodes):
            write_table_csv(tmp / f"{node.name}.csv", node.feature_names,
                            node.features if exact is None else exact[k], node.labels)
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
