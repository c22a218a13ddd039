"""One round loop, one model file: the Flower ServerApp and ``fedad simulate`` train and save the same detector.

The ServerApp here runs over :class:`InlineGrid`, a Flower ``Grid`` that hands each message to the real
ClientApp in this process (no Ray, no SuperLink): every message the ServerApp sends and every handler
that answers it run as in a deployment, only the transport is a function call. Real processes are
tested in ``tests/test_flower.py`` (slow tier).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import generate_and_simulate
from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from fedad_tutorial.cli import main
from fedad_tutorial.csvio import read_node_csv
from fedad_tutorial.data import hold_out
from fedad_tutorial.detector import Detector
from fedad_tutorial.errors import UserError
from fedad_tutorial.federated import RECOMMENDED, run_federated
from fedad_tutorial.flower.client_app import make_client_app
from fedad_tutorial.flower.server_app import run_server
from fedad_tutorial.flower.settings import FlowerSettings

ROUNDS = 3


class InlineGrid(Grid):
    """A ``Grid`` whose nodes are the ClientApp called in this process, node ``k`` serving ``paths[k]``."""

    def __init__(self, paths: list[Path]) -> None:
        self.app = make_client_app([str(p) for p in paths])
        self.contexts = {100 + k: Context(run_id=1, node_id=100 + k, node_config={"partition-id": k},
                                          state=RecordDict(), run_config={}) for k in range(len(paths))}

    def set_run(self, run) -> None:
        raise NotImplementedError

    @property
    def run(self):
        raise NotImplementedError

    def create_message(self, *args, **kwargs) -> Message:
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return [self.app(message=m, context=self.contexts[m.metadata.dst_node_id]) for m in messages]


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    """What a ServerApp process knows about itself (Flower reads it when a message is created)."""
    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


def serve(paths: list[Path], config, output_dir: Path | None = None):
    settings = FlowerSettings(config=config, min_clients=len(paths), wait_timeout=10,
                              output_dir=str(output_dir) if output_dir is not None else "")
    return run_server(InlineGrid(paths), settings)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``fedad simulate`` (the vectorized engine) and the Flower ServerApp on the same three CSVs, same settings."""
    root = tmp_path_factory.mktemp("round_loop")
    data, simulated = generate_and_simulate(root, rows=300, features=10, seed=7, rounds=ROUNDS)
    paths = sorted(data.glob("node_*.csv"))
    with pytest.MonkeyPatch.context() as mp:
        for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
            mp.setattr(TaskIdentity, name, value)
        serve(paths, replace(RECOMMENDED, rounds=ROUNDS, local_epochs=1), root / "flower")
    return root, paths, simulated, root / "flower"


def test_flower_and_simulate_save_the_same_model_file(runs):
    """Threshold, score histogram and normal ranges: simulate's (vectorized engine) and the ServerApp's (the
    nodes train one by one) differ only by float rounding of the weights (measured: 3e-8, identical counts)."""
    _, _, simulated, flower = runs
    sim, fl = Detector.load(simulated / "model.pt"), Detector.load(flower / "model.pt")
    assert fl.feature_range is not None and fl.score_histogram is not None
    assert fl.threshold == pytest.approx(sim.threshold, rel=1e-5)
    moved = np.abs(fl.score_histogram.counts - sim.score_histogram.counts).sum()
    assert fl.score_histogram.total == sim.score_histogram.total and moved <= 2  # a row at a bin edge may move
    within_a_bin = 0.05 * sim.scaler.std + 1e-9  # the shared bins of the normal ranges: 0.05 std wide
    assert (np.abs(fl.feature_range - sim.feature_range) <= within_a_bin).all()
    for name, tensor in sim.model.state_dict().items():
        np.testing.assert_allclose(fl.model.state_dict()[name].numpy(), tensor.numpy(), rtol=1e-4, atol=1e-6)
    history = [pd.read_csv(folder / "history.csv") for folder in (simulated, flower)]
    assert list(history[0].columns) == list(history[1].columns)
    assert history[0][["round", "client", "selected"]].equals(history[1][["round", "client", "selected"]])
    columns = ["loss", "threshold", "f1", "roc_auc"]
    np.testing.assert_allclose(history[1][columns].to_numpy(), history[0][columns].to_numpy(), rtol=1e-4)


def test_explanations_of_both_model_files_agree(runs, capsys):
    """``fedad score --explain 3`` on a third node's CSV: same alarms, same top metrics, same values, normal
    ranges and contributions to printing precision (6 significant digits; measured: identical)."""
    root, paths, simulated, flower = runs
    tables = []
    for name, folder in (("sim", simulated), ("flower", flower)):
        assert main(["score", "--model", str(folder / "model.pt"), "--data", str(paths[2]), "--explain", "3",
                     "--output", str(root / f"{name}.csv"), "--quiet"]) == 0
        tables.append(pd.read_csv(root / f"{name}.csv"))
    sim, fl = tables
    assert list(sim.columns) == list(fl.columns)
    assert sim["is_anomaly"].sum() >= 3 and sim["is_anomaly"].equals(fl["is_anomaly"])
    flagged = sim["is_anomaly"] == 1
    names = [c for c in sim.columns if c.endswith("_feature")]
    assert sim.loc[flagged, names].equals(fl.loc[flagged, names])
    numbers = [c for c in sim.columns if c not in names and c != "is_anomaly"]
    np.testing.assert_allclose(fl.loc[flagged, numbers].to_numpy(), sim.loc[flagged, numbers].to_numpy(),
                               rtol=1e-4, atol=1e-6)
    # the normal ranges are the training rows' 1st-99th percentiles: a latency is never negative
    lows = sim.loc[flagged, [c for c in sim.columns if c.endswith("_normal_low")]].to_numpy()
    rows = read_node_csv(paths[0]).features
    assert (lows >= rows.min() - 1e-9).all()


@pytest.mark.parametrize("model, fraction, threshold", [("ae", 0.67, "global"), ("svdd", 1.0, "local")])
def test_deferred_evaluation_with_sampled_nodes_and_a_global_threshold(runs, model, fraction, threshold):
    """Round r's evaluation rides on round r + 1's messages, to trained and untrained nodes alike: the history
    is the one-process loop's, row by row (the loop engine: the same computation, so equal to rounding).
    Deep SVDD's centre comes from the nodes' embedding sums."""
    _, paths, _, _ = runs
    config = replace(RECOMMENDED, model=model, rounds=3, local_epochs=1, fraction=fraction, threshold=threshold,
                     engine="loop")
    fl = serve(paths, config)
    nodes = [read_node_csv(p) for p in paths]
    ref = run_federated(hold_out(nodes, 0.3, config.seed), config, feature_names=nodes[0].feature_names,
                        progress=False)
    assert fl.history[["round", "client", "selected"]].equals(ref.history[["round", "client", "selected"]])
    assert fl.history["selected"].all() == (fraction == 1.0)  # with sampling, some nodes only evaluated
    columns = ["loss", "threshold", "f1", "roc_auc", "alarm_rate"]
    np.testing.assert_allclose(fl.history[columns].to_numpy(), ref.history[columns].to_numpy(), rtol=1e-5)
    assert fl.detector.threshold == pytest.approx(ref.detector.threshold, rel=1e-6)
    np.testing.assert_array_equal(fl.detector.feature_range, ref.detector.feature_range)
    if model == "svdd":  # the centre: the same sums, added in node order
        np.testing.assert_array_equal(fl.detector.model.center.numpy(), ref.detector.model.center.numpy())


def test_a_diverging_flower_run_stops_like_simulate(runs):
    """The finite-weights stop is the loop's: over Flower too, at the round and on the node it happened."""
    _, paths, _, _ = runs
    config = replace(RECOMMENDED, rounds=2, local_epochs=1, lr=1e6)
    with pytest.raises(UserError, match=r"training diverged: .* at round 1 on client node_1; lower the learning"):
        serve(paths, config)


class _Tables(HTMLParser):
    """The cells of every ``<table>`` of a page, row by row, and the text of every ``<h2>``."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.headings: list[str] = []
        self._cell: list[str] | None = None
        self._in_h2 = False

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "h2":
            self._in_h2 = True
            self.headings.append("")

    def handle_endtag(self, tag) -> None:
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "h2":
            self._in_h2 = False

    def handle_data(self, data) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_h2:
            self.headings[-1] += data


def test_the_report_and_the_csv_show_the_same_columns_and_numbers(runs, capsys):
    """``--explain 3 --report``: each alarm's table in the HTML has the CSV's columns (without the ``top{i}_``
    prefix) and the CSV's numbers (the CSV's exact, the page's to 6 significant digits); the help says what
    ``score_term`` is."""
    root, paths, simulated, _ = runs
    csv, page = root / "report.csv", root / "report.html"
    assert main(["score", "--model", str(simulated / "model.pt"), "--data", str(paths[2]), "--explain", "3",
                 "--output", str(csv), "--report", str(page), "--quiet"]) == 0
    scores = pd.read_csv(csv, dtype=str, keep_default_na=False)
    parsed = _Tables()
    parsed.feed(page.read_text())
    assert len(parsed.tables) == len(parsed.headings) >= 3
    for heading, table in zip(parsed.headings, parsed.tables, strict=True):
        line = int(re.match(r"line (\d+), score", heading).group(1))
        row = scores.iloc[line - 2]  # the data's line 1 is its header
        assert row["is_anomaly"] == "1" and heading.split("score ")[1] == _shown(row["score"])
        assert table[0] == ["feature", "value", "normal_low", "normal_high", "score_term"] and len(table) == 4
        for i, cells in enumerate(table[1:], start=1):
            assert cells == [row[f"top{i}_feature"]] + [_shown(row[f"top{i}_{part}"]) for part in table[0][1:]]
    capsys.readouterr()
    assert main(["score", "--help"]) == 0
    helptext = " ".join(capsys.readouterr().out.split())
    assert "score_term (the metric's term of the score" in helptext and "share of the score" not in helptext


def _shown(exact: str) -> str:
    """A CSV number as the report prints it (6 significant digits)."""
    return f"{float(exact):.6g}"


class _SilentGrid(InlineGrid):
    """An :class:`InlineGrid` that counts the messages sent."""

    sent = 0

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        self.sent += len(messages)
        return super().send_and_receive(messages, timeout=timeout)


def test_a_plain_flower_run_writes_only_a_new_run_folder(runs, tmp_path):
    """``flwr run`` (the ``app`` ServerApp, settings from the run config): ``output-dir`` must be absolute and
    new or empty; an earlier run folder, as an App folder from ``fedad server`` names it, is refused before any
    node is asked anything, and left as it was."""
    from fedad_tutorial.flower.server_app import _main

    _, paths, simulated, _ = runs
    before = {p: p.stat().st_mtime_ns for p in simulated.rglob("*")}
    base = {"rounds": 1, "local-epochs": 1, "min-clients": 3, "wait-timeout": 10.0}
    for output, message in ((str(simulated), "already exists, and a plain Flower run never replaces a folder"),
                            ("", "output-dir '' is not an absolute path"),
                            ("runs/plain", "output-dir 'runs/plain' is not an absolute path")):
        grid = _SilentGrid(paths)
        context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                          run_config={**base, "output-dir": output})
        with pytest.raises(UserError, match=re.escape(message)):
            _main(grid, context)
        assert grid.sent == 0
    assert {p: p.stat().st_mtime_ns for p in simulated.rglob("*")} == before
    (tmp_path / "empty").mkdir()
    _main(_SilentGrid(paths), Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                                      run_config={**base, "output-dir": str(tmp_path / "empty")}))
    assert Detector.load(tmp_path / "empty" / "model.pt").feature_range is not None
