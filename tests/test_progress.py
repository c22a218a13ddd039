"""Progress on the command line: a bar only on a terminal, plain lines in a log, and ``--quiet`` hides only that."""

from __future__ import annotations

import io

import pytest

from fedad_tutorial import progress
from fedad_tutorial.cli import main

RUN = ["run", "--num-nodes", "3", "--rounds", "10", "--local-epochs", "1"]


class _Clock:
    """A clock the test moves by hand (no timing in unit tests)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_every_tenth_and_at_most_every_interval(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    out = io.StringIO()
    lines = progress.ProgressLines(100, "rounds", "round", False, out)
    lines.update(5)  # before DELAY: nothing yet
    assert out.getvalue() == ""
    clock.now = progress.DELAY
    lines.update(1)
    lines.update(1)  # still the same tenth, soon after: no second line
    clock.now += progress.LINE_INTERVAL
    lines.update(1)  # same tenth, but a while later: a line
    for _ in range(12):
        lines.update(1)  # into the next tenth and the one after: one line each
    assert out.getvalue().splitlines() == ["rounds: 6/100 (6%), 2 s", "rounds: 8/100 (8%), 32 s",
                                           "rounds: 10/100 (10%), 32 s", "rounds: 20/100 (20%), 32 s"]
    sized = io.StringIO()
    scoring = progress.ProgressLines(2_500_000, "scoring x.csv", "B", True, sized)
    clock.now += 3
    scoring.update(2_500_000)
    assert sized.getvalue() == "scoring x.csv: 2.50M/2.50M B (100%), 3 s\n"


@pytest.mark.parametrize("terminal", [True, False])
def test_a_bar_only_on_a_terminal(monkeypatch, terminal):
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: terminal)
    bar = progress.progress_bar(10, "rounds", "round")
    assert isinstance(bar, progress.ProgressLines) is not terminal
    bar.close()


def test_run_with_stderr_in_a_file_writes_lines_without_carriage_returns(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(progress, "DELAY", 0)  # the progress shows at once, as it does in a run that lasts
    assert main([*RUN, "--output-dir", str(tmp_path / "run")]) == 0
    out, err = capsys.readouterr()
    assert "\r" not in err and "\r" not in out
    assert [line.split(",")[0] for line in err.splitlines()] == [f"rounds: {k}/10 ({10 * k}%)" for k in range(1, 11)]
    assert "mean" in out and "Wrote" in out


def test_quiet_hides_the_progress_not_the_results(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(progress, "DELAY", 0)
    assert main([*RUN, "--output-dir", str(tmp_path / "run"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    table = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert [str(k) for k in range(1, 11)] == [t for t in table if t.isdigit()]  # the per-round table
    assert "mean" in table and any(line.startswith("Wrote") for line in out.splitlines())
