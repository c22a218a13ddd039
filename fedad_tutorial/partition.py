"""Split one table of rows into node CSVs: how a user turns a data set into a federation (``fedad split``).

A user rarely holds one file per client: they have one table (a CSV, or an ADBench/ODDS ``.npz``
with arrays ``X`` and ``y``) and want to see how a federation of ``N`` nodes would do on it. Three
ways to deal the rows out, none of which reads the labels:

- ``random``: shuffled and cut into ``N`` equal parts (IID clients, the easy case);
- ``order``: ``N`` contiguous blocks in file order (a log in time order: each node holds one period);
- ``cluster``: non-IID by profile. The standardised rows are grouped into ``N`` k-means clusters
  (profiles), and each cluster's rows are dealt to the nodes in proportions drawn from a Dirichlet
  distribution (:data:`DIRICHLET_ALPHA`), the usual way federated-learning papers make clients
  differ: every node sees a different mix of profiles, most of one or two. Cluster on columns that
  are on a sensible scale (log heavy-tailed counts first, chapter 15).

The output is what ``fedad simulate`` reads: ``node_1.csv ... node_N.csv`` with the input's feature
columns and, if the input has labels, a ``label`` column (evaluation only).

>>> parts = partition_rows(np.arange(20.0).reshape(10, 2), 3, "order", seed=0)
>>> [p.tolist() for p in parts]
[[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from fedad_tutorial.atomic import describe_mode
from fedad_tutorial.csvio import NODE_PATTERN, read_table_csv, write_node_folder
from fedad_tutorial.data import NodeData
from fedad_tutorial.errors import UserError
from fedad_tutorial.limits import check_fits
from fedad_tutorial.outputs import check_data_dir_output
from fedad_tutorial.scaling import FLOAT32_MAX, Scaler

SPLITS = ("random", "order", "cluster")
#: Concentration of the per-cluster Dirichlet draw: below 1, most of a profile goes to one or two nodes.
DIRICHLET_ALPHA = 0.5
#: Rows a node needs at least: ``fedad simulate`` holds out one and trains on the rest.
MIN_NODE_ROWS = 2


def _npz_header(path: Path, archive: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype of array ``member`` (``X``, ``y``) of an ``.npz``, read from its header alone; None if absent.

    The header is checked against the data it announces before anything is allocated: no Python
    objects (they would need pickle), and shape x item size within the member's stored size and the
    memory budget (:func:`~fedad_tutorial.limits.check_fits`), so a forged header cannot make numpy
    allocate terabytes.
    """
    try:
        info = archive.getinfo(f"{member}.npy")
    except KeyError:
        return None
    with archive.open(info) as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        header_bytes = handle.tell()
    if dtype.hasobject:
        raise UserError(f"{path}: array '{member}' holds Python objects, which are never loaded (unpickling "
                        "could run code); save it as numbers")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > info.file_size - header_bytes:
        raise UserError(f"{path}: array '{member}' claims shape {shape} ({nbytes} bytes of {dtype}) but holds "
                        f"{max(0, info.file_size - header_bytes)} bytes: the file is damaged or forged")
    check_fits(2 * math.prod(shape) * 8, f"{path}: array '{member}' of shape {shape}")  # float64 copies
    return shape, dtype


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``X`` (in the file's own dtype) and ``y`` (or None) of an ``.npz``, headers checked first."""
    with path.open("rb") as handle:
        magic = handle.read(6)
    if magic == b"\x93NUMPY":
        raise UserError(f"{path}: is a single .npy array, not an .npz archive; save X (and y) with "
                        "numpy.savez(path, X=X, y=y)")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a readable .npz file (not a zip archive of .npy arrays)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(n.removesuffix(".npy") for n in archive.namelist() if n.endswith(".npy"))
            headers = {name: _npz_header(path, archive, name) for name in ("X", "y")}
        if headers["X"] is None:
            raise UserError(f"{path}: expected an array 'X' of real numbers with rows and columns, got none "
                            f"(arrays in the file: {', '.join(names) or 'none'})")
        with np.load(path, allow_pickle=False) as archive:
            return archive["X"], (archive["y"] if headers["y"] is not None else None)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, NotImplementedError) as exc:
        if isinstance(exc, UserError):
            raise
        reason = str(exc).splitlines()[0][:80] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable .npz file ({reason})") from None


def _load_npz_exact(path: str | Path) -> tuple[NodeData, np.ndarray]:
    """:func:`load_npz` and ``X`` as stored (float64, or the file's integers), for writing without loss."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file" if not path.exists() else
                        f"{path}: is {describe_mode(path.stat().st_mode)}, not a regular file")
    features, labels = _read_npz(path)
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0 \
            or not np.issubdtype(features.dtype, np.number) or np.iscomplexobj(features):
        raise UserError(f"{path}: expected an array 'X' of real numbers with rows and columns, got "
                        f"{features.dtype} {features.shape}")
    names = [f"x{j + 1}" for j in range(features.shape[1])]
    bad = ~(np.abs(features.astype(np.float64)) <= FLOAT32_MAX)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise UserError(f"{path}: X row {row + 1}, column '{names[col]}': {features[row, col]!r} is not a finite "
                        f"number within +-{FLOAT32_MAX:.4g} (the float32 range)")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1) if labels.ndim == 2 and 1 in labels.shape else labels
        if labels.ndim != 1 or labels.size != features.shape[0] or not np.issubdtype(labels.dtype, np.number):
            raise UserError(f"{path}: 'y' must hold one numeric label per row of X ({features.shape[0]}), "
                            f"got {labels.dtype} {labels.shape}")
        wrong = np.flatnonzero((labels != 0) & (labels != 1))
        if wrong.size:
            raise UserError(f"{path}: y row {wrong[0] + 1}: expected 0 or 1, got {labels[wrong[0]]!r}")
    exact = features if np.issubdtype(features.dtype, np.integer) else features.astype(np.float64)
    return NodeData(path.stem, features, names, labels), exact


def load_npz(path: str | Path) -> NodeData:
    """An ADBench/ODDS-style ``.npz`` (``X``: rows x features, ``y``: 1 = anomaly, optional) as a node.

    Loaded with ``allow_pickle=False`` (a file cannot run code) and only after the arrays' headers
    are checked (:func:`_npz_header`). Columns are named ``x1, x2, ...``.

    Raises:
        UserError: not a readable ``.npz``, no 2-d numeric ``X``, a header that claims more data than
            the file holds or memory can take, a value that is not finite in float32, or a ``y`` that
            does not hold one 0/1 label per row, naming the row and column.
    """
    return _load_npz_exact(path)[0]


def _load_exact(path: Path) -> tuple[NodeData, np.ndarray]:
    """:func:`load_table` and the features exactly as the file holds them (float64 or integers)."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz_exact(path)
    if suffix == ".csv":
        names, exact, labels = read_table_csv(path, np.float64)
        return NodeData(path.stem, exact, names, labels), exact
    raise UserError(f"{path}: expected a .npz (arrays X and y) or a .csv file")


def load_table(path: str | Path) -> NodeData:
    """One table of rows from a ``.npz`` (:func:`load_npz`) or a CSV (the node CSV rules of ``fedad simulate``)."""
    return _load_exact(Path(path))[0]


def partition_rows(features: np.ndarray, nodes: int, by: str = "random", seed: int = 0) -> list[np.ndarray]:
    """Deal the rows out to ``nodes`` nodes (see the module doc); each node's row indices, sorted.

    Labels are not an argument: how rows are dealt out never depends on them.

    Raises:
        UserError: an unknown ``by``, fewer than :data:`MIN_NODE_ROWS` rows for some node.
    """
    if by not in SPLITS:
        raise UserError(f"split must be one of {SPLITS}, got {by!r}")
    n = int(features.shape[0])
    if nodes < 1 or n < MIN_NODE_ROWS * nodes:
        raise UserError(f"{n} rows cannot make {nodes} nodes of at least {MIN_NODE_ROWS} rows each")
    rng = np.random.default_rng(seed)
    if by == "order":
        return [part.copy() for part in np.array_split(np.arange(n), nodes)]
    if by == "random":
        return [np.sort(part) for part in np.array_split(rng.permutation(n), nodes)]
    owner = _dirichlet_owners(_profiles(features, nodes, seed), nodes, rng)
    parts = [np.flatnonzero(owner == k) for k in range(nodes)]
    small = next((k for k, part in enumerate(parts) if part.size < MIN_NODE_ROWS), None)
    if small is not None:
        raise UserError(f"the cluster split gave node_{small + 1} only {parts[small].size} rows: use fewer nodes "
                        "or another seed, or split by random or order")
    return parts


def _profiles(features: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Each row's k-means cluster (``k`` clusters) on the standardised columns."""
    from sklearn.cluster import KMeans

    scaled = Scaler.fit(features).transform(features)
    k = min(k, len(np.unique(scaled, axis=0)))  # identical rows cannot make more clusters than distinct rows
    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(scaled)


def _dirichlet_owners(cluster: np.ndarray, nodes: int, rng: np.random.Generator) -> np.ndarray:
    """A node for every row: each cluster's rows, shuffled, cut in Dirichlet-drawn proportions."""
    owner = np.empty(cluster.size, dtype=np.int64)
    for c in np.unique(cluster):
        rows = rng.permutation(np.flatnonzero(cluster == c))
        cuts = np.round(np.cumsum(rng.dirichlet(np.full(nodes, DIRICHLET_ALPHA)))[:-1] * rows.size).astype(int)
        for k, part in enumerate(np.split(rows, cuts)):
            owner[part] = k
    return owner


def split_table(source: str | Path, nodes: int, output_dir: str | Path, by: str = "random",
                seed: int = 0) -> list[NodeData]:
    """``fedad split``: read ``source``, deal its rows to ``nodes`` nodes, write ``output_dir/node_k.csv``.

    The output folder is checked before anything is read and written whole at the end
    (:func:`~fedad_tutorial.csvio.write_node_folder`): a mistake leaves no half-written folder, and
    a folder holding anything but node CSVs, or the input itself, is never replaced.

    Returns:
        The nodes written, in order.
    """
    source, output_dir = Path(source), Path(output_dir)
    check_data_dir_output(output_dir, NODE_PATTERN)
    if source.exists() and output_dir.resolve() in source.resolve().parents:
        raise UserError(f"{output_dir}: holds the input {source}, which writing the nodes would replace; "
                        "choose another output folder")
    table, exact = _load_exact(source)
    parts = partition_rows(table.features, nodes, by, seed)
    written = [NodeData(f"node_{k + 1}", table.features[idx], table.feature_names,
                        None if table.labels is None else table.labels[idx]) for k, idx in enumerate(parts)]
    write_node_folder(output_dir, written, exact=[exact[idx] for idx in parts])
    return written
