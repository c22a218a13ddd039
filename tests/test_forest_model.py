"""``--model iforest`` and ``--model ensemble``: the forest as arrays (scores equal scikit-learn's), the model
file's forest checked (a damaged or oversized one refused in one line), the command line, Flower, and the hint
when a model ranks the anomalies below the normal rows."""

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

import fedad_tutorial.forest as forest_module
from fedad_tutorial.chapters.forest import FederatedIsolationForest
from fedad_tutorial.cli import main
from fedad_tutorial.csvio import write_node_csv
from fedad_tutorial.data import NodeData, hold_out, make_cloud_federation
from fedad_tutorial.detector import Detector
from fedad_tutorial.ensemble import RobustCalibration, combine
from fedad_tutorial.errors import UserError
from fedad_tutorial.federated import FederatedConfig, InProcess, run_federated
from fedad_tutorial.forest import ForestModel, grow_trees
from fedad_tutorial.thresholds import ScoreHistogram


@pytest.fixture(scope="module")
def splits():
    return hold_out(make_cloud_federation(num_nodes=4, samples_per_node=(200, 400), num_features=10, seed=3), seed=3)


@pytest.fixture(scope="module")
def forest_run(splits):
    return run_federated(splits, FederatedConfig(model="iforest", trees_per_client=30), progress=False)


@pytest.fixture(scope="module")
def ensemble_run(splits):
    return run_federated(splits, FederatedConfig(model="ensemble", rounds=2, local_epochs=1, trees_per_client=30),
                         progress=False)


def test_scores_equal_chapter_07s_scikit_learn_forest(splits, forest_run):
    """Same global scaler, same seeds (seed + client index): the same trees, and scores equal to
    ``-IsolationForest.score_samples`` of chapter 07's pooled forest to float rounding."""
    chapter = FederatedIsolationForest(trees_per_client=30, seed=42).fit([s.train for s in splits])
    rows = np.vstack([s.test for s in splits] + [s.train for s in splits])
    ours, theirs = forest_run.detector.decision_function(rows), chapter.decision_function(rows)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    assert forest_run.detector.model.trees.n_trees == 120 and forest_run.detector.model.trees.max_samples == 128


def test_scoring_in_small_passes_changes_nothing(forest_run, splits, monkeypatch):
    rows = forest_run.detector.scaled(np.vstack([s.test for s in splits]))
    whole = forest_run.detector.model.score(rows)
    monkeypatch.setattr(forest_module, "SCORE_ELEMENTS", 7 * 120)  # 7 rows per pass
    assert torch.equal(forest_run.detector.model.score(rows), whole)


def test_one_round_no_loss_and_the_forest_settings(forest_run):
    history = forest_run.history
    assert history["round"].unique().tolist() == [1] and history["loss"].isna().all()
    assert forest_run.config.rounds == 1 and FederatedConfig(model="iforest", rounds=7).rounds == 1
    assert history["selected"].all() and 0.7 < forest_run.summary()["roc_auc"] <= 1.0


def test_model_files_round_trip(forest_run, ensemble_run, splits, tmp_path):
    rows = np.vstack([s.test for s in splits])
    for name, run in (("iforest", forest_run), ("ensemble", ensemble_run)):
        path = run.detector.save(tmp_path / f"{name}.pt")
        back = Detector.load(path)
        assert back.spec.kind == name and back.score_method == {"iforest": "isolation", "ensemble": "calibrated"}[name]
        assert set(back.model.state_dict()) == set(run.detector.model.state_dict())
        for key, tensor in run.detector.model.state_dict().items():
            assert torch.equal(back.model.state_dict()[key], tensor), key
        np.testing.assert_array_equal(back.decision_function(rows), run.detector.decision_function(rows))
        assert back.threshold_for(90.0) < back.threshold_for(99.0)


def test_the_ensemble_is_the_combined_robust_z_of_its_parts(ensemble_run, splits):
    model = ensemble_run.detector.model
    x = ensemble_run.detector.scaled(np.vstack([s.test for s in splits]))
    parts = model.part_scores(x)
    median, iqr = model.calibration[:, 0], model.calibration[:, 1]
    z = (parts - median[:, None]) / iqr[:, None]
    torch.testing.assert_close(model.score(x), combine(z) - combine(-median / iqr), rtol=0, atol=1e-12)
    assert (model.score(x) >= 0).all()
    # each part's calibration is its training-score histogram's median and IQR; the AE part is the run's AE
    assert torch.equal(parts[0], model.ae.score(x).double())
    history = ensemble_run.history
    assert history["round"].max() == 2 and history["loss"].notna().all()


def test_calibration_reads_the_histogram():
    scores = np.random.default_rng(0).gamma(2.0, size=5000)
    c = RobustCalibration.of(ScoreHistogram.of(scores))
    q1, med, q3 = np.percentile(scores, [25, 50, 75])
    assert c.median == pytest.approx(med, rel=5e-3) and c.iqr == pytest.approx(q3 - q1, rel=5e-3)


# -- damaged and oversized forests -----------------------------------------------------------------------------

def _damaged(state: dict, change: str) -> dict:
    state = {k: v.clone() for k, v in state.items()}
    left, right = state["left"], state["right"]
    inner = int(torch.nonzero(left[0] >= 0)[0, 0])
    if change == "child out of range":
        left[0, inner] = left.shape[1] + 5
    elif change == "cycle":
        right[0, inner] = 0  # back to the root
    elif change == "two parents":
        right[0, 0] = left[0, 0]
    elif change == "one child":
        right[0, inner] = -1
    elif change == "feature out of range":
        state["feature"][0, 0] = 999
    elif change == "nan threshold":
        state["threshold"][0, 0] = float("nan")
    elif change == "zero size":
        state["size"][0, int(left[0, 0])] = 0
    elif change == "shapes differ":
        state["size"] = state["size"][:, :-1]
    elif change == "float features":
        state["feature"] = state["feature"].double()
    elif change == "absurd sub-sample size":
        state["max_samples"] = torch.tensor(10**15)
    elif change == "nodes beyond 2 psi - 1":
        state["max_samples"] = torch.tensor(4)
    elif change == "missing array":
        del state["threshold"]
    elif change == "extra entry":
        state["code"] = torch.zeros(1)
    return state


CHANGES = {"child out of range": "is not a later node", "cycle": "is not a later node", "two parents": "two parents",
           "one child": "one child", "feature out of range": "feature outside", "nan threshold": "NaN or infinite",
           "zero size": "size is outside", "shapes differ": "do not share one", "float features": "not whole numbers",
           "absurd sub-sample size": "not a whole number in", "nodes beyond 2 psi - 1": "nodes per tree",
           "missing array": "threshold", "extra entry": "unexpected forest entries"}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_damaged_forest_file_is_refused_in_one_line(forest_run, splits, tmp_path, capsys, change):
    path = tmp_path / "model.pt"
    forest_run.detector.save(path)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"] = _damaged(payload["state_dict"], change)
    torch.save(payload, path)
    with pytest.raises(UserError, match="damaged fedad model file") as info:
        Detector.load(path)
    assert CHANGES[change] in str(info.value)
    data = tmp_path / "node.csv"
    write_node_csv(data, NodeData("node", splits[0].test, forest_run.detector.feature_names))
    assert main(["score", "--model", str(path), "--data", str(data), "--output", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "damaged fedad model file" in err and "Traceback" not in err
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("part", ["calibration", "ae", "forest"])
def test_a_damaged_ensemble_file_is_refused(ensemble_run, tmp_path, part):
    path = tmp_path / "model.pt"
    ensemble_run.detector.save(path)
    payload = torch.load(path, weights_only=True)
    state = payload["state_dict"]
    if part == "calibration":
        state["calibration"][1, 1] = 0.0
        reason = "positive IQR"
    elif part == "ae":
        state["ae.encoder.0.weight"] = state["ae.encoder.0.weight"][:, :3]
        reason = "shapes do not match"
    else:
        state["forest.left"][0, 0] = 0
        reason = "not a later node"
    torch.save(payload, path)
    with pytest.raises(UserError, match=reason):
        Detector.load(path)


def test_an_oversized_forest_is_refused(monkeypatch):
    trees = grow_trees(np.random.default_rng(0).normal(size=(100, 3)), 6, 32, 0)
    monkeypatch.setattr(forest_module, "MAX_TREES", 5)
    with pytest.raises(ValueError, match="6 trees; a forest holds 1 to 5"):
        ForestModel(3, trees)


def test_a_client_sending_a_damaged_forest_stops_the_run(splits, monkeypatch):
    class Hostile(InProcess):
        def trees(self, chosen, n_trees, max_samples, rnd):
            out = super().trees(chosen, n_trees, max_samples, rnd)
            bad = out[1]
            out[1] = replace(bad, left=np.where(bad.left > 0, bad.left + 10_000, bad.left))
            return out

    from fedad_tutorial import federated

    monkeypatch.setattr(federated, "InProcess", Hostile)
    with pytest.raises(UserError, match=f"client {splits[1].name} sent trees that are not a forest"):
        run_federated(splits, FederatedConfig(model="iforest", trees_per_client=3), progress=False)


def test_a_client_smaller_than_two_rows_cannot_grow_trees():
    with pytest.raises(UserError, match="at least 2 to grow isolation trees"):
        forest_module.shared_max_samples(128, [300, 1])


# -- the command line ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("forest_cli")
    data = root / "data"
    assert main(["generate-data", "--num-nodes", "3", "--samples-per-node", "300", "--num-features", "8",
                 "--output-dir", str(data), "--seed", "4"]) == 0
    for model in ("iforest", "ensemble"):
        assert main(["simulate", "--model", model, "--data-dir", str(data), "--output-dir", str(root / model),
                     "--rounds", "2", "--local-epochs", "1", "--trees-per-client", "20", "--quiet", "--no-figure"]) == 0
    return root, data


def test_simulate_writes_a_run_folder_for_both_models(cli_runs):
    root, _ = cli_runs
    for model, rounds in (("iforest", 1), ("ensemble", 2)):
        summary = json.loads((root / model / "summary.json").read_text())
        assert summary["config"]["model"] == model and summary["config"]["rounds"] == rounds
        assert summary["score_method"] == {"iforest": "isolation", "ensemble": "calibrated"}[model]
        assert 0.6 < summary["final_round_mean"]["roc_auc"] <= 1.0
        history = pd.read_csv(root / model / "history.csv")
        assert history["loss"].isna().all() == (model == "iforest")
        assert (root / model / "tensorboard").is_dir()


def test_score_with_percentile_and_alarm_rate(cli_runs, capsys):
    root, data = cli_runs
    for model in ("iforest", "ensemble"):
        detector = Detector.load(root / model / "model.pt")
        for flag, value, threshold in (("--percentile", "90", detector.threshold_for(90.0)),
                                       ("--max-alarm-rate", "0.01", detector.threshold_for(max_alarm_rate=0.01))):
            out = root / f"{model}{flag}.csv"
            assert main(["score", "--model", str(root / model / "model.pt"), "--data", str(data / "node_2.csv"),
                         "--output", str(out), flag, value]) == 0
            scores = pd.read_csv(out)
            np.testing.assert_array_equal(scores["is_anomaly"], (scores["score"] > threshold).astype(int))
            assert f"threshold {threshold:.4g}" in capsys.readouterr().out


@pytest.mark.parametrize("flag", [["--explain", "2"], ["--report", "r.html"]])
def test_explain_and_report_are_refused_in_one_line(cli_runs, tmp_path, capsys, flag):
    root, data = cli_runs
    for model, why in (("iforest", "isolation forest"), ("ensemble", "ensemble")):
        flags = [flag[0], str(tmp_path / flag[1]) if flag[0] == "--report" else flag[1]]
        out = tmp_path / "s.csv"
        assert main(["score", "--model", str(root / model / "model.pt"), "--data", str(data / "node_1.csv"),
                     "--output", str(out), *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "need a reconstruction model" in err and why in err
        assert not out.exists() and not (tmp_path / "r.html").exists()


def test_flags_a_model_does_not_use_are_named_and_ignored(cli_runs, tmp_path, capsys):
    _, data = cli_runs
    assert main(["simulate", "--model", "iforest", "--data-dir", str(data), "--output-dir", str(tmp_path / "r"),
                 "--lr", "0.5", "--rounds", "4", "--trees-per-client", "5", "--quiet", "--no-figure"]) == 0
    err = capsys.readouterr().err
    assert "note: --model iforest does not use --rounds, --lr; ignored" in err
    config = json.loads((tmp_path / "r" / "summary.json").read_text())["config"]
    assert config["lr"] == FederatedConfig().lr and config["rounds"] == 1 and config["trees_per_client"] == 5


# -- the hint when the anomalies look more regular than the normal rows ----------------------------------------

@pytest.fixture(scope="module")
def regular_anomalies(tmp_path_factory):
    """Normal rows: wide noise; anomalies: rows at the mean, more regular than any normal row."""
    root = tmp_path_factory.mktemp("regular")
    rng = np.random.default_rng(0)
    names = [f"m{j}" for j in range(6)]
    for k in range(3):
        normal = rng.normal(size=(240, 6)) * 2.0
        odd = rng.normal(size=(24, 6)) * 0.05
        labels = np.r_[np.zeros(240, int), np.ones(24, int)]
        order = rng.permutation(len(labels))
        write_node_csv(root / f"node_{k + 1}.csv", NodeData(f"node_{k + 1}", np.vstack([normal, odd])[order], names,
                                                            labels[order]))
    return root


def test_the_hint_names_the_other_family_in_simulate_and_score(regular_anomalies, tmp_path, capsys):
    run = tmp_path / "ae"
    assert main(["simulate", "--data-dir", str(regular_anomalies), "--output-dir", str(run), "--rounds", "2",
                 "--local-epochs", "2", "--quiet", "--no-figure"]) == 0
    out = capsys.readouterr().out
    auc = json.loads((run / "summary.json").read_text())["final_round_mean"]["roc_auc"]
    assert auc < 0.5
    hint = [line for line in out.splitlines() if line.startswith("hint:")]
    assert len(hint) == 1 and "look more regular than the normal rows" in hint[0]
    assert "--model iforest or --model ensemble" in hint[0] and f"ROC-AUC {auc:.3f}" in hint[0]
    assert main(["score", "--model", str(run / "model.pt"), "--data", str(regular_anomalies / "node_1.csv"),
                 "--output", str(tmp_path / "s.csv")]) == 0
    assert sum(line.startswith("hint: ROC-AUC") for line in capsys.readouterr().out.splitlines()) == 1


def test_no_hint_for_the_ensemble_or_a_ranking_above_chance():
    from fedad_tutorial.cli import inverted_hint

    assert inverted_hint("ensemble", 0.2) is None and inverted_hint("ae", 0.5) is None
    assert inverted_hint("ae", float("nan")) is None and inverted_hint("ae", None) is None
    assert "--model ae or --model ensemble" in inverted_hint("iforest", 0.3)


# -- Flower ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["iforest", "ensemble"])
def test_a_forest_travels_as_arrays_and_comes_back_identical(forest_run, ensemble_run, kind):
    from fedad_tutorial.flower.weights import model_from_record, model_to_record

    model = {"iforest": forest_run, "ensemble": ensemble_run}[kind].detector.model
    back = model_from_record(model_to_record(model), FederatedConfig(model=kind).model_spec(model.spec.input_dim))
    assert back.spec.kind == kind
    for key, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], tensor), key


SIMULATION = """
import json, sys
import numpy as np
import torch
torch.set_num_threads(1)
from fedad_tutorial.csvio import read_node_csv
from fedad_tutorial.data import hold_out
from fedad_tutorial.federated import FederatedConfig, run_federated
from fedad_tutorial.flower.settings import FlowerSettings
from fedad_tutorial.flower.simulation import run_flower_simulation
model, *paths = sys.argv[1:]
config = FederatedConfig(model=model, rounds=2, local_epochs=1, batch_size=32, threshold="global", engine="loop",
                         trees_per_client=20)
nodes = [read_node_csv(p) for p in paths]
splits = hold_out(nodes, seed=42)
ref = run_federated(splits, config, feature_names=nodes[0].feature_names, progress=False)
fl = run_flower_simulation(paths, FlowerSettings(config=config, min_clients=len(paths)))
cols = ["loss", "threshold", "f1", "roc_auc"]
ref_state, fl_state = ref.detector.model.state_dict(), fl.detector.model.state_dict()
x = np.vstack([s.test for s in splits])
print(json.dumps({
    "same_names": list(ref_state) == list(fl_state),
    "max_weight_diff": max(float((fl_state[k] - v).abs().max()) for k, v in ref_state.items()),
    "same_rows": fl.history[["round", "client"]].equals(ref.history[["round", "client"]]),
    "same_nan": bool((fl.history[cols].isna() == ref.history[cols].isna()).all().all()),
    "max_diff": float(np.nanmax((fl.history[cols] - ref.history[cols]).abs().to_numpy())),
    "max_score_diff": float(np.abs(fl.detector.decision_function(x) - ref.detector.decision_function(x)).max()),
    "thresholds": [ref.detector.threshold, fl.detector.threshold]}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("model", ["iforest", "ensemble"])
def test_flower_simulation_equals_simulate(tmp_path, model):
    """The trees (seeded by node index), the calibration and the history of a Flower run are ``simulate``'s."""
    paths = []
    for node in make_cloud_federation(3, 150, 8, seed=5):
        paths.append(str(write_node_csv(tmp_path / f"{node.name}.csv", node)))
    out = subprocess.run([sys.executable, "-c", SIMULATION, model, *paths], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "FLWR_TELEMETRY_ENABLED": "0"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["same_names"] and result["same_rows"] and result["same_nan"]
    assert result["max_weight_diff"] < 1e-5 and result["max_diff"] < 1e-5 and result["max_score_diff"] < 1e-5
    assert result["thresholds"][0] == pytest.approx(result["thresholds"][1], rel=1e-6)

