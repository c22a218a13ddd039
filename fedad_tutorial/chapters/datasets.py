"""Real data: a federation of hospitals built from the Wisconsin diagnostic breast cancer set (WDBC).

WDBC ships with scikit-learn (:func:`sklearn.datasets.load_breast_cancer`): 569 tumours, 30
features computed from a digitised image of a fine-needle aspirate (radius, texture, perimeter,
area, ... of the cell nuclei: mean, standard error and worst value of each), 357 benign and 212
malignant. Here benign is *normal* and malignant is the *anomaly*.

:func:`wdbc_hospitals` turns it into a federated anomaly-detection problem:

- each hospital holds benign cases; hospitals are **non-IID by tumour size**: benign cases are
  sorted by a noisy mean radius and cut into contiguous groups, so hospital 1 sees the smallest
  tumours and the last one the largest;
- a small share of malignant cases is mixed **unlabelled** into the training rows
  (``contamination`` of them, about 3 %): unsupervised training cannot leave them out;
- every hospital also keeps held-out test rows: benign cases from its own group and a share of
  the ``test_malignant`` malignant cases (all disjoint from the training rows).

Labels come with every row for evaluation only; training code never reads them.

>>> hospitals = wdbc_hospitals(seed=0)
>>> [(h.name, h.train.num_rows, int(h.train.labels.sum()), h.test.num_rows) for h in hospitals]
[('node_1', 92, 3, 44), ('node_2', 92, 3, 43), ('node_3', 92, 3, 43)]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedad_tutorial.csvio import write_node_csv
from fedad_tutorial.data import NodeData, Split
from fedad_tutorial.errors import UserError


@dataclass
class Hospital:
    """One client of the WDBC federation: its training rows and its held-out test rows."""

    name: str
    train: NodeData  # labels kept for evaluation only (they mark the unlabelled contamination)
    test: NodeData

    def split(self) -> Split:
        """The hospital as a :class:`~fedad_tutorial.data.Split` (training labels dropped)."""
        return Split(self.name, self.train.features, self.test.features, self.test.labels)


def load_wdbc() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """WDBC as ``(features (569, 30) float32, labels (1 = malignant), snake_case feature names)``."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [str(n).replace(" ", "_") for n in data.feature_names]
    labels = (data.target == 0).astype(np.int64)  # scikit-learn codes malignant as 0
    return data.data.astype(np.float32), labels, names


def wdbc_hospitals(num_hospitals: int = 3, test_benign: int = 90, test_malignant: int = 40,
                   contamination: float = 0.03, size_noise: float = 0.5, seed: int = 0) -> list[Hospital]:
    """Split WDBC into hospitals (non-IID by tumour size) with contaminated, unlabelled training rows.

    Args:
        num_hospitals: number of clients.
        test_benign: benign rows held out in total (each hospital holds out its share of its own group).
        test_malignant: malignant rows held out in total, spread over the hospitals at random.
        contamination: share of malignant rows among a hospital's training rows (rounded per hospital).
        size_noise: noise added to the mean radius before sorting, in units of its standard
            deviation: 0 gives sharp size bands, larger values blur them (less non-IID).
        seed: the random split; the same seed gives the same hospitals.

    Returns:
        One :class:`Hospital` per client, named ``node_1``, ``node_2``, ... (the node CSV names).
    """
    features, labels, names = load_wdbc()
    benign, malignant = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    if num_hospitals < 1 or not 0 <= test_benign < benign.size - num_hospitals:
        raise UserError(f"cannot hold out {test_benign} of {benign.size} benign rows over {num_hospitals} hospitals")
    if not 0.0 <= contamination < 0.5:
        raise UserError(f"contamination must be in [0, 0.5), got {contamination}")
    rng = np.random.default_rng(seed)
    malignant = rng.permutation(malignant)
    radius = features[benign, 0]
    groups = np.array_split(benign[np.argsort(radius + rng.normal(0.0, size_noise * radius.std(), benign.size))],
                            num_hospitals)
    test_benign_counts = [len(part) for part in np.array_split(np.arange(test_benign), num_hospitals)]
    test_malignant_parts = np.array_split(malignant[:test_malignant], num_hospitals)
    spare = malignant[test_malignant:]
    hospitals, used = [], 0
    for k, (group, n_test) in enumerate(zip(groups, test_benign_counts, strict=True)):
        group = rng.permutation(group)
        train_benign = group[n_test:]
        n_mal = int(round(contamination * train_benign.size / (1.0 - contamination)))
        if used + n_mal > spare.size:
            raise UserError("not enough malignant rows left for the requested contamination")
        train = rng.permutation(np.concatenate([train_benign, spare[used:used + n_mal]]))
        test = rng.permutation(np.concatenate([group[:n_test], test_malignant_parts[k]]))
        used += n_mal
        name = f"node_{k + 1}"
        hospitals.append(Hospital(name, NodeData(name, features[train], names, labels[train]),
                                  NodeData(name, features[test], names, labels[test])))
    return hospitals


def export_hospitals(hospitals: list[Hospital], output_dir: str | Path) -> tuple[Path, Path]:
    """Write ``output_dir/train/node_k.csv`` (training rows) and ``output_dir/test/node_k.csv`` (held out).

    Both carry a ``label`` column; the command line uses it only to evaluate held-out rows. Then::

        fedad simulate --data-dir OUTPUT_DIR/train --output-dir runs/wdbc
        fedad score --model runs/wdbc/model.pt --data OUTPUT_DIR/test/node_1.csv

    Returns:
        The two folders.
    """
    root = Path(output_dir)
    for part in ("train", "test"):
        for h in hospitals:
            write_node_csv(root / part / f"{h.name}.csv", getattr(h, part))
    return root / "train", root / "test"
