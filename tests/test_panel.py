"""Chapter 13's "what generalises" section: the stored panel results and anomalies more regular than normal rows."""

import re

import numpy as np
import pandas as pd
import pytest

from fedad_tutorial.chapters import panel
from fedad_tutorial.errors import UserError


def test_stored_panel_tables_agree_with_their_markdown_report():
    """The notebook reads the CSV; the README and docs quote the .md: both come from the same rows."""
    roc, std = panel.per_dataset(panel.load_panel(), "roc_auc")
    assert roc.shape == (17, 5) and list(roc.columns[:4]) == list(panel.BASELINES)
    report = (panel.results_dir() / "real_panel.md").read_text()
    roc_section = report.split("## ROC-AUC", 1)[1].split("## PR-AUC", 1)[0]
    numbers = lambda text: np.array([float(x) for x in re.findall(r"\d\.\d{3}", text)])  # noqa: E731
    # the same table, up to the last digit (the CSV keeps 5 significant digits, the report was made before)
    np.testing.assert_allclose(numbers(panel.markdown_table(roc, std)), numbers(roc_section), atol=1.5e-3)


def test_stored_candidates_merge_three_runs_without_repeating_a_method():
    merged, every = panel.load_candidates(), panel.candidate_runs()
    assert len(every) > len(merged) and not merged.duplicated(["dataset", "seed", "method"]).any()
    assert set(every["run"]) == {name.removesuffix(".csv") for name in panel.CANDIDATE_FILES}
    # the default candidate, repeated by the last run, is kept from the first
    assert set(merged.loc[merged["method"] == "cand:default", "run"]) == {"real_panel_candidates_a"}
    table = panel.candidate_table(merged, timing=every).set_index("method")
    assert table.loc["cand:default", "time_ratio"] == pytest.approx(1.0)
    report = (panel.results_dir() / "real_panel_candidates.md").read_text()
    row = re.search(r"^\| cand:forest_ensemble \| ([0-9.]+) \|.* ([0-9.]+) \|$", report.split("## Candidates", 1)[1],
                    re.M)
    assert float(row.group(1)) == pytest.approx(table.loc["cand:forest_ensemble", "roc_auc"], abs=1.5e-3)
    assert float(row.group(2)) == pytest.approx(table.loc["cand:forest_ensemble", "time_ratio"], abs=1.5e-3)


def test_candidate_table_reads_every_f1_rule_and_compares_times_within_a_run():
    rows = [{"dataset": ds, "seed": 0, "method": m, "roc_auc": auc, "pr_auc": 0.5, "f1_default": 0.4,
             "f1_p99": 0.2, "seconds": sec, "run": run}
            for ds in ("a", "b")
            for m, auc, sec, run in (("IF central", 0.8, 1.0, "r1"), ("cand:default", 0.9, 2.0, "r1"),
                                     ("cand:x", 0.7, 6.0, "r1"), ("cand:default", 0.9, 10.0, "r2"),
                                     ("cand:y", 0.85, 5.0, "r2"))]
    every = pd.DataFrame(rows)
    table = panel.candidate_table(every.drop_duplicates(["dataset", "seed", "method"]), timing=every)
    table = table.set_index("method")
    assert list(table.index) == ["cand:default", "cand:x", "cand:y"]  # the baseline is not a candidate
    assert table.loc["cand:x", "time_ratio"] == pytest.approx(3.0)  # 12 s over run r1's 4 s
    assert table.loc["cand:y", "time_ratio"] == pytest.approx(0.5)  # 10 s over run r2's 20 s, not r1's
    assert table.loc["cand:x", "below_IF_0.05"] == 2 and table.loc["cand:default", "wins_vs_IF"] == 2
    assert table.loc["cand:y", "f1_default"] == pytest.approx(0.4) and "f1_p99" in table


def test_panel_files_are_read_from_a_given_folder(tmp_path):
    pd.DataFrame({"dataset": ["a"], "seed": [0], "method": ["norm"], "roc_auc": [0.6]}).to_csv(
        tmp_path / panel.PANEL_FILE, index=False)
    assert panel.load_panel(tmp_path)["roc_auc"].tolist() == [0.6]
    with pytest.raises(FileNotFoundError):
        panel.load_candidates(tmp_path)


def test_results_dir_says_when_the_course_checkout_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(panel, "__file__", str(tmp_path / "a" / "b" / "panel.py"))
    with pytest.raises(UserError, match="checkout"):
        panel.results_dir()


def test_regular_anomalies_are_rare_seeded_and_quieter_than_normal_rows():
    fed = panel.regular_anomalies(seed=3, rows=4000, spread=0.2)
    assert len(fed.clients) == 3 and sum(len(c) for c in fed.clients) + len(fed.test) == 4000
    assert fed.test.shape == (1200, 20) and fed.test.dtype == np.float32
    assert 0.01 < fed.test_labels.mean() < 0.06
    again = panel.regular_anomalies(seed=3, rows=4000, spread=0.2)
    assert np.array_equal(fed.test, again.test) and not np.array_equal(fed.test, panel.regular_anomalies(4).test)
    # off the 4-dimensional plane (the smallest principal directions of the normal rows) anomalies carry less noise
    normal, anomalies = fed.test[fed.test_labels == 0], fed.test[fed.test_labels == 1]
    _, _, vt = np.linalg.svd(normal - normal.mean(axis=0), full_matrices=False)
    off_plane = vt[4:]
    noise = lambda rows: ((rows - rows.mean(axis=0)) @ off_plane.T).std()  # noqa: E731
    assert noise(anomalies) == pytest.approx(0.2 * noise(normal), rel=0.25)


@pytest.mark.slow
def test_quiet_anomalies_fool_the_autoencoder_but_not_the_forest():
    study = panel.regular_anomaly_study(spreads=(0.2, 2.0), seeds=(0,), rows=1500)
    quiet, loud = study.set_index("spread").loc[0.2], study.set_index("spread").loc[2.0]
    assert quiet["federated AE ROC-AUC"] < 0.2 < 0.9 < loud["federated AE ROC-AUC"]
    assert quiet["AE median error, anomalies"] < 0.5 * quiet["AE median error, normal"]
    assert min(quiet["federated forest ROC-AUC"], loud["federated forest ROC-AUC"]) > 0.75
