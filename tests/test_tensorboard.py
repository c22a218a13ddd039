"""TensorBoard logs of a run: read back with TensorBoard's own reader, they hold history.csv's numbers."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from conftest import generate_and_simulate

from fedad_tutorial.cli import main
from fedad_tutorial.outputs import check_run_dir, is_run_dir
from fedad_tutorial.tensorboard_log import crc32c, masked_crc32c, round_scalars, write_events


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """3 labelled nodes, 3 rounds, each client with its own threshold (the default)."""
    root = tmp_path_factory.mktemp("tb")
    data, run = generate_and_simulate(root, rows=240, features=8, seed=3, rounds=3)
    return data, run


def _accumulator(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def test_scalars_equal_the_history(run):
    _, folder = run
    history = pd.read_csv(folder / "history.csv")
    acc = _accumulator(folder / "tensorboard")
    tags = set(acc.Tags()["scalars"])
    clients = sorted(history["client"].unique())
    for metric in ("loss", "precision", "recall", "f1", "roc_auc", "threshold"):
        assert f"{metric}/mean" in tags
        means = history.groupby("round")[metric].mean()  # pandas skips NaN, as the printed table does
        logged = {e.step: e.value for e in acc.Scalars(f"{metric}/mean")}
        assert sorted(logged) == [1, 2, 3]
        np.testing.assert_allclose([logged[r] for r in means.index], means.values, rtol=1e-5)
        for client in clients:
            rows = history[history["client"] == client].dropna(subset=[metric])
            logged = {e.step: e.value for e in acc.Scalars(f"{metric}/{client}")}
            assert sorted(logged) == rows["round"].tolist()  # rounds a client did not train have no loss
            np.testing.assert_allclose([logged[r] for r in rows["round"]], rows[metric].values, rtol=1e-5)
    summary = json.loads((folder / "summary.json").read_text())
    (saved,) = acc.Scalars("threshold/saved")
    assert saved.step == 3 and saved.value == pytest.approx(summary["global_threshold"], rel=1e-6)


def test_held_out_score_histograms_count_every_held_out_row(run):
    data, folder = run
    acc = _accumulator(folder / "tensorboard")
    summary = json.loads((folder / "summary.json").read_text())
    n_test = sum(r["n_test"] for r in summary["final_round_per_client"])
    normal, anomalous = (acc.Histograms(f"scores/heldout_{k}")[0].histogram_value
                         for k in ("normal", "anomalous"))
    assert normal.num + anomalous.num == n_test and 0 < anomalous.num < normal.num
    assert sum(normal.bucket) == normal.num and len(normal.bucket) <= 60
    assert list(normal.bucket_limit) == sorted(normal.bucket_limit)
    assert anomalous.sum / anomalous.num > normal.sum / normal.num  # anomalies score higher on average


def test_hyper_parameters_are_logged_for_the_hparams_plugin(run):
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    _, folder = run
    acc = EventAccumulator(str(folder / "tensorboard"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    parsed = {tag: plugin_data_pb2.HParamsPluginData.FromString(data) for tag, data in content.items()}
    experiment = parsed["_hparams_/experiment"].experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"f1/mean", "precision/mean", "recall/mean",
                                                              "roc_auc/mean", "loss/mean"}
    hparams = parsed["_hparams_/session_start_info"].session_start_info.hparams
    assert hparams["rounds"].number_value == 3 and hparams["model"].string_value == "ae"
    assert hparams["hidden"].string_value == "64,32"
    assert {i.name for i in experiment.hparam_infos} == set(hparams)
    assert parsed["_hparams_/session_end_info"].session_end_info.status == 1  # STATUS_SUCCESS


def test_crc_is_tensorflows_masked_crc32c():
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference

    rng = np.random.default_rng(0)
    for n in [*range(0, 20), 1000, 4099]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert masked_crc32c(data) == reference(data)
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_a_run_folder_with_its_tensorboard_folder_can_be_replaced_but_not_one_with_other_files(run, tmp_path):
    data, folder = run
    assert is_run_dir(folder) and check_run_dir(folder) == folder
    copy = tmp_path / "copy"
    (copy / "tensorboard").mkdir(parents=True)
    for name in (".fedad-run", "history.csv"):
        (copy / name).write_bytes((folder / name).read_bytes())
    (copy / "tensorboard" / "events.out.tfevents.1.host").write_bytes(b"")
    assert is_run_dir(copy)
    (copy / "tensorboard" / "notes.txt").write_text("mine")
    assert not is_run_dir(copy)


def test_rounds_without_labels_log_the_loss_only(tmp_path):
    history = [{"round": rnd, "client": client, "loss": loss, "threshold": thr}  # as FederationResult.records()
               for rnd, client, loss, thr in ((1, "a", 1.0, 2.0), (1, "b", np.nan, 2.0), (2, "a", 0.5, 1.5),
                                              (2, "b", 0.7, 1.5))]
    assert round_scalars(history) == {1: {"loss/mean": 1.0, "loss/a": 1.0, "threshold/mean": 2.0},
                                      2: {"loss/mean": 0.6, "loss/a": 0.5, "loss/b": 0.7, "threshold/mean": 1.5}}
    path = write_events(tmp_path / "tb", history, {"rounds": 2, "hidden": [8, 4], "dp": False})
    assert path.name.startswith("events.out.tfevents.") and os.path.getsize(path) > 0
    acc = _accumulator(tmp_path / "tb")
    assert [e.value for e in acc.Scalars("loss/mean")] == pytest.approx([1.0, 0.6])
    assert acc.Tags()["histograms"] == []


def test_rerunning_into_the_same_folder_keeps_one_event_file(run, tmp_path):
    data, _ = run
    out = tmp_path / "again"
    for _ in range(2):
        assert main(["simulate", "--data-dir", str(data), "--output-dir", str(out), "--rounds", "1",
                     "--local-epochs", "1", "--quiet"]) == 0
    assert len(list((out / "tensorboard").iterdir())) == 1
