"""Chapter 15: the packaged connection records, the web/mail federation, the alarm budget, and ``fedad split``."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from fedad_tutorial.chapters.baselines import norm_scores
from fedad_tutorial.chapters.intrusion import (
    AE_CONFIG,
    DATA_DIR,
    DETECTORS,
    FILES,
    SVDD_CONFIG,
    alarms_per_10k,
    budget_threshold,
    connection_federation,
    detector_scores,
    federated_autoencoder,
    load_connections,
    log_features,
    results_table,
    summary_table,
)
from fedad_tutorial.cli import main
from fedad_tutorial.csvio import read_node_csv
from fedad_tutorial.errors import UserError
from fedad_tutorial.exercises.nb15 import check_alarms_per_10k, check_budget_threshold
from fedad_tutorial.partition import load_npz, partition_rows, split_table

# --- the data -------------------------------------------------------------------------------------


def test_packaged_records_are_whole_counts_that_give_back_the_published_values():
    for service, rows, attacks in (("http", 567_498, 2211), ("smtp", 95_156, 30)):
        counts, labels = load_connections(service)
        assert counts.shape == (rows, 3) and int(labels.sum()) == attacks
        assert (counts >= 0).all() and np.array_equal(counts, np.rint(counts))
        with np.load(DATA_DIR / FILES[service], allow_pickle=False) as published:
            assert np.allclose(np.log(counts + 0.1), published["X"], atol=1e-6)
    with pytest.raises(UserError, match="service must be one of"):
        load_connections("ftp")


def test_the_records_are_declared_package_data_so_the_wheel_ships_them():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["fedad_tutorial.resources.adbench"]
    assert all(any(Path(name).match(p) for p in patterns) for name in (*FILES.values(), "README.md"))
    assert all((DATA_DIR / name).is_file() for name in FILES.values())


def test_log_features_keep_zero_and_order_and_shrink_the_range():
    counts = np.array([[0.0, 10.0, 1e7], [1.0, 100.0, 5.0]])
    logged = log_features(counts)
    assert logged.dtype == np.float32 and logged[0, 0] == 0.0
    assert np.allclose(logged, np.log1p(counts), rtol=1e-6)
    assert logged.max() < 17  # 10 MB is about 16 in logs


def test_the_chapters_autoencoder_has_a_code_narrower_than_the_three_features():
    assert AE_CONFIG.latent_dim < 3 and AE_CONFIG.trim > 0


# --- the alarm budget -----------------------------------------------------------------------------


def test_alarms_per_10k_counts_every_row_at_or_above_the_needed_attack_score():
    labels = np.array([0, 0, 0, 1, 0, 1, 0, 0, 0, 0])
    scores = np.array([0.1, 0.5, 0.2, 0.9, 0.4, 0.3, 0.3, 0.0, 0.0, 0.0])
    assert alarms_per_10k(labels, scores, 0.5) == pytest.approx(1000.0)  # only the 0.9 attack
    assert alarms_per_10k(labels, scores, 1.0) == pytest.approx(5000.0)  # >= 0.3: the tie at 0.3 counts
    assert alarms_per_10k(labels, scores, 0.51) == pytest.approx(5000.0)  # ceil(0.51 * 2) = 2 attacks
    assert math.isnan(alarms_per_10k(np.zeros(4), np.arange(4.0), 0.9))
    for bad in (0.0, 1.5):
        with pytest.raises(UserError, match="recall must be"):
            alarms_per_10k(labels, scores, bad)


def test_a_budget_threshold_flags_that_share_of_the_rows_it_was_set_on():
    scores = np.random.default_rng(0).lognormal(size=100_000)
    threshold = budget_threshold(scores, 25.0)
    assert 1e4 * (scores > threshold).mean() == pytest.approx(25.0, abs=0.2)
    with pytest.raises(UserError, match="alarms per 10,000"):
        budget_threshold(scores, 0)


def test_exercise_checks_accept_the_answer_and_say_what_is_wrong():
    def answer(labels, scores, recall):
        attack = np.sort(scores[labels == 1])[::-1]
        return 1e4 * float((scores >= attack[math.ceil(recall * attack.size) - 1]).mean())

    def strict(labels, scores, recall):
        attack = np.sort(scores[labels == 1])[::-1]
        return 1e4 * float((scores > attack[math.ceil(recall * attack.size) - 1]).mean())

    assert check_alarms_per_10k(answer)
    assert "AT LEAST" in check_alarms_per_10k(strict).message
    assert "per 10,000 connections, not a fraction" in check_alarms_per_10k(lambda *a: answer(*a) / 1e4).message
    off_by_one = check_alarms_per_10k(lambda lab, s, r: answer(lab, s, min(1.0, r + 0.1)))
    assert "ceil(recall * attacks)" in off_by_one.message
    assert check_budget_threshold(lambda s, a: np.percentile(s, 100 - a / 100))
    assert "0.2 %" in check_budget_threshold(lambda s, a: np.percentile(s, 100 - a)).message
    assert "expected 20" in check_budget_threshold(lambda s, a: np.percentile(s, a / 100)).message


# --- the federation -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_federation():
    return connection_federation(web_servers=3, mail_servers=1, http_rows=20_000, train_rows=1_000, seed=0)


def test_federation_names_services_and_held_out_rows(small_federation):
    servers = small_federation
    assert [(s.name, s.service) for s in servers] == [("node_1", "http"), ("node_2", "http"), ("node_3", "http"),
                                                      ("node_4", "smtp")]
    assert all(s.train.num_rows <= 1_000 and s.test.num_rows >= s.train.num_rows for s in servers)
    assert sum(s.train.num_rows + s.test.num_rows for s in servers[:3]) == 20_000
    mail = servers[3]
    assert mail.train.num_rows + mail.test.num_rows == 95_156
    assert int(mail.train.labels.sum() + mail.test.labels.sum()) == 30
    split = mail.split()
    assert split.train.shape == (1_000, 3) and np.array_equal(split.test_labels, mail.test.labels)
    again = connection_federation(web_servers=3, mail_servers=1, http_rows=20_000, train_rows=1_000, seed=0)
    assert all(np.array_equal(a.test.features, b.test.features) for a, b in zip(servers, again, strict=True))


def test_web_servers_differ_by_traffic_profile(small_federation):
    medians = [np.median(s.train.features[:, 2]) for s in small_federation[:3]]  # log dst_bytes
    assert max(medians) - min(medians) > 0.5  # a factor of 1.6 in the typical response size


def test_raw_counts_option_keeps_the_same_connections(small_federation):
    raw = connection_federation(web_servers=3, mail_servers=1, http_rows=20_000, train_rows=1_000, seed=0, log=False)
    for logged, counts in zip(small_federation, raw, strict=True):
        assert np.allclose(log_features(counts.test.features), logged.test.features, atol=1e-5)


def test_one_model_per_service_unless_asked(small_federation):
    servers = small_federation
    name = "scaled norm (federated mean/std)"
    mail = servers[3]
    per_service = detector_scores(servers, 0, [name])[name]
    assert np.allclose(per_service[3], norm_scores(mail.train.features, mail.test.features))
    pooled = detector_scores(servers, 0, [name], per_service=False)[name]
    everything = np.concatenate([s.train.features for s in servers])
    assert np.allclose(pooled[3], norm_scores(everything, mail.test.features))
    assert not np.allclose(pooled[3], per_service[3])


def test_forest_finds_the_web_attacks_and_the_table_counts_every_held_out_row(small_federation):
    servers = small_federation
    names = ["federated isolation forest", "scaled norm (federated mean/std)"]
    scores = detector_scores(servers, 0, names)
    table = results_table(servers, scores).set_index(["nodes", "method"])
    web = table.loc["web servers"]
    assert (web.roc_auc > 0.98).all()
    assert web.loc[names[0], "pr_auc"] > 0.5
    assert table.loc[("mail servers", names[0]), "rows"] == servers[3].test.num_rows
    per_node = results_table(servers, scores, per_node=True)
    assert set(per_node.nodes) == {s.label for s in servers}
    assert per_node.groupby("method").attacks.sum().eq(sum(int(s.test.labels.sum()) for s in servers)).all()


def test_federated_autoencoder_scores_every_held_out_row(small_federation):
    servers = small_federation[:3]
    scores = federated_autoencoder(servers, 0, replace(AE_CONFIG, rounds=1, local_epochs=1))
    assert [s.shape for s in scores] == [(s.test.num_rows,) for s in servers]
    assert all(np.isfinite(s).all() for s in scores)


# --- partitioning and fedad split ------------------------------------------------------------------


def _blobs(rows: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    return (centres[np.arange(rows) % 3] + rng.normal(size=(rows, 2))).astype(np.float32)


def test_every_split_deals_every_row_once():
    x = _blobs(301)
    for by in ("random", "order", "cluster"):
        parts = partition_rows(x, 4, by, seed=3)
        assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(301))
        assert all(len(p) >= 2 for p in parts)
        assert [p.tolist() for p in parts] == [p.tolist() for p in partition_rows(x, 4, by, seed=3)]


def test_cluster_split_is_non_iid_and_random_split_is_not():
    x = _blobs()
    blob = np.arange(len(x)) % 3

    def largest_gap(parts):  # how far a node's mix of blobs is from the overall mix
        return max(np.abs(np.bincount(blob[p], minlength=3) / len(p) - 1 / 3).max() for p in parts)

    assert largest_gap(partition_rows(x, 3, "cluster", seed=0)) > 0.25
    assert largest_gap(partition_rows(x, 3, "random", seed=0)) < 0.05


def test_partition_refuses_too_few_rows_and_unknown_rules():
    with pytest.raises(UserError, match="cannot make 3 nodes"):
        partition_rows(np.zeros((5, 2)), 3)
    with pytest.raises(UserError, match="split must be one of"):
        partition_rows(np.zeros((10, 2)), 2, "time")


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_is_read_without_pickles_and_bad_arrays_are_named(tmp_path):
    good = load_npz(_npz(tmp_path / "good.npz", X=np.arange(12.0).reshape(6, 2), y=np.array([0, 0, 1, 0, 0, 1])))
    assert good.feature_names == ["x1", "x2"] and good.labels.tolist() == [0, 0, 1, 0, 0, 1]
    assert load_npz(_npz(tmp_path / "nolabels.npz", X=np.ones((3, 2)))).labels is None
    x_nan = np.ones((4, 3))
    x_nan[2, 1] = np.nan
    cases = {
        "pickled.npz": ({"X": np.array([{"a": 1}], dtype=object)}, "holds Python objects"),
        "noX.npz": ({"data": np.ones((3, 2))}, "expected an array 'X'.*arrays in the file: data"),
        "flat.npz": ({"X": np.ones(5)}, "expected an array 'X'"),
        "nan.npz": ({"X": x_nan}, "X row 3, column 'x2'"),
        "short_y.npz": ({"X": np.ones((4, 2)), "y": np.zeros(3)}, "one numeric label per row of X"),
        "bad_y.npz": ({"X": np.ones((4, 2)), "y": np.array([0, 1, 2, 0])}, "y row 3: expected 0 or 1"),
    }
    for name, (arrays, message) in cases.items():
        with pytest.raises(UserError, match=message):
            load_npz(_npz(tmp_path / name, **arrays))
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(UserError, match="not a readable .npz"):
        load_npz(tmp_path / "text.npz")


def test_fedad_split_writes_what_simulate_reads(tmp_path, capsys):
    source = _npz(tmp_path / "table.npz", X=_blobs(600), y=(np.arange(600) % 50 == 0).astype(int))
    assert main(["split", str(source), "--nodes", "3", "--output", str(tmp_path / "nodes"), "--by", "cluster"]) == 0
    assert "Wrote 3 node CSVs" in capsys.readouterr().out
    nodes = [read_node_csv(tmp_path / "nodes" / f"node_{k}.csv") for k in (1, 2, 3)]
    assert sum(n.num_rows for n in nodes) == 600 and sum(int(n.labels.sum()) for n in nodes) == 12
    assert nodes[0].feature_names == ["x1", "x2"]
    assert main(["simulate", "--data-dir", str(tmp_path / "nodes"), "--output-dir", str(tmp_path / "run"),
                 "--rounds", "1", "--local-epochs", "1", "--quiet"]) == 0
    # a CSV input keeps its column names; the folder of an older, larger split is replaced whole
    csv = tmp_path / "table.csv"
    pd.DataFrame({"bytes": np.arange(40.0), "label": np.arange(40) % 2}).to_csv(csv, index=False)
    assert main(["split", str(csv), "--nodes", "2", "--output", str(tmp_path / "nodes"), "--by", "order"]) == 0
    assert sorted(p.name for p in (tmp_path / "nodes").iterdir()) == [".fedad-data", "node_1.csv", "node_2.csv"]
    assert read_node_csv(tmp_path / "nodes" / "node_2.csv").features[:, 0].tolist() == list(range(20, 40))


def _fails(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_fedad_split_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("a,b\n1,2\n3,oops\n")
    assert "bad.csv, line 3, column 'b'" in _fails(["split", str(bad_csv), "--nodes", "1", "--output", str(out)],
                                                    capsys)
    assert "no such file" in _fails(["split", str(tmp_path / "none.npz"), "--nodes", "2", "--output", str(out)],
                                    capsys)
    assert "expected a .npz" in _fails(["split", str(tmp_path), "--nodes", "2", "--output", str(out)], capsys)
    small = _npz(tmp_path / "small.npz", X=np.ones((5, 2)))
    assert "cannot make 3 nodes" in _fails(["split", str(small), "--nodes", "3", "--output", str(out)], capsys)
    assert "--nodes" in _fails(["split", str(small), "--nodes", "0", "--output", str(out)], capsys)
    assert not out.exists()
    # a folder of the user's own files is never replaced, nor one that holds the input
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert "holds files other than" in _fails(["split", str(small), "--nodes", "2", "--output", str(mine)], capsys)
    assert (mine / "notes.txt").read_text() == "keep me"
    assert main(["split", str(small), "--nodes", "2", "--output", str(tmp_path / "nodes")]) == 0
    capsys.readouterr()
    inside = tmp_path / "nodes" / "node_1.csv"
    before = inside.read_text()
    assert "holds the input" in _fails(["split", str(inside), "--nodes", "1", "--output", str(tmp_path / "nodes")],
                                       capsys)
    assert inside.read_text() == before


def test_split_table_returns_the_nodes_it_wrote(tmp_path):
    source = _npz(tmp_path / "t.npz", X=np.arange(20.0).reshape(10, 2))
    nodes = split_table(source, 2, tmp_path / "o", "order")
    assert [n.name for n in nodes] == ["node_1", "node_2"] and nodes[1].features[0].tolist() == [10.0, 11.0]


def test_split_help_and_a_plain_split_do_not_import_torch(tmp_path):
    source = _npz(tmp_path / "t.npz", X=np.arange(20.0).reshape(10, 2))
    probe = ("import sys; from fedad_tutorial.cli import main; rc = main(sys.argv[1:]); "
             "print(rc, sorted(m for m in ('torch', 'sklearn', 'pandas') if m in sys.modules))")
    for argv in (["split", "--help"], ["split", str(source), "--nodes", "2", "--output", str(tmp_path / "o")]):
        out = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120)
        assert out.stdout.strip().splitlines()[-1] == "0 []"


def test_deep_svdd_is_chapter_14s_model_trained_as_the_autoencoder(small_federation):
    """The one-class detector is selectable by name, trains the bias-free model with the AE's settings, and
    ranks the web attacks (the small federation has enough of them for a loose bound)."""
    assert SVDD_CONFIG == replace(AE_CONFIG, model="svdd")
    name = "federated Deep SVDD"
    scores = detector_scores(small_federation, 0, [name])
    assert list(scores) == [name] and name not in DETECTORS
    web = results_table(small_federation, scores).set_index("nodes").loc["web servers"]
    assert web.roc_auc > 0.9


def test_summary_table_groups_by_service_with_short_names_and_mean_and_spread():
    rows = [{"method": m, "nodes": n, "seed": s, "roc_auc": 0.9 + 0.01 * s, "pr_auc": 0.5,
             "alarms/10k @ recall 0.5": 10.0 * (s + 1), "alarms/10k @ recall 0.9": 1000.0 + s}
            for s in range(3) for m in ("federated AE", "federated isolation forest")
            for n in ("mail servers", "web servers")]
    table = summary_table(pd.DataFrame(rows))
    assert list(table.index) == [("web servers", "AE"), ("web servers", "forest"),
                                 ("mail servers", "AE"), ("mail servers", "forest")]
    assert list(table.columns) == ["ROC-AUC", "PR-AUC", "alarms/10k, recall 0.5", "alarms/10k, recall 0.9"]
    assert table.loc[("web servers", "AE"), "ROC-AUC"] == "0.910 ± 0.010"
    assert table.loc[("mail servers", "forest"), "alarms/10k, recall 0.9"] == "1,001 ± 1"


def test_price_of_recall_lines_that_coincide_stay_distinguishable():
    from fedad_tutorial.plots import plot_price_of_recall

    labels = np.r_[np.zeros(98), np.ones(2)]
    same = np.array([100.0, 400.0, 900.0])
    fig = plot_price_of_recall(np.array([0.3, 0.6, 1.0]), {"web": (labels, {"AE": same, "norm": same.copy()})}, "t")
    ae, norm = fig.axes[0].get_lines()[:2]
    assert (ae.get_linestyle(), ae.get_marker()) != (norm.get_linestyle(), norm.get_marker())
    assert norm.get_linewidth() < ae.get_linewidth()  # the later line is drawn thinner, over the earlier one
