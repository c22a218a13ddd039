"""Careless or hostile input to the `fedad` command line and the library: one line, exit 2, nothing lost.

Each test feeds one bad input and checks the exit code, the one-line message and that the user's
files are intact and no output (or leftover temporary file) was written.
"""

import errno
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PLAIN, generate_and_simulate

from fedad_tutorial.cli import main
from fedad_tutorial.csvio import read_node_csv
from fedad_tutorial.data import Split
from fedad_tutorial.detector import Detector
from fedad_tutorial.errors import RowError, UserError
from fedad_tutorial.federated import FederatedConfig, run_federated
from fedad_tutorial.models import ModelSpec
from fedad_tutorial.outputs import MARKER, is_run_dir
from fedad_tutorial.scoring import score_csv

FAST = ["--rounds", "1", "--local-epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """Three small nodes and a one-round run on them, made once for the module."""
    return generate_and_simulate(tmp_path_factory.mktemp("hard"), rows=200, features=6, seed=3, rounds=1)


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(capsys, argv, message):
    """Run the command line; assert exit 2 and one line on stderr containing ``message``; return it."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def copy_data(data: Path, target: Path) -> Path:
    target.mkdir()
    for p in data.glob("node_*.csv"):
        (target / p.name).write_bytes(p.read_bytes())
    return target


def set_cell(path: Path, line: int, text: str, column: int = 0) -> None:
    lines = path.read_text().splitlines()
    cells = lines[line - 1].split(",")
    cells[column] = text
    lines[line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".old")))


# --- outputs never destroy what the user did not ask to replace ---------------------------------------

def test_output_dir_that_is_the_data_folder_or_inside_it(flow, tmp_path, capsys):
    data = copy_data(flow[0], tmp_path / "data")
    before = snapshot(data)
    refused(capsys, ["simulate", "--data-dir", str(data), "--output-dir", str(data), *FAST], "is the input")
    refused(capsys, ["simulate", "--data-dir", str(data), "--output-dir", str(data / "run"), *FAST],
            "is inside the input")
    refused(capsys, ["simulate", "--data-dir", str(data), "--output-dir", str(tmp_path), *FAST], "contains the input")
    assert snapshot(data) == before and leftovers(tmp_path) == []


def test_output_dir_that_is_a_file_or_a_symlink(flow, tmp_path, capsys):
    precious = tmp_path / "notes.txt"
    precious.write_text("mine")
    refused(capsys, ["simulate", "--data-dir", str(flow[0]), "--output-dir", str(precious), *FAST],
            "exists and is not a folder")
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    refused(capsys, ["simulate", "--data-dir", str(flow[0]), "--output-dir", str(tmp_path / "link"), *FAST],
            "is a symbolic link")
    refused(capsys, ["simulate", "--data-dir", str(flow[0]), "--output-dir", str(precious / "run"), *FAST],
            "notes.txt: is a file, so the output folder")
    refused(capsys, ["score", "--model", str(flow[1] / "model.pt"), "--data", str(flow[0] / "node_1.csv"),
                     "--output", str(precious / "s.csv")], "notes.txt: is a file, so")
    assert precious.read_text() == "mine" and not (tmp_path / "elsewhere").exists()


def test_output_dir_that_is_the_current_folder_or_a_parent(flow, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.txt").write_text("mine")
    monkeypatch.chdir(work)
    for target in (".", "..", str(tmp_path)):
        refused(capsys, ["simulate", "--data-dir", str(flow[0]), "--output-dir", target, *FAST],
                "is the current folder or one of its parents")
    assert (work / "mine.txt").read_text() == "mine" and leftovers(work) == leftovers(tmp_path) == []


def test_output_dir_holding_the_users_files(flow, tmp_path, capsys):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "thesis.tex").write_text("mine")
    refused(capsys, ["simulate", "--data-dir", str(flow[0]), "--output-dir", str(folder), *FAST],
            "is not empty and is not a fedad run folder")
    assert snapshot(folder) == {"thesis.tex": b"mine"}


def test_a_previous_run_holding_a_users_file_is_kept(flow, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["simulate", "--data-dir", str(flow[0]), "--output-dir", str(run), *FAST]) == 0
    (run / "figures").mkdir(exist_ok=True)
    (run / "figures" / "my_plot.png").write_bytes(b"mine")
    before = snapshot(run)
    refused(capsys, ["simulate", "--data-dir", str(flow[0]), "--output-dir", str(run), *FAST],
            "is not a fedad run folder")
    assert snapshot(run) == before


def test_a_previous_run_is_replaced(flow, tmp_path):
    run = tmp_path / "run"
    assert main(["simulate", "--data-dir", str(flow[0]), "--output-dir", str(run), *FAST]) == 0
    assert (run / MARKER).is_file() and is_run_dir(run)
    (run / "history.csv").write_text("old")
    assert main(["simulate", "--data-dir", str(flow[0]), "--output-dir", str(run), *FAST]) == 0
    assert (run / "history.csv").read_text() != "old" and leftovers(tmp_path) == []
    # a run written before the marker existed is recognised by its summary.json
    (run / MARKER).unlink()
    assert is_run_dir(run)
    assert main(["simulate", "--data-dir", str(flow[0]), "--output-dir", str(run), *FAST]) == 0


def test_stale_temporaries_of_a_killed_run_are_removed(flow, tmp_path):
    run = tmp_path / "run"
    (tmp_path / ".run.ab12cd_3.tmp").mkdir()
    (tmp_path / ".run.ab12cd_3.tmp" / "model.pt").write_bytes(b"half")
    (tmp_path / ".run.zz99yy00.old").mkdir()
    keep = [tmp_path / ".run.keep.tmp", tmp_path / ".other.ab12cd_3.tmp", tmp_path / "run.ab12cd_3.tmp"]
    for p in keep:
        p.write_text("not ours")
    assert main(["simulate", "--data-dir", str(flow[0]), "--output-dir", str(run), *FAST]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in keep] + ["run"])


def test_score_output_cannot_replace_its_inputs_or_a_folder(flow, tmp_path, capsys):
    data, run = flow
    before_data, before_run = snapshot(data), snapshot(run)
    node = str(data / "node_1.csv")
    model = str(run / "model.pt")
    refused(capsys, ["score", "--model", model, "--data", node, "--output", node], "is the input")
    refused(capsys, ["score", "--model", model, "--data", node, "--output", model], "is the input")
    refused(capsys, ["score", "--model", model, "--data", node, "--output", str(tmp_path)], "is a folder")
    assert snapshot(data) == before_data and snapshot(run) == before_run


def test_generate_data_refuses_a_folder_with_other_files(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "node_1.csv").write_text("a\n1\n")
    (folder / "readme.txt").write_text("mine")
    refused(capsys, ["generate-data", "--num-nodes", "2", "--output-dir", str(folder)],
            "holds files other than node_*.csv (readme.txt)")
    assert snapshot(folder) == {"node_1.csv": b"a\n1\n", "readme.txt": b"mine"}


def test_generate_data_replaces_an_older_federation_whole(tmp_path):
    data = tmp_path / "data"
    args = ["generate-data", "--samples-per-node", "50", "--num-features", "4", "--output-dir", str(data)]
    assert main([*args, "--num-nodes", "4"]) == 0
    assert main([*args, "--num-nodes", "2"]) == 0
    assert sorted(p.name for p in data.iterdir()) == [".fedad-data", "node_1.csv", "node_2.csv"]


# --- environment failures: one line, exit 2, nothing half-written ------------------------------------

def _fail_replace(code):
    real = os.replace

    def replace(src, dst):
        if Path(dst).name.startswith("."):  # moving an old folder aside still works
            return real(src, dst)
        raise OSError(code, os.strerror(code), str(dst))

    return replace


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_disk_full_or_permission_denied(flow, tmp_path, capsys, monkeypatch, code):
    monkeypatch.setattr("fedad_tutorial.atomic.os.replace", _fail_replace(code))
    reason = os.strerror(code)
    refused(capsys, ["generate-data", "--num-nodes", "2", "--output-dir", str(tmp_path / "new" / "data")],
            f"{tmp_path / 'new' / 'data' / 'node_1.csv'}: {reason}")
    refused(capsys, ["simulate", "--data-dir", str(flow[0]), "--output-dir", str(tmp_path / "run"), *FAST],
            f"{tmp_path / 'run'}")
    refused(capsys, ["score", "--model", str(flow[1] / "model.pt"), "--data", str(flow[0] / "node_1.csv"),
                     "--output", str(tmp_path / "s.csv")], f"{tmp_path / 's.csv'}: {reason}")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no empty folder, no temporary left


def test_disk_full_while_saving_the_model(flow, tmp_path, capsys, monkeypatch):
    def full(self, data):  # a failed write() names no file
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    refused(capsys, ["simulate", "--data-dir", str(flow[0]), "--output-dir", str(tmp_path / "run"), *FAST],
            f"{tmp_path / 'run' / 'model.pt'}: No space left on device")
    assert list(tmp_path.iterdir()) == []


# --- numbers: finite in float32, with file, line and column ------------------------------------------

@pytest.mark.parametrize("value", ["1e39", "-1e300", "nan", "inf"])
def test_values_beyond_float32(flow, tmp_path, capsys, value):
    data = copy_data(flow[0], tmp_path / "data")
    set_cell(data / "node_2.csv", 7, value, column=2)
    column = (data / "node_2.csv").read_text().split(",")[2]
    where = f"node_2.csv, line 7, column '{column}'"
    refused(capsys, ["simulate", "--data-dir", str(data), "--output-dir", str(tmp_path / "o"), *FAST], where)
    refused(capsys, ["score", "--model", str(flow[1] / "model.pt"), "--data", str(data / "node_2.csv"),
                     "--output", str(tmp_path / "s.csv")], where)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_score_that_would_overflow(flow, tmp_path, capsys):
    data = copy_data(flow[0], tmp_path / "data")
    set_cell(data / "node_1.csv", 9, "1e30", column=1)
    column = (data / "node_1.csv").read_text().split(",")[1]
    refused(capsys, ["score", "--model", str(flow[1] / "model.pt"), "--data", str(data / "node_1.csv"),
                     "--output", str(tmp_path / "s.csv")], f"line 9, column '{column}': the anomaly score overflows")
    assert not (tmp_path / "s.csv").exists()


def test_scaled_values_beyond_float32_in_training():
    rng = np.random.default_rng(0)
    splits = [Split(f"n{k}", rng.normal(size=(60, 3)).astype("float32") * 0.01,
                    rng.normal(size=(20, 3)).astype("float32"), None) for k in range(2)]
    splits[1].test[4, 2] = 3e38
    with pytest.raises(UserError, match="n1: test row 4, column 'c': the scaled value overflows float32"):
        run_federated(splits, FederatedConfig(rounds=1, local_epochs=1, **PLAIN), feature_names=["a", "b", "c"],
                      progress=False)


def test_byte_order_mark_is_tolerated(flow, tmp_path):
    path = tmp_path / "node_1.csv"
    path.write_text((flow[0] / "node_1.csv").read_text(), encoding="utf-8-sig")
    assert read_node_csv(path).feature_names == read_node_csv(flow[0] / "node_1.csv").feature_names


def test_label_column_in_another_case(flow, tmp_path, capsys):
    data = copy_data(flow[0], tmp_path / "data")
    path = data / "node_1.csv"
    path.write_text(path.read_text().replace(",label\n", ",LABEL\n", 1))
    refused(capsys, ["simulate", "--data-dir", str(data), "--output-dir", str(tmp_path / "o"), *FAST],
            "node_1.csv, line 1: column 'LABEL': the label column must be named 'label'")


def test_a_cell_beyond_the_csv_field_limit(flow, tmp_path, capsys):
    data = copy_data(flow[0], tmp_path / "data")
    set_cell(data / "node_3.csv", 12, "1" * 200_000)
    refused(capsys, ["simulate", "--data-dir", str(data), "--output-dir", str(tmp_path / "o"), *FAST],
            "node_3.csv, line 12: field larger than field limit")


@pytest.mark.parametrize("kind", ["folder", "broken link"])
def test_a_node_csv_that_is_not_a_file(flow, tmp_path, capsys, kind):
    data = copy_data(flow[0], tmp_path / "data")
    odd = data / "node_4.csv"
    odd.mkdir() if kind == "folder" else odd.symlink_to(tmp_path / "gone.csv")
    refused(capsys, ["simulate", "--data-dir", str(data), "--output-dir", str(tmp_path / "o"), *FAST],
            f"node_4.csv: is {'not a file' if kind == 'folder' else 'a broken symbolic link'}")


def test_streamed_scoring_matches_and_stops_at_a_late_bad_row(flow, tmp_path):
    data, run = flow
    det = Detector.load(run / "model.pt")
    scored = score_csv(det, data / "node_2.csv", tmp_path / "s.csv", chunk_rows=37)
    whole = det.decision_function(read_node_csv(data / "node_2.csv").features)
    np.testing.assert_allclose(scored.scores, whole, rtol=1e-6)
    assert scored.labels is not None and len(scored.labels) == 200
    bad = copy_data(data, tmp_path / "bad") / "node_2.csv"
    set_cell(bad, 190, "x")
    with pytest.raises(UserError, match=r"node_2.csv, line 190, column .*'x' is not a number"):
        score_csv(det, bad, tmp_path / "t.csv", chunk_rows=37)
    assert not (tmp_path / "t.csv").exists() and leftovers(tmp_path) == []


# --- the Detector: rows and model files ----------------------------------------------------------------

def test_detector_refuses_nan_and_inf_rows(flow):
    det = Detector.load(flow[1] / "model.pt")
    rows = read_node_csv(flow[0] / "node_1.csv").features[:5].astype(np.float64)
    rows[3, 2] = np.nan
    with pytest.raises(RowError, match=f"row 3, column '{det.feature_names[2]}'"):
        det.predict(rows)
    rows[3, 2], rows[1, 0] = 0.0, 1e39
    with pytest.raises(RowError, match="row 1"):
        det.decision_function(rows)
    with pytest.raises(UserError, match="expected rows with 6 features"):
        det.check_rows(rows[:, :4])
    assert det.check_rows(rows[[0, 2, 3, 4]]).dtype == np.float32


def _damaged(run: Path, target: Path, change) -> Path:
    payload = torch.load(run / "model.pt", weights_only=True)
    payload["state_dict"] = dict(payload["state_dict"])
    change(payload)
    torch.save(payload, target)
    return target


@pytest.mark.parametrize("name, change, reason", [
    ("nan weights", lambda p: p["state_dict"]["encoder.0.weight"].fill_(math.nan), "hold NaN or infinite"),
    ("zero std", lambda p: p["scaler_std"].zero_(), "scaler std must be finite and positive"),
    ("nan threshold", lambda p: p.__setitem__("threshold", math.nan), "threshold is nan"),
    ("short scaler", lambda p: p.__setitem__("scaler_mean", p["scaler_mean"][:3]), "one value per feature"),
    ("huge spec", lambda p: p.__setitem__("spec", {**p["spec"], "hidden": [20000, 10000]}), "shapes do not match"),
])
def test_damaged_model_files(flow, tmp_path, capsys, monkeypatch, name, change, reason):
    path = _damaged(flow[1], tmp_path / "m.pt", change)
    devices = []
    real_build = ModelSpec.build
    monkeypatch.setattr(ModelSpec, "build", lambda self: devices.append(torch.get_default_device().type)
                        or real_build(self))
    err = refused(capsys, ["score", "--model", str(path), "--data", str(flow[0] / "node_1.csv"),
                           "--output", str(tmp_path / "s.csv")], "m.pt: damaged fedad model file (")
    assert reason in err
    assert devices == ["meta"]  # compared with the file's shapes, never built for real
    assert not (tmp_path / "s.csv").exists()


# --- training that diverges ----------------------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--lr", "1e6"], "training diverged: the loss became nan at round 1 on client node_"),
    (["--lr", "1e6", "--model", "vae"], "lower the learning rate (--lr, now 1e+06) or the KL weight (--beta"),
    (["--lr", "inf"], "argument --lr: must be in (0, 1000000], got inf"),
    (["--beta", "inf", "--model", "vae"], "argument --beta: must be in [0, 1000000], got inf"),
])
def test_diverging_training(flow, tmp_path, capsys, flags, message):
    refused(capsys, ["simulate", "--data-dir", str(flow[0]), "--output-dir", str(tmp_path / "o"), *FAST, *flags],
            message)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("engine", ["loop", "vectorized"])
def test_both_engines_stop_a_diverging_run(engine):
    rng = np.random.default_rng(1)
    splits = [Split(f"n{k}", rng.normal(size=(80, 4)).astype("float32"), rng.normal(size=(20, 4)).astype("float32"),
                    None) for k in range(2)]
    with pytest.raises(UserError, match="training diverged: .* at round 1 on client n0"):
        run_federated(splits, FederatedConfig(rounds=3, local_epochs=1, lr=1e6, engine=engine, trim=0.0),
                      progress=False)
