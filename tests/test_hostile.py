"""The hostile-case battery: every data path of ``fedad`` through the same families of bad input.

Paths: ``simulate``, ``run``, ``score`` (plain, ``--explain K``, ``--explain NAMES``, ``--report`` HTML and
PNG, ``--percentile``, ``--max-alarm-rate``), ``split`` (CSV and ``.npz``), ``generate-data``, and the
output folder of ``server``. Families: special files as outputs (FIFO, character device, socket,
folder), symbolic links (dangling, live, to the user's files), existing user files and folders,
names with separators, quotes, line breaks, HTML, ``$`` and bytes that are not UTF-8, empty and
all-empty rows, header bombs, huge sizes, signals and exceptions between the steps of a replacement,
and two commands on one output. Each refusal: exit 2, one line on stderr, no traceback, nothing
written, nothing of the user's changed. Each accepted file: every row and every digit kept.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import generate_and_simulate

from fedad_tutorial.atomic import atomic_dir, remove_stale
from fedad_tutorial.cli import main
from fedad_tutorial.csvio import read_table_csv, write_table_csv
from fedad_tutorial.data import hold_out, make_cloud_federation
from fedad_tutorial.detector import Detector
from fedad_tutorial.federated import FederatedConfig, run_federated
from fedad_tutorial.outputs import DATA_MARKER, output_lock
from fedad_tutorial.scoring import parse_explain, score_csv

FAST = ["--rounds", "1", "--local-epochs", "1", "--quiet"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """Three tiny nodes (60 rows, 4 features) and a one-round run on them."""
    return generate_and_simulate(tmp_path_factory.mktemp("hostile"), rows=60, features=4, seed=5, rounds=1)


def state(folder: Path) -> dict:
    """Everything under ``folder`` (hidden entries too, links not followed): type and bytes of each entry."""
    out = {}
    for p in sorted(folder.rglob("*")):
        mode = os.lstat(p).st_mode
        key = p.relative_to(folder).as_posix()
        if stat.S_ISLNK(mode):
            out[key] = ("link", os.readlink(p))
        elif stat.S_ISREG(mode):
            out[key] = ("file", p.read_bytes())
        else:
            out[key] = (stat.S_IFMT(mode), b"")
    return out


def refused(capsys, argv: list[str], message: str = "") -> str:
    """Run the command line: exit 2, exactly one line on stderr (containing ``message``), no traceback."""
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def refused_untouched(capsys, argv: list[str], folder: Path, message: str = "") -> str:
    """:func:`refused`, and ``folder`` (where the output would go) exactly as before: nothing written or lost."""
    before = state(folder)
    err = refused(capsys, argv, message)
    assert state(folder) == before
    return err


# --- special files, links and the user's own files as outputs ---------------------------------------

def _fifo(p: Path) -> None:
    os.mkfifo(p)


def _chardev(p: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a character device (mknod) needs root")
    os.mknod(p, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # the numbers of /dev/null


def _socket(p: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(p))
    sock.close()


def _folder(p: Path) -> None:
    p.mkdir()
    (p / "thesis.tex").write_text("mine")


def _user_file(p: Path) -> None:
    p.write_text("my own notes\n")


def _live_link(p: Path) -> None:
    (p.parent / "precious.txt").write_text("mine")
    p.symlink_to(p.parent / "precious.txt")


def _dangling_link(p: Path) -> None:
    p.symlink_to(p.parent / "nowhere")


def _link_to_folder(p: Path) -> None:
    (p.parent / "mine").mkdir()
    (p.parent / "mine" / "node_1.csv").write_text("a\n1\n")
    p.symlink_to(p.parent / "mine")


TARGETS = {"fifo": _fifo, "chardev": _chardev, "socket": _socket, "folder": _folder, "user-file": _user_file,
           "live-link": _live_link, "dangling-link": _dangling_link, "link-to-folder": _link_to_folder}
#: What the refusal says, for a file output (score) and for a folder output.
FILE_MESSAGES = {"fifo": "is a FIFO (named pipe), not a regular file", "chardev": "is a character device",
                 "socket": "is a socket", "folder": "is a folder", "user-file": "was not written by fedad score"}
FOLDER_MESSAGES = {"fifo": "exists and is not a folder", "chardev": "exists and is not a folder",
                   "socket": "exists and is not a folder", "user-file": "exists and is not a folder",
                   "folder": "not a fedad run folder"}


def _expected(kind: str, path: str) -> str:
    if "link" in kind:
        return "is a symbolic link"
    if path.startswith("score"):
        return FILE_MESSAGES[kind]
    if kind == "folder" and path in ("split", "generate-data"):
        return "holds files other than node_*.csv (thesis.tex)"
    return FOLDER_MESSAGES[kind]


def _paths(flow, target: Path) -> dict[str, list[str]]:
    """Every data path's command line, writing to ``target``."""
    data, run = flow
    model, node = str(run / "model.pt"), str(data / "node_1.csv")
    score = ["score", "--model", model, "--data", node]
    table = target.parent.parent / "table.csv"
    return {
        "score": [*score, "--output", str(target)],
        "score-explain": [*score, "--explain", "2", "--output", str(target)],
        "score-report-html": [*score, "--output", str(target.parent / "s.csv"), "--report", f"{target}.html"],
        "score-report-png": [*score, "--output", str(target.parent / "s.csv"), "--report", f"{target}.png"],
        "simulate": ["simulate", "--data-dir", str(data), "--output-dir", str(target), *FAST],
        "run": ["run", "--num-nodes", "2", "--output-dir", str(target), *FAST],
        "split": ["split", str(table), "--nodes", "2", "--output", str(target)],
        "generate-data": ["generate-data", "--num-nodes", "2", "--samples-per-node", "20", "--num-features", "3",
                          "--output-dir", str(target)],
    }


PATHS = ["score", "score-explain", "score-report-html", "score-report-png", "simulate", "run", "split",
         "generate-data"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", list(TARGETS))
def test_an_output_that_is_not_a_plain_new_path_is_refused(flow, tmp_path, capsys, path, kind):
    (tmp_path / "table.csv").write_bytes((flow[0] / "node_2.csv").read_bytes())
    where = tmp_path / "out"
    where.mkdir()
    target = where / "target"
    argv = _paths(flow, target)[path]
    if path.startswith("score-report"):  # the report is the hostile target
        target = Path(argv[-1])
    TARGETS[kind](target)
    refused_untouched(capsys, argv, where, _expected(kind, path))


def test_overwrite_replaces_a_users_file_and_score_replaces_its_own_outputs(flow, tmp_path, capsys):
    data, run = flow
    argv = ["score", "--model", str(run / "model.pt"), "--data", str(data / "node_1.csv"),
            "--output", str(tmp_path / "scores.csv"), "--report", str(tmp_path / "r.png")]
    (tmp_path / "scores.csv").write_text("score,notes\n1,mine\n")  # a look-alike header is not enough
    refused(capsys, argv, "was not written by fedad score")
    assert main([*argv, "--overwrite"]) == 0 and main(argv) == 0  # its own earlier output: replaced
    (tmp_path / "r.png").write_bytes(b"\x89PNG my own picture")
    refused(capsys, argv, "r.png: exists and was not written by fedad score")
    html = [*argv[:-1], str(tmp_path / "r.html")]
    assert main(html) == 0 and main(html) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.png", "scores.csv"]


@pytest.mark.parametrize("path", ["split", "generate-data"])
def test_a_folder_of_the_users_own_node_csvs_is_never_replaced(flow, tmp_path, capsys, path):
    (tmp_path / "table.csv").write_bytes((flow[0] / "node_2.csv").read_bytes())
    mine = tmp_path / "w" / "mine"
    mine.mkdir(parents=True)
    for k in range(1, 6):  # the very names simulate asks for
        (mine / f"node_{k}.csv").write_text(f"a,b\n{k},2\n")
    refused_untouched(capsys, _paths(flow, mine)[path], tmp_path / "w", "fedad did not write")
    # its own earlier output (with the marker) is replaced whole
    own = tmp_path / "w" / "own"
    assert main(_paths(flow, own)[path]) == 0 and (own / DATA_MARKER).is_file()
    assert main(_paths(flow, own)[path]) == 0


@pytest.mark.parametrize("sub", ["flower", "figures", "tensorboard"])
def test_a_run_folder_with_user_files_in_any_sub_folder_is_kept(flow, tmp_path, capsys, sub):
    run = tmp_path / "w" / "run"
    run.parent.mkdir()
    assert main(["simulate", "--data-dir", str(flow[0]), "--output-dir", str(run), *FAST]) == 0
    (run / sub).mkdir(exist_ok=True)
    (run / sub / "notes.txt").write_text("mine")
    refused_untouched(capsys, ["simulate", "--data-dir", str(flow[0]), "--output-dir", str(run), *FAST],
                      tmp_path / "w", "not a fedad run folder")
    # Flower's own state (its home and app folders, logs) does not stop a replacement
    (run / sub / "notes.txt").unlink()
    if sub == "flower":
        (run / "flower" / "home" / ".flwr").mkdir(parents=True)
        (run / "flower" / "superlink.log").write_text("log")
    assert main(["simulate", "--data-dir", str(flow[0]), "--output-dir", str(run), *FAST]) == 0


INPUTS = {"fifo": _fifo, "chardev": _chardev, "socket": _socket}


@pytest.mark.parametrize("path", ["score-data", "score-model", "simulate", "split-csv", "split-npz"])
@pytest.mark.parametrize("kind", list(INPUTS))
def test_an_input_that_is_a_special_file_is_refused_without_reading(flow, tmp_path, capsys, path, kind):
    data, run = flow
    special = tmp_path / "in" / ("node_1.npz" if path == "split-npz" else "node_1.csv")
    special.parent.mkdir()
    INPUTS[kind](special)
    (tmp_path / "in" / "node_2.csv").write_bytes((data / "node_2.csv").read_bytes())
    out = str(tmp_path / "out")
    score = ["score", "--output", out]
    argv = {"score-data": [*score, "--model", str(run / "model.pt"), "--data", str(special)],
            "score-model": [*score, "--model", str(special), "--data", str(data / "node_1.csv")],
            "simulate": ["simulate", "--data-dir", str(special.parent), "--output-dir", out, *FAST],
            "split-csv": ["split", str(special), "--nodes", "2", "--output", out],
            "split-npz": ["split", str(special), "--nodes", "2", "--output", out]}[path]
    refused_untouched(capsys, argv, tmp_path, "node_1.")  # a FIFO read would block: refused before opening


# --- names: separators, quotes, line breaks, HTML, $, non-UTF-8 ----------------------------------------

HOSTILE_NAMES = ["cpu,avg", "mem\nused", 'say "hi"', "<b>x</b>&amp;", "$x_$", "naïve ∑", "a\rb", "c;d\t'e'"]


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    """Two nodes whose columns carry every hostile name, and a one-round run on them."""
    root = tmp_path_factory.mktemp("names")
    rng = np.random.default_rng(0)
    data = root / "data"
    data.mkdir()
    for k in (1, 2):
        rows = rng.normal(size=(40, len(HOSTILE_NAMES)))
        rows[:2] += 8.0  # two obvious anomalies per node
        labels = (np.arange(40) < 2).astype(int)
        with open(data / f"node_{k}.csv", "w", newline="") as handle:
            writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
            writer.writerow([*HOSTILE_NAMES, "label"])
            writer.writerows([[*map(repr, r), str(y)] for r, y in zip(rows.tolist(), labels, strict=True)])
    run = root / "run"
    assert main(["simulate", "--data-dir", str(data), "--output-dir", str(run), *FAST]) == 0
    return data, run


def read_back(path: Path) -> tuple[list[str], int]:
    """Header and number of rows of a CSV as the csv module and pandas read it; both must agree."""
    with open(path, newline="", encoding="utf-8") as handle:
        records = list(csv.reader(handle))
    frame = pd.read_csv(path)
    assert records[0] == list(frame.columns), (records[0], list(frame.columns))
    assert len(records) - 1 == len(frame) and all(len(r) == len(records[0]) for r in records)
    return records[0], len(frame)


@pytest.mark.parametrize("explain", [None, "3", "$x_$,naïve ∑"])
def test_hostile_names_survive_score_and_explain(named, tmp_path, capsys, explain):
    data, run = named
    out = tmp_path / "scores.csv"
    argv = ["score", "--model", str(run / "model.pt"), "--data", str(data / "node_1.csv"), "--output", str(out),
            "--percentile", "90"]
    assert main(argv + (["--explain", explain] if explain else [])) == 0
    header, rows = read_back(out)
    assert rows == 40
    frame = pd.read_csv(out, keep_default_na=False)
    if explain == "3":
        named_cells = {v for c in header if c.endswith("_feature") for v in frame[c] if v}
        assert named_cells and named_cells <= set(HOSTILE_NAMES), named_cells
    elif explain:
        assert any(c.startswith("$x_$_") for c in header) and any(c.startswith("naïve ∑_") for c in header)


@pytest.mark.parametrize("suffix", [".html", ".png"])
def test_hostile_names_in_a_report_are_escaped(named, tmp_path, suffix):
    data, run = named
    # a data file whose name is mathtext, HTML and bytes that are not UTF-8
    odd = Path(os.fsdecode(str(tmp_path).encode() + b"/$x_$<i>\xff\xfe.csv"))
    odd.write_bytes((data / "node_1.csv").read_bytes())
    report = tmp_path / f"report{suffix}"
    assert main(["score", "--model", str(run / "model.pt"), "--data", str(odd), "--output",
                 str(tmp_path / "s.csv"), "--report", str(report), "--percentile", "90", "--quiet"]) == 0
    if suffix == ".html":
        page = report.read_text(encoding="utf-8")
        assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page and "<i>" not in page
    else:
        assert report.read_bytes()[:4] == b"\x89PNG"


def test_hostile_names_survive_split(named, tmp_path):
    out = tmp_path / "nodes"
    assert main(["split", str(named[0] / "node_1.csv"), "--nodes", "2", "--output", str(out)]) == 0
    for k in (1, 2):
        header, rows = read_back(out / f"node_{k}.csv")
        assert header == [*HOSTILE_NAMES, "label"] and rows == 20


ODD_NAMES = {"comma": b"a,b", "newline": b"a\nb", "quote": b"say \"hi\"", "html": b"<i>x&amp;", "dollar": b"$x_$",
             "not utf-8": b"\xff\xfe", "spaces": b" lead and trail "}


@pytest.mark.parametrize("path", ["score", "split", "generate-data", "simulate"])
@pytest.mark.parametrize("name", list(ODD_NAMES))
def test_odd_output_names_are_written_exactly_there(flow, tmp_path, capsys, path, name):
    (tmp_path / "table.csv").write_bytes((flow[0] / "node_2.csv").read_bytes())
    where = tmp_path / "out"
    where.mkdir()
    target = Path(os.fsdecode(bytes(where) + b"/" + ODD_NAMES[name]))
    assert main(_paths(flow, target)[path]) == 0
    assert [p.name for p in where.iterdir()] == [target.name]
    out = capsys.readouterr().out
    assert out.count("\n") >= 1 and "Traceback" not in out


@pytest.mark.parametrize("path", ["score", "simulate", "split"])
def test_a_name_with_a_line_break_keeps_an_error_on_one_line(flow, tmp_path, capsys, path):
    odd = tmp_path / "in\nput"
    odd.mkdir()
    bad = odd / "node_1.csv"
    bad.write_text("a,b\n1,x\n2,3\n")
    (odd / "node_2.csv").write_text("a,b\n1,2\n2,3\n")
    argv = {"score": ["score", "--model", str(flow[1] / "model.pt"), "--data", str(bad)],
            "simulate": ["simulate", "--data-dir", str(odd), *FAST],
            "split": ["split", str(bad), "--nodes", "1"]}[path]
    flag = {"score": "--output", "simulate": "--output-dir", "split": "--output"}[path]
    refused_untouched(capsys, [*argv, flag, str(tmp_path / "o")], tmp_path, "in\\nput")


def test_explain_takes_ascii_digits_only(flow, tmp_path, capsys):
    assert parse_explain(" 2 ") == 2 and parse_explain("²") == ["²"]
    data, run = flow
    refused_untouched(capsys, ["score", "--model", str(run / "model.pt"), "--data", str(data / "node_1.csv"),
                               "--output", str(tmp_path / "s.csv"), "--explain", "²"], tmp_path, "unknown feature '²'")


# --- every digit kept -----------------------------------------------------------------------------------

def _bits(values) -> set[bytes]:
    return {np.asarray(r, dtype=np.float64).tobytes() for r in values}


def test_split_keeps_every_digit_of_an_npz_and_a_csv(tmp_path):
    i = np.arange(20.0)
    x = np.column_stack([1.7e9 + i, 1234567 + i, np.full(20, 0.123456789), 1 / (3 + i)])
    np.savez(tmp_path / "t.npz", X=x, y=(i % 10 == 0).astype(int))
    assert main(["split", str(tmp_path / "t.npz"), "--nodes", "2", "--output", str(tmp_path / "a")]) == 0
    got = [read_table_csv(tmp_path / "a" / f"node_{k}.csv", np.float64)[1] for k in (1, 2)]
    assert _bits(np.vstack(got)) == _bits(x) and len(_bits(x)) == 20
    # the CSV written is itself split again without loss
    write_table_csv(tmp_path / "t.csv", ["a", "b", "c", "d"], x)
    assert main(["split", str(tmp_path / "t.csv"), "--nodes", "2", "--output", str(tmp_path / "b")]) == 0
    got = [read_table_csv(tmp_path / "b" / f"node_{k}.csv", np.float64)[1] for k in (1, 2)]
    assert _bits(np.vstack(got)) == _bits(x)


def test_generated_and_scored_numbers_read_back_bit_for_bit(flow, tmp_path):
    data, run = flow
    nodes = make_cloud_federation(num_nodes=3, samples_per_node=60, num_features=4, seed=5)
    for node in nodes:
        names, features, labels = read_table_csv(data / f"{node.name}.csv")
        assert features.dtype == np.float32 and features.tobytes() == node.features.tobytes()
        assert labels.tolist() == node.labels.tolist()
    detector = Detector.load(run / "model.pt")
    scored = score_csv(detector, data / "node_1.csv", tmp_path / "s.csv", explain=2, threshold=0.0)
    with open(tmp_path / "s.csv", newline="") as handle:
        header, *records = list(csv.reader(handle))
    scores = np.array([float(r[header.index("score")]) for r in records])
    assert scores.tobytes() == scored.scores.astype(np.float64).tobytes()
    value = next(j for j, c in enumerate(header) if c.endswith("_value"))
    assert {np.float32(r[value]) for r in records} <= set(nodes[0].features.ravel().tolist())


def test_history_csv_keeps_every_digit(tmp_path):
    nodes = make_cloud_federation(num_nodes=2, samples_per_node=40, num_features=3, seed=0)
    result = run_federated(hold_out(nodes), FederatedConfig(rounds=2, local_epochs=1))
    result.write_history_csv(tmp_path / "history.csv")
    with open(tmp_path / "history.csv", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    checked = 0
    for record, row in zip(result.records(), rows, strict=True):
        for column, cell in zip(header, row, strict=True):
            value = record.get(column)
            if isinstance(value, float) and value == value:
                assert float(cell) == value, (column, cell, value)
                checked += 1
    assert checked >= 20


# --- every row accounted for ---------------------------------------------------------------------------

ROWS = {"empty line": "\n", "all-empty cells": ",,,,\n", "wrong count of empty cells": ",,\n",
        "spaces only": " , , , ,\n", "one cell short": "1,2,3,0\n"}


def _with_row(source: Path, target: Path, extra: str, at: int = 10) -> int:
    lines = source.read_text().splitlines(keepends=True)
    target.write_text("".join(lines[:at] + [extra] + lines[at:]))
    return at + 1


@pytest.mark.parametrize("row", list(ROWS))
@pytest.mark.parametrize("path", ["score", "simulate", "split"])
def test_an_empty_or_malformed_row_is_named_never_skipped(flow, tmp_path, capsys, row, path):
    data, run = flow
    bad = tmp_path / "in" / "node_1.csv"
    bad.parent.mkdir()
    line = _with_row(data / "node_1.csv", bad, ROWS[row])
    (tmp_path / "in" / "node_2.csv").write_bytes((data / "node_2.csv").read_bytes())
    out = tmp_path / "out"
    argv = {"score": ["score", "--model", str(run / "model.pt"), "--data", str(bad), "--output", str(out)],
            "simulate": ["simulate", "--data-dir", str(bad.parent), "--output-dir", str(out), *FAST],
            "split": ["split", str(bad), "--nodes", "2", "--output", str(out)]}[path]
    refused_untouched(capsys, argv, tmp_path, f"node_1.csv, line {line}")


@pytest.mark.parametrize("form", ["plain", "crlf", "bom", "quoted-header", "no-final-newline"])
def test_every_accepted_row_gets_one_score(flow, tmp_path, form):
    data, run = flow
    text = (data / "node_1.csv").read_text()
    rows = text.count("\n") - 1
    if form == "crlf":
        text = text.replace("\n", "\r\n")
    elif form == "bom":
        text = "\ufeff" + text
    elif form == "quoted-header":
        header, rest = text.split("\n", 1)
        text = ",".join(f'"{h}"' for h in header.split(",")) + "\n" + rest
    elif form == "no-final-newline":
        text = text.rstrip("\n")
    (tmp_path / "in.csv").write_bytes(text.encode())
    assert main(["score", "--model", str(run / "model.pt"), "--data", str(tmp_path / "in.csv"), "--output",
                 str(tmp_path / "s.csv"), "--explain", "1"]) == 0
    assert read_back(tmp_path / "s.csv")[1] == rows == 60


# --- header bombs and huge sizes -----------------------------------------------------------------------

def test_column_mismatches_are_short_and_say_which(flow, tmp_path, capsys):
    data, run = flow
    wide = tmp_path / "wide"
    wide.mkdir()
    names = [f"m{j}" for j in range(2000)]
    (wide / "node_1.csv").write_text(",".join(names) + "\n" + (",".join(["1"] * 2000) + "\n") * 2)
    (wide / "node_2.csv").write_text(",".join(names[:1999] + ["z"]) + "\n" + (",".join(["1"] * 2000) + "\n") * 2)
    err = refused(capsys, ["simulate", "--data-dir", str(wide), "--output-dir", str(tmp_path / "o"), *FAST],
                  "2000 columns, expected 2000; missing 'm1999'; unexpected 'z'")
    assert len(err) < 400
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    (swapped / "node_1.csv").write_text("a,b,c,d\n" + "1,2,3,4\n" * 2)
    (swapped / "node_2.csv").write_text("a,c,b,d\n" + "1,2,3,4\n" * 2)
    refused(capsys, ["simulate", "--data-dir", str(swapped), "--output-dir", str(tmp_path / "o"), *FAST],
            "4 columns, expected 4; the same names in another order: column 2 is 'c', expected 'b'")
    err = refused(capsys, ["score", "--model", str(run / "model.pt"), "--data", str(wide / "node_1.csv"),
                           "--output", str(tmp_path / "s.csv")], "2000 columns, expected 4; missing")
    assert "(1995 more)" in err and len(err) < 400


def _npy_header(shape: tuple, descr: str = "<f8") -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


NPZ = {
    "npy renamed npz": (lambda p: p.write_bytes(_npy_header((3, 2)) + b"\0" * 48), "single .npy array"),
    "claims 1e12 rows": (lambda p: _zip(p, {"X.npy": _npy_header((10**12, 4)) + b"\0" * 64}), "damaged or forged"),
    "header bomb": (lambda p: _zip(p, {"X.npy": b"\x93NUMPY\x02\x00" + struct.pack("<I", 10**6) + b" " * 10**6}),
                    "not a readable .npz"),
    "object array": (lambda p: np.savez(p, X=np.array([[{"a": 1}]], dtype=object)), "Python objects"),
    "text": (lambda p: p.write_text("X,y\n1,0\n"), "not a readable .npz"),
    "truncated data": (lambda p: _zip(p, {"X.npy": _npy_header((4, 2)) + b"\0" * 16}), "damaged or forged"),
    "empty zip": (lambda p: _zip(p, {}), "expected an array 'X'"),
}


@pytest.mark.parametrize("case", list(NPZ))
def test_npz_headers_are_checked_before_loading(tmp_path, capsys, case):
    make, message = NPZ[case]
    make(tmp_path / "t.npz")
    refused_untouched(capsys, ["split", str(tmp_path / "t.npz"), "--nodes", "2", "--output", str(tmp_path / "o")],
                      tmp_path, message)


def test_an_npz_beyond_the_memory_budget_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    np.savez(tmp_path / "t.npz", X=np.ones((100, 10)))
    monkeypatch.setattr("fedad_tutorial.limits.memory_budget", lambda: 10_000)
    refused_untouched(capsys, ["split", str(tmp_path / "t.npz"), "--nodes", "2", "--output", str(tmp_path / "o")],
                      tmp_path, "t.npz: array 'X' of shape (100, 10) would need 15.6 KiB of memory")


@pytest.mark.parametrize("flags", [["--num-nodes", "1", "--samples-per-node", "1000000000"],
                                   ["--num-nodes", "1000000000"],
                                   ["--num-nodes", "1", "--samples-per-node", "1000", "--num-features", "1000000000"]])
def test_generate_data_sizes_beyond_memory_are_refused_before_allocating(tmp_path, capsys, flags):
    refused_untouched(capsys, ["generate-data", *flags, "--output-dir", str(tmp_path / "d")], tmp_path,
                      "of memory, more than this machine can give")


# --- messages that are true -------------------------------------------------------------------------------

def test_messages_say_what_happened(flow, tmp_path, capsys):
    data, run = flow
    nolabel = tmp_path / "nolabel"
    nolabel.mkdir()
    for k in (1, 2):
        pd.read_csv(data / f"node_{k}.csv").drop(columns="label").to_csv(nolabel / f"node_{k}.csv", index=False)
    assert main(["simulate", "--data-dir", str(nolabel), "--output-dir", str(tmp_path / "r"), *FAST]) == 0
    out = capsys.readouterr().out
    assert "figures" not in out and not (tmp_path / "r" / "figures").exists()
    score = ["score", "--model", str(run / "model.pt"), "--output", str(tmp_path / "s.csv")]
    assert main([*score, "--data", str(data / "node_1.csv"), "--percentile", "99.9999999"]) == 0
    assert "the 99.9999999th percentile" in capsys.readouterr().out
    normal = tmp_path / "normal.csv"
    frame = pd.read_csv(data / "node_1.csv")
    frame[frame.label == 0].to_csv(normal, index=False)
    assert main([*score, "--data", str(normal)]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out and "ROC-AUC undefined (every row is labelled normal)" in out


# --- signals and exceptions between the steps of a replacement -----------------------------------------------

def _old_and_new(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.pt").write_text("old")
    return out


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, OSError])
@pytest.mark.parametrize("step", [1, 2])
def test_an_exception_between_the_renames_keeps_the_old_folder(tmp_path, monkeypatch, exc, step):
    out = _old_and_new(tmp_path)
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == step:
            raise exc()
        return real(src, dst)

    monkeypatch.setattr("fedad_tutorial.atomic.os.replace", replace)
    with pytest.raises(exc), atomic_dir(out) as tmp:
        (tmp / "model.pt").write_text("new")
    assert state(tmp_path) == {"out": state(tmp_path)["out"], "out/model.pt": ("file", b"old")}


_CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import fedad_tutorial.atomic as atomic
    real = os.replace
    def replace(src, dst):
        real(src, dst)
        if Path(dst).parent.name.endswith(".old"):  # the old folder is aside, the new one not yet in place
            print("between", flush=True)
            time.sleep(float(sys.argv[2]))
    atomic.os.replace = replace
    with atomic.atomic_dir(sys.argv[1]) as tmp:
        (tmp / "model.pt").write_text("new")
    print("done", flush=True)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_between_the_renames_waits_for_the_second(tmp_path, sig):
    out = _old_and_new(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(out), "1"], stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout.readline() == "between\n"
    child.send_signal(sig)
    child.wait(timeout=60)
    assert child.returncode != 0  # the signal still stops it, after the swap
    assert state(tmp_path) == {"out": state(tmp_path)["out"], "out/model.pt": ("file", b"new")}


def test_a_kill_between_the_renames_is_restored_by_the_next_command(tmp_path, flow, capsys):
    out = _old_and_new(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(out), "60"], stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout.readline() == "between\n"
    child.kill()
    child.wait(timeout=60)
    assert not out.exists()  # what a kill -9 leaves: the old folder aside, the new one not in place
    refused(capsys, ["simulate", "--data-dir", str(flow[0]), "--output-dir", str(out), *FAST],
            "is not empty and is not a fedad run folder")  # it is the old folder again, checked as such
    assert state(tmp_path) == {"out": state(tmp_path)["out"], "out/model.pt": ("file", b"old")}
    assert remove_stale(out) == []


# --- two commands on one output -------------------------------------------------------------------------------

_HOLDER = textwrap.dedent("""
    import sys, time
    from fedad_tutorial.outputs import output_lock
    with output_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(60)
""")


@pytest.mark.parametrize("path", [*PATHS, "server"])
def test_two_commands_never_write_one_output_at_once(flow, tmp_path, capsys, path):
    (tmp_path / "table.csv").write_bytes((flow[0] / "node_2.csv").read_bytes())
    where = tmp_path / "out"
    where.mkdir()
    target = where / "target"
    argv = _paths(flow, target).get(path) or ["server", "--insecure", "--output-dir", str(target),
                                              "--address", "127.0.0.1:1", "--quiet"]
    locked = Path(argv[-1]) if path.startswith("score-report") else target
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(locked)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline() == "held\n"
        refused_untouched(capsys, argv, where, "another fedad command is writing it now")
    finally:
        holder.kill()
        holder.wait()
    with output_lock(locked):  # a killed holder's lock is free again, and its file goes with the next holder
        pass
    assert list(where.iterdir()) == []


def test_a_lock_file_that_is_a_link_or_fifo_is_refused(tmp_path, capsys):
    os.mkfifo(tmp_path / ".d.lock")
    refused(capsys, ["generate-data", "--num-nodes", "1", "--output-dir", str(tmp_path / "d")], ".d.lock")
    (tmp_path / ".d.lock").unlink()
    (tmp_path / ".d.lock").symlink_to(tmp_path / "elsewhere")
    refused(capsys, ["generate-data", "--num-nodes", "1", "--output-dir", str(tmp_path / "d")], ".d.lock")
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "d").exists()
