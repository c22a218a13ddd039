"""The prose quotes only numbers its outputs print: every solution notebook, README.md and docs/*.md.

The rules are in ``tests/prose_check.py``'s docstring. The learner copies share the solution notebooks' prose,
so the solutions are checked. The planted-number tests prove the check can fail.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import prose_check
import pytest

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((REPO / "notebooks" / "solutions").glob("*.ipynb"))
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _report(findings: list[prose_check.Finding]) -> str:
    return "\n".join(str(f) for f in findings)


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_notebook_prose_is_backed(path: Path) -> None:
    findings = prose_check.check_path(path)
    assert not findings, f"{path.name}: numbers in the prose that no output, code or results file backs:\n" \
                         + _report(findings)


@pytest.mark.parametrize("path", PAGES, ids=[p.name for p in PAGES])
def test_page_numbers_are_backed(path: Path) -> None:
    findings = prose_check.check_path(path)
    assert not findings, f"{path.name}: numbers neither in a cited results file, generated, nor dated:\n" \
                         + _report(findings)


def _notebook() -> dict:
    return json.loads((REPO / "notebooks" / "solutions" / "04_federated_averaging.ipynb").read_text())


def _printed_decimal(nb: dict) -> str:
    """A number with three decimals that a code cell of ``nb`` prints."""
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            m = re.search(r"(?<![\d.])0\.\d{3}(?!\d)", prose_check._output_text(o))
            if m:
                return m.group(0)
    raise AssertionError("no printed three-decimal number")


def _with_markdown(nb: dict, text: str) -> dict:
    planted = copy.deepcopy(nb)
    planted["cells"].append({"cell_type": "markdown", "metadata": {}, "source": [text]})
    return planted


def test_a_quoted_output_is_backed_and_a_stale_one_is_reported() -> None:
    nb = _notebook()
    printed = _printed_decimal(nb)
    planted_cell = len(nb["cells"])

    def planted_findings(text: str) -> list[str]:
        return [f.number for f in prose_check.check_notebook(_with_markdown(nb, text)) if f.cell == planted_cell]

    assert planted_findings(f"The table shows F1 {printed}.") == []
    stale = f"{float(printed) + 0.0371:.3f}"
    assert planted_findings(f"The table shows F1 {stale}.") == [stale]
    # backed only at another precision: one more digit than printed is not backed
    assert planted_findings(f"The table shows F1 {printed}0.") == [f"{printed}0"]


def test_a_changed_number_in_a_real_cell_is_reported() -> None:
    """Take a markdown cell whose numbers are all backed, change one of them: the check names it."""
    nb = _notebook()
    backing = prose_check.notebook_backing(nb)
    for i, c in enumerate(nb["cells"]):
        text = "".join(c["source"])
        quoted = prose_check.quoted_numbers(text) if c["cell_type"] == "markdown" else []
        decimals = [q for q in quoted if q.decimals >= 2 and not q.approx]
        if decimals and not prose_check.check_markdown(text, backing):
            q = decimals[0]
            changed = f"{q.value + 0.5:.{q.decimals}f}"
            planted = copy.deepcopy(nb)
            planted["cells"][i]["source"] = [text[:q.start] + changed + text[q.start + len(q.text):]]
            findings = prose_check.check_notebook(planted)
            assert [(f.cell, f.number) for f in findings if f.cell == i] == [(i, changed)]
            return
    raise AssertionError("no fully backed markdown cell with a decimal to plant into")


def test_precision_and_rounding() -> None:
    backing = "mean F1 0.7968, 12 rows, share 0.1234, wall 28.46 s, 0.3"
    cases = {
        "F1 0.797": True,        # rounds
        "F1 0.80": True,         # rounds at two decimals
        "F1 0.796": False,       # truncated, not rounded
        "F1 0.7968": True,
        "F1 0.79680": False,     # more precision than printed
        "about 0.80": True,
        "F1 0.8": True,
        "share 0.30 of": False,  # 0.3 is printed with one decimal only
        "share 0.3 of": True,
        "12.3 % of rows": True,  # a fraction backs a percentage
        "13 % of rows": False,
        "about 12.9 % of rows": True,  # within 5 % of 12.34
        "about 30 s": False,     # one significant digit: 5 % only
        "about 29 s": True,
        "about 28.9 s": True,    # 28.46 rounds to 28.9 at one digit less (28.5)
        "about 25 s": True,      # two digits: 20..30
        "about 22 s": False,
        "about 0.5": False,      # not "anything from 0 to 1"
        "≈ 0.75": True,          # 0.7968 is within 0.05: one digit less
        "≈ 0.74": False,
        "~0.79": True,
        "roughly 0.83": True,    # 0.7968 within 5 %
        "around 0.85": False,
        "about 0.78 against 0.74": False,  # the word covers the number right after it only
    }
    for prose, backed in cases.items():
        findings = prose_check.check_markdown(prose, backing)
        assert (not findings) is backed, prose


def test_references_are_not_quantities() -> None:
    text = ("Chapter 13's table, notebooks 02 (autoencoder), 03 (VAE) and 13, exercise 14.5, section 4, "
            "the 95th percentile, Ruff et al. (2018), Tax and Duin, 2004, round 1, seeds 0-4, exit code 2.\n\n"
            "## 4. Deep SVDD\n\n1. **Bias terms.** `rounds=30` and $\\varepsilon = 0.1$.\n")
    assert not prose_check.check_markdown(text, "")
    assert [f.number for f in prose_check.check_markdown("It took 17 rounds.", "")] == ["17"]


def test_a_dated_measurement_covers_its_sentence_only() -> None:
    text = ("The install took 2 min 27 s (measured 2026-12-06 on a 2-core AMD EPYC, AVX2). "
            "The run took 8.2 s.\n")
    findings = prose_check.check_markdown(text, "", allow_marker=True)
    assert [f.number for f in findings] == ["8.2"]
    assert [f.number for f in prose_check.check_markdown(text, "")] == ["2", "27", "8.2"]
    older = "The run took 8.2 s (measured before 2026-11-28 on a 2-core AMD EPYC).\n"
    assert not prose_check.check_markdown(older, "", allow_marker=True)
    marker = " (measured 2026-12-06 on a 2-core Xeon)"
    table = "| case | wall s |\n| --- | --- |\n| loop | 9.26 |\n| vectorized | 1.32 |\n"
    in_row = table.replace("| loop |", f"| loop{marker} |")
    assert [f.number for f in prose_check.check_markdown(in_row, "", allow_marker=True)] == ["1.32"]
    in_header = table.replace("| case |", f"| case{marker} |")
    assert not prose_check.check_markdown(in_header, "", allow_marker=True)
    intro = f"Timed{marker}:\n\n" + table
    assert not prose_check.check_markdown(intro, "", allow_marker=True)
    assert len(prose_check.check_markdown(intro.replace(":\n", ".\n", 1), "", allow_marker=True)) == 2
    undated = "The install took 2 min 27 s (measured on a 2-core machine).\n"
    assert [f.number for f in prose_check.check_markdown(undated, "", allow_marker=True)] == ["2", "27", "2"]


def test_a_results_file_backs_the_cell_that_names_it(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "table.csv").write_text("method,roc_auc\nae,0.9132\n")
    (results / "page.md").write_text("ROC-AUC 0.9132\n")
    assert not prose_check.check_markdown("ROC-AUC 0.913 (`results/table.csv`).", "", base=tmp_path)
    assert prose_check.check_markdown("ROC-AUC 0.913.", "", base=tmp_path)
    assert prose_check.check_markdown("ROC-AUC 0.913 (`results/page.md`: prose, not a table).", "", base=tmp_path)
    stored = "ROC-AUC 0.790 ([the panel](../benchmarks/results/real_panel.md))."
    assert not prose_check.check_markdown(stored, "", base=REPO / "docs")
    assert prose_check.check_markdown(stored.replace("0.790", "0.819"), "", base=REPO / "docs")


def test_command_line_reports_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\nIt took 17 rounds.\n")
    assert prose_check.main([str(page)]) == 1
    out = capsys.readouterr().out
    assert "line 3: '17'" in out
    page.write_text("# Title\n\nNo figures here.\n")
    assert prose_check.main([str(page)]) == 0


@pytest.mark.slow
def test_the_synthetic_table_is_what_the_reference_runs_give(reference_runs: dict) -> None:
    """docs/results.md quotes benchmarks/results/synthetic.md; its plain rows are the ``reference_runs``
    fixture's configuration (vectorized engine, local thresholds, no trimming), so they must agree with a
    fresh run. Margins: ROC-AUC moves in the third decimal, F1/precision/recall by a few hundredths between
    CPUs with different instruction sets (a handful of held-out rows per client change sides of the
    threshold)."""
    import csv

    rows = {r["training"]: r for r in csv.DictReader((REPO / "benchmarks" / "results" / "synthetic.csv").open())}
    quoted = {"federated": rows["federated (FedAvg)"],
              "centralized": rows["centralized (pooled rows, same passes per row)"],
              "local": rows["local-only (each client alone)"]}
    for mode, row in quoted.items():
        summary = reference_runs[mode].summary()
        assert abs(summary["roc_auc"] - float(row["roc_auc"])) <= 0.005, mode
        for metric in ("f1", "precision", "recall"):
            assert abs(summary[metric] - float(row[metric])) <= 0.04, (mode, metric)


def test_far_backing_is_noted_and_near_backing_is_not() -> None:
    def code(text: str) -> dict:
        return {"cell_type": "code", "metadata": {}, "source": ["print()"],
                "outputs": [{"output_type": "stream", "name": "stdout", "text": [text]}]}

    def markdown(text: str) -> dict:
        return {"cell_type": "markdown", "metadata": {}, "source": [text]}

    nb = {"cells": [code("F1 0.8123"), markdown("Intro."), code("ROC-AUC 0.9456"),
                    markdown("F1 0.812 and ROC-AUC 0.946.")]}
    assert not prose_check.check_notebook(nb)
    assert [(f.cell, f.number) for f in prose_check.far_backed(nb)] == [(3, "0.812")]
