"""DP-FedAvg on the command line and in a Flower deployment (fedad_tutorial.privacy): the flags, one aggregator for
chapter 10, ``simulate`` and ``fedad server``, clipping on the clients, the reported epsilon."""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import test_flower
import torch

from fedad_tutorial.chapters import privacy as chapter
from fedad_tutorial.chapters.robust import update_norm
from fedad_tutorial.cli import main
from fedad_tutorial.config import FederatedConfig
from fedad_tutorial.csvio import read_node_csv
from fedad_tutorial.data import hold_out
from fedad_tutorial.detector import Detector
from fedad_tutorial.errors import UserError
from fedad_tutorial.federated import RecordingAggregator, run_federated
from fedad_tutorial.flower.processes import Processes, free_port
from fedad_tutorial.privacy import (
    clients_per_round,
    clip_update,
    config_aggregator,
    dp_fedavg_aggregator,
    epsilon,
    privacy_summary,
)

CLI = [sys.executable, "-m", "fedad_tutorial.cli"]
#: A small DP-FedAvg setting: updates of these models are clipped (their norms are above 0.3) and noised.
DP = {"dp_clip": 0.3, "dp_noise_multiplier": 0.8}


data = test_flower.data  # the same three nodes' CSVs as the other deployment tests


def _splits(data: Path, names=("node_1", "node_2", "node_3")):
    nodes = [read_node_csv(data / f"{n}.csv") for n in names]
    return hold_out(nodes, seed=42), nodes[0].feature_names


def _state(seed: int, scale: float) -> tuple[dict, dict]:
    gen = torch.Generator().manual_seed(seed)
    glob = {"w": torch.randn(20, 5, generator=gen), "b": torch.randn(5, generator=gen)}
    return glob, {k: v + scale * torch.randn(v.shape, generator=gen) for k, v in glob.items()}


def test_clipping_bounds_the_norm_and_leaves_small_updates_alone():
    glob, big = _state(0, 1.0)
    assert update_norm(big, glob) > 3
    clipped = clip_update(big, glob, 0.5)
    assert update_norm(clipped, glob) == pytest.approx(0.5, rel=1e-6)
    direction = {k: (big[k] - glob[k]) / update_norm(big, glob) for k in glob}  # only the length changes
    for k in glob:
        torch.testing.assert_close(clipped[k] - glob[k], 0.5 * direction[k], rtol=0, atol=1e-6)
        assert clipped[k].dtype == big[k].dtype
    small = {k: glob[k] + 0.01 * (big[k] - glob[k]) for k in glob}
    assert update_norm(small, glob) < 0.5
    same = clip_update(small, glob, 0.5)
    assert all(torch.equal(same[k], small[k]) for k in glob)  # unchanged, to the bit
    assert all(torch.equal(clip_update(glob, glob, 0.5)[k], glob[k]) for k in glob)  # a zero update too


@pytest.fixture
def task_identity(monkeypatch):
    """What a ServerApp process knows about itself (Flower reads it when a message is created)."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


@pytest.mark.usefixtures("task_identity")
def test_the_clients_clipping_mod_clips_the_reply_only_when_asked():
    """The ClientApp's train mod (Flower's fixedclipping_mod) on a real message, without processes."""
    from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

    from fedad_tutorial.flower.client_app import dp_clipping_mod
    from fedad_tutorial.flower.weights import from_record, to_record

    glob, big = _state(2, 1.0)

    def train(msg: Message, context: Context) -> Message:  # what the train handler returns: new weights
        return Message(RecordDict({"arrays": to_record(big), "metrics": MetricRecord({"num-examples": 10})}),
                       reply_to=msg)

    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    for clip, want in ((0.0, update_norm(big, glob)), (0.25, 0.25)):
        msg = Message(RecordDict({"arrays": to_record(glob), "config": ConfigRecord({"dp-clip": clip})}),
                      message_type="train", dst_node_id=1)
        reply = dp_clipping_mod(msg, context, train)
        assert not reply.has_error()
        sent = from_record(reply.content["arrays"], glob)
        assert update_norm(sent, glob) == pytest.approx(want, rel=1e-6)
        if clip:  # the server's clipping of an update the client clipped changes nothing beyond rounding
            again = clip_update(sent, glob, clip)
            assert max(float((again[k] - sent[k]).abs().max()) for k in glob) < 1e-6


def test_the_noise_has_std_z_c_over_the_clients_per_round_and_comes_from_the_seed():
    config = FederatedConfig(fraction=0.5, seed=7, **DP)
    assert clients_per_round(config, 10) == 5
    aggregate = config_aggregator(config, 10)
    glob = {"w": torch.zeros(100_000)}
    zero = [{"w": torch.zeros(100_000)} for _ in range(5)]  # no signal: the output is the noise alone
    noise = aggregate(glob, zero, [1] * 5, 3)["w"]
    assert privacy_summary(config, 10)["noise_std"] == pytest.approx(0.8 * 0.3 / 5)
    assert float(noise.std()) == pytest.approx(0.8 * 0.3 / 5, rel=0.02)
    assert torch.equal(noise, config_aggregator(config, 10)(glob, zero, [1] * 5, 3)["w"])  # (seed, round) only
    assert torch.equal(noise, dp_fedavg_aggregator(0.3, 0.8, 7)(glob, zero, [1] * 5, 3)["w"])  # chapter 10's
    assert not torch.equal(noise, aggregate(glob, zero, [1] * 5, 4)["w"])
    assert not torch.equal(noise, config_aggregator(replace(config, seed=8), 10)(glob, zero, [1] * 5, 3)["w"])
    # a client that stops answering does not change the denominator (the noise is calibrated to 5)
    small = {"w": torch.full((100_000,), 1e-4)}  # norm below the clip: not clipped
    fewer = aggregate(glob, [small] * 4, [1] * 4, 3)["w"]
    assert float((fewer - noise).mean()) == pytest.approx(4e-4 / 5, rel=1e-3)


def test_simulate_equals_chapter_10s_aggregator_and_repeats_itself(data):
    splits, names = _splits(data)
    plain = FederatedConfig(rounds=2, local_epochs=1, batch_size=32)
    config = replace(plain, **DP)
    recorded = RecordingAggregator(dp_fedavg_aggregator(0.3, 0.8, plain.seed))  # as notebook 10 builds it
    chapter_run = run_federated(splits, plain, aggregator=recorded, feature_names=names, progress=False)
    runs = [run_federated(splits, config, feature_names=names, progress=False) for _ in range(2)]
    for run in runs:
        state = run.detector.model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in recorded.states[-1].items())
        assert run.history.equals(chapter_run.history)
    fedavg = run_federated(splits, plain, feature_names=names, progress=False).detector.model.state_dict()
    assert update_norm(fedavg, recorded.states[-1]) > 0.1  # DP-FedAvg is not FedAvg here
    with pytest.raises(UserError, match="pass no other"):
        run_federated(splits, config, aggregator=recorded, progress=False)
    with pytest.raises(UserError, match="not centralized training"):
        run_federated(splits, config, mode="centralized", progress=False)


def test_epsilon_is_chapter_10s_with_the_share_of_clients_sampled():
    config = FederatedConfig(rounds=12, fraction=0.3, dp_clip=1.0, dp_noise_multiplier=1.1, dp_delta=1e-4)
    report = privacy_summary(config, 10)
    assert report["clients_per_round"] == 3 and report["sample_rate"] == 0.3
    assert report["epsilon"] == chapter.epsilon(1.1, 0.3, 12, 1e-4)
    assert report["epsilon_per_round"] == [epsilon(1.1, 0.3, r, 1e-4) for r in range(1, 13)]
    assert privacy_summary(replace(config, fraction=0.25), 10)["sample_rate"] == 0.2  # round(2.5) = 2 of 10
    assert math.isinf(privacy_summary(replace(config, dp_noise_multiplier=0.0), 10)["epsilon"])
    assert privacy_summary(replace(config, dp_clip=0.0, dp_noise_multiplier=0.0), 10) is None


@pytest.mark.parametrize("flags, message", [
    (["--dp-noise-multiplier", "1"], "dp_noise_multiplier 1 needs dp_clip above 0"),
    (["--dp-clip", "-1"], "argument --dp-clip: must be in [0, 1000000], got -1"),
    (["--dp-noise-multiplier", "nan", "--dp-clip", "1"], "argument --dp-noise-multiplier: must be"),
    (["--dp-delta", "0"], "argument --dp-delta: must be in (0, 1), got 0"),
    (["--dp-delta", "1"], "argument --dp-delta: must be in (0, 1), got 1"),
    (["--dp-clip", "1", "--model", "iforest"], "--model iforest sends each client's isolation trees"),
    (["--dp-clip", "1", "--model", "ensemble"], "--model ensemble sends each client's isolation trees"),
])
@pytest.mark.parametrize("command", ["simulate", "run", "server"])
def test_bad_dp_flags_are_one_line_and_exit_2(command, flags, message, tmp_path, capsys):
    out = tmp_path / "out"
    extra = ["--insecure", "--address", f"127.0.0.1:{free_port()}"] if command == "server" else []
    assert main([command, "--output-dir", str(out), *extra, *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_a_flower_run_config_is_checked_the_same_way():
    from fedad_tutorial.flower.settings import FlowerSettings

    run_config = FlowerSettings().to_run_config()
    assert {"dp-clip": 0.0, "dp-noise-multiplier": 0.0, "dp-delta": 1e-5}.items() <= run_config.items()
    with pytest.raises(UserError, match="needs dp_clip above 0") as caught:
        FlowerSettings.from_run_config({**run_config, "dp-noise-multiplier": 1})
    assert "\n" not in str(caught.value)
    settings = FlowerSettings.from_run_config({**run_config, "dp-clip": 2, "dp-noise-multiplier": 1})
    assert settings.config.dp_clip == 2.0 and settings.config.private


def test_a_dp_simulate_run_reports_epsilon_in_summary_tensorboard_and_its_last_line(data, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["simulate", "--data-dir", str(data), "--output-dir", str(out), "--rounds", "3", "--local-epochs",
                 "1", "--fraction", "0.6", "--dp-clip", "0.3", "--dp-noise-multiplier", "0.8", "--dp-delta", "1e-4",
                 "--quiet", "--no-figure"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    privacy = json.loads((out / "summary.json").read_text())["privacy"]
    want = epsilon(0.8, 2 / 3, 3, 1e-4)  # round(0.6 x 3) = 2 of the 3 clients each round
    assert privacy["epsilon"] == pytest.approx(want, rel=1e-12) and privacy["clients_per_round"] == 2
    assert privacy["delta"] == 1e-4 and privacy["clip"] == 0.3 and privacy["noise_multiplier"] == 0.8
    assert lines[-3].startswith(f"Differential privacy: epsilon {want:.3g} at delta 0.0001, client-level")
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    logged = {e.step: e.value for e in acc.Scalars("privacy/epsilon")}
    assert sorted(logged) == [1, 2, 3]
    np.testing.assert_allclose([logged[r] for r in (1, 2, 3)], privacy["epsilon_per_round"], rtol=1e-6)
    # without DP-FedAvg: no privacy line, and summary.json says so
    assert main(["simulate", "--data-dir", str(data), "--output-dir", str(tmp_path / "plain"), "--rounds", "1",
                 "--local-epochs", "1", "--quiet", "--no-figure"]) == 0
    assert "Differential privacy" not in capsys.readouterr().out
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["privacy"] is None


@pytest.mark.usefixtures("task_identity")
def test_the_flower_server_app_with_dp_trains_like_simulate(data, tmp_path):
    """The ServerApp over the real ClientApp in this process (InlineGrid: every message and handler, the clients'
    clipping mod included, as in a deployment): simulate's final weights to float rounding, and its epsilon."""
    from test_round_loop import InlineGrid

    from fedad_tutorial.flower.server_app import run_server
    from fedad_tutorial.flower.settings import FlowerSettings

    paths = [data / f"node_{k}.csv" for k in (1, 2, 3)]
    config = FederatedConfig(rounds=3, local_epochs=1, batch_size=32, fraction=0.7, engine="loop", **DP)
    out = tmp_path / "flower"
    deployed = run_server(InlineGrid(paths), FlowerSettings(config=config, min_clients=3, wait_timeout=10,
                                                          output_dir=str(out)))
    splits, names = _splits(data)
    simulated = run_federated(splits, config, feature_names=names, progress=False)
    a, b = deployed.detector.model.state_dict(), simulated.detector.model.state_dict()
    assert max(float((a[k] - v).abs().max()) for k, v in b.items()) < 1e-5
    assert json.loads((out / "summary.json").read_text())["privacy"] == privacy_summary(config, 3)


@pytest.mark.slow
def test_a_flower_deployment_with_dp_trains_like_simulate(data, tmp_path):
    """``fedad server --dp-clip --dp-noise-multiplier`` and two ``fedad client`` processes: each client clips its
    update (fixedclipping_mod), the server clips again and adds the seeded noise; the final weights are simulate's
    (the loop engine, like the clients) to float rounding, and the run folder reports the same epsilon."""
    port, out = free_port(), tmp_path / "run"
    dp = ["--dp-clip", "0.3", "--dp-noise-multiplier", "0.8"]
    train = ["--local-epochs", "1", "--batch-size", "32", "--quiet"]
    group = Processes()
    try:
        server = group.start(CLI + ["server", "--rounds", "2", "--min-clients", "2", "--address", f"127.0.0.1:{port}",
                                    "--output-dir", str(out), "--wait-timeout", "120", "--round-timeout", "60",
                                    "--insecure", *train, *dp], dict(os.environ), tmp_path / "server.log")
        clients = [group.start(CLI + ["client", "--node-id", str(k), "--data-path", str(data / f"node_{k}.csv"),
                                      "--server-address", f"127.0.0.1:{port}", "--wait-timeout", "60", "--insecure"],
                               dict(os.environ), tmp_path / f"client{k}.log") for k in (1, 2)]
        assert server.wait(timeout=300) == 0, (tmp_path / "server.log").read_text()[-3000:]
        assert [c.wait(timeout=60) for c in clients] == [0, 0]
    finally:
        group.stop()
    splits, names = _splits(data, ("node_1", "node_2"))
    config = FederatedConfig(rounds=2, local_epochs=1, batch_size=32, engine="loop", **DP)
    reference = run_federated(splits, config, feature_names=names, progress=False)
    deployed = Detector.load(out / "model.pt").model.state_dict()
    simulated = reference.detector.model.state_dict()
    gap = max(float((deployed[k] - v).abs().max()) for k, v in simulated.items())
    assert gap < 1e-5
    plain = run_federated(splits, replace(config, dp_clip=0.0, dp_noise_multiplier=0.0), feature_names=names,
                          progress=False).detector.model.state_dict()
    assert max(float((deployed[k] - v).abs().max()) for k, v in plain.items()) > 100 * gap + 1e-3  # noise is there
    history = pd.read_csv(out / "history.csv")
    np.testing.assert_allclose(history[["loss", "roc_auc"]].to_numpy(),
                               reference.history[["loss", "roc_auc"]].to_numpy(), rtol=1e-4)
    privacy = json.loads((out / "summary.json").read_text())["privacy"]
    assert privacy == privacy_summary(config, 2)
    last = (tmp_path / "server.log").read_text().strip().splitlines()
    assert any(line.startswith(f"Differential privacy: epsilon {privacy['epsilon']:.3g} at delta 1e-05")
               for line in last[-3:])
