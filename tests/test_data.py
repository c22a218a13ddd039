import numpy as np
import pytest

from fedad_tutorial.csvio import read_node_csv, write_node_csv
from fedad_tutorial.data import (
    ANOMALY_TYPES,
    METRIC_NAMES,
    NodeData,
    isotropic_blobs,
    make_cloud_federation,
    train_test_split,
)
from fedad_tutorial.errors import UserError


def test_cloud_federation_shape_names_and_labels():
    nodes = make_cloud_federation(num_nodes=4, samples_per_node=400, num_features=30, anomaly_rate=0.05, seed=1)
    assert [n.name for n in nodes] == ["node_1", "node_2", "node_3", "node_4"]
    for node in nodes:
        assert node.features.shape == (400, 30)
        assert node.feature_names == list(METRIC_NAMES)
        assert node.labels.sum() == 20  # exactly round(rate * rows)
        assert set(node.anomaly_types[node.labels == 1]) == set(ANOMALY_TYPES)
        assert (node.features >= 0).all()  # metrics are counts, rates and percentages
        assert np.isfinite(node.features).all()


def test_more_features_than_named_metrics_get_generic_names():
    node = make_cloud_federation(num_nodes=1, samples_per_node=50, num_features=33, seed=0)[0]
    assert node.feature_names[-3:] == ["metric_31", "metric_32", "metric_33"]


def test_same_seed_same_data_and_other_seed_other_data():
    a = make_cloud_federation(num_nodes=2, samples_per_node=100, seed=3)
    b = make_cloud_federation(num_nodes=2, samples_per_node=100, seed=3)
    c = make_cloud_federation(num_nodes=2, samples_per_node=100, seed=4)
    assert np.array_equal(a[1].features, b[1].features)
    assert not np.array_equal(a[1].features, c[1].features)


def test_normal_rows_are_structured_not_isotropic():
    """A few workload factors drive all metrics: a handful of principal components explain the data."""
    node = make_cloud_federation(num_nodes=1, samples_per_node=2000, anomaly_rate=0.0, seed=0)[0]
    x = np.log1p(node.features)
    x = (x - x.mean(0)) / x.std(0)
    eig = np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1]
    assert eig[:4].sum() / eig.sum() > 0.8
    iso = isotropic_blobs(num_nodes=1, samples_per_node=2000, anomaly_rate=0.0, seed=0)[0].features
    eig_iso = np.sort(np.linalg.eigvalsh(np.cov(iso.T)))[::-1]
    assert eig_iso[:4].sum() / eig_iso.sum() < 0.25


def test_nodes_are_non_iid():
    nodes = make_cloud_federation(num_nodes=5, samples_per_node=(300, 1200), seed=0)
    sizes = {n.num_rows for n in nodes}
    assert len(sizes) > 1
    load = [float(np.median(n.features[:, METRIC_NAMES.index("request_rate")])) for n in nodes]
    assert max(load) / min(load) > 1.5


def test_generator_rejects_bad_settings():
    with pytest.raises(UserError, match="num_nodes"):
        make_cloud_federation(num_nodes=0)
    with pytest.raises(UserError, match="anomaly_rate"):
        make_cloud_federation(anomaly_rate=1.5)
    with pytest.raises(UserError, match="anomaly_types"):
        make_cloud_federation(anomaly_types=("meteor",))


def test_split_holds_out_rows_without_overlap():
    node = make_cloud_federation(num_nodes=1, samples_per_node=200, seed=0)[0]
    split = train_test_split(node, 0.3, seed=1)
    assert split.train.shape[0] + split.test.shape[0] == 200
    assert split.test.shape[0] == 60
    rows = {tuple(r) for r in split.train}
    assert not any(tuple(r) in rows for r in split.test)
    assert split.test_labels.shape == (60,)
    with pytest.raises(UserError):
        train_test_split(node, 1.0)


def test_csv_round_trip(tmp_path):
    node = make_cloud_federation(num_nodes=1, samples_per_node=30, num_features=6, seed=0)[0]
    path = write_node_csv(tmp_path / "node_1.csv", node)
    back = read_node_csv(path)
    assert back.name == "node_1"
    assert back.feature_names == node.feature_names
    assert np.array_equal(back.labels, node.labels)
    np.testing.assert_allclose(back.features, node.features, rtol=1e-5)
    assert path.read_text().splitlines()[0].endswith(",label")


def test_csv_without_labels_and_any_column_names(tmp_path):
    path = tmp_path / "node_a.csv"
    path.write_text("alpha,beta\n1,2\n3.5,4e-2\n")
    node = read_node_csv(path)
    assert node.labels is None and node.feature_names == ["alpha", "beta"]
    np.testing.assert_allclose(node.features, [[1, 2], [3.5, 0.04]])


@pytest.mark.parametrize("content, message", [
    ("", "file is empty"),
    ("a,b,label\n", "no data rows"),
    ("a,b\n1,2\n3\n", "line 3: 1 values, expected 2"),
    ("a,b\n1,2\nx,2\n", "line 3, column 'a': 'x' is not a number"),
    ("a,b\n1,\n", "line 2, column 'b': missing value"),
    ("a,b\n1,nan\n", "line 2, column 'b': 'nan' is not a finite number"),
    ("a,label\n1,2\n", "column 'label': expected 0 or 1"),
    ("a,a\n1,2\n", "duplicate column"),
    ("label\n1\n", "no feature columns"),
    ("1,2\n3,4\n", "header expected"),
])
def test_csv_errors_name_file_line_and_column(tmp_path, content, message):
    path = tmp_path / "node_1.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as info:
        read_node_csv(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_csv(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_node_csv(tmp_path / "nope.csv")


def test_node_data_checks_shape():
    with pytest.raises(UserError, match="expected"):
        NodeData("n", np.zeros((3, 2)), ["a", "b", "c"])
