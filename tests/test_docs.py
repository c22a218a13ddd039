"""The commands the README and docs/*.md show are the commands that run: each block is executed as written.

Every fenced ``bash``, ``sh`` and ``python`` block of README.md and docs/*.md is read from the Markdown when
the tests are collected (never copied here) and becomes one test, run in a fresh temporary folder with this
checkout's ``fedad`` and ``python`` first on PATH, so what a block writes (data, runs, keys) lands there.
A shell block runs under ``bash -e -o pipefail``: the first failing command fails the test.

An HTML comment on the line right before a block says how to run it (invisible on GitHub); clauses are
separated by ``;``:

- ``<!-- docs-test: skip REASON -->``: not executed (installing packages, for one); counted apart, and kept
  few (:data:`MAX_SKIPPED`);
- ``<!-- docs-test: slow -->``: runs only in the slow tier (``pytest -m slow``), for blocks that train for long;
- ``<!-- docs-test: background PREFIX, PREFIX -->``: commands starting with one of the prefixes (``fedad
  server``, ``fedad client``) start in the background; the next command that is not one of them, and the
  end of the block, first waits for them all and fails if one failed;
- ``<!-- docs-test: port N -->``: every ``:N`` in the block becomes ``:FREE``, a port free on this machine,
  so that a server the block starts never meets another one.

``python tests/test_docs.py`` prints which blocks run and which are skipped (blocks run / blocks present).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"bash": "shell", "sh": "shell", "python": "python"}
#: Blocks that may be marked ``skip``: installation, and little else.
MAX_SKIPPED = 2
#: Seconds a block may run (the deployment block starts a server and two clients and trains 10 rounds).
TIMEOUT = 900

_FENCE = re.compile(r"^```(\w*)[^\n]*$")
_MARKER = re.compile(r"^<!--\s*docs-test:\s*(.*?)\s*-->$")


@dataclass
class Block:
    """One fenced block: where it is, its language, its text and how to run it."""

    path: Path
    line: int  # of the opening fence, counting from 1
    language: str
    text: str
    skip: str | None = None  # the reason it is not executed
    slow: bool = False
    background: tuple[str, ...] = ()
    port: int | None = None
    clauses: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        where = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{where}:{self.line}"


def _parse_marker(block: Block, marker: str) -> None:
    for clause in (c.strip() for c in marker.split(";") if c.strip()):
        word, _, rest = clause.partition(" ")
        if word == "skip":
            if not rest.strip():
                raise ValueError(f"{block.id}: 'skip' needs a reason")
            block.skip = rest.strip()
        elif word == "slow":
            block.slow = True
        elif word == "background":
            block.background = tuple(p.strip() for p in rest.split(",") if p.strip())
        elif word == "port":
            block.port = int(rest)
        else:
            raise ValueError(f"{block.id}: unknown docs-test clause {clause!r}")
        block.clauses.append(clause)


def blocks(path: Path) -> list[Block]:
    """The ``bash``/``sh``/``python`` blocks of one Markdown file, with their markers."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        if fence.group(1) in LANGUAGES:
            block = Block(path, i + 1, LANGUAGES[fence.group(1)], "\n".join(lines[i + 1:end]) + "\n")
            before = lines[i - 1].strip() if i > 0 else ""
            marker = _MARKER.match(before)
            if marker:
                _parse_marker(block, marker.group(1))
            found.append(block)
        i = end + 1
    return found


ALL = [b for path in DOCUMENTS for b in blocks(path)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shell_script(block: Block) -> str:
    """The block as bash runs it: background commands started with ``&`` and waited for as the marker says."""
    logical, current = [], ""
    for line in block.text.splitlines():
        current += line
        if line.endswith("\\"):
            current = current[:-1] + " "
            continue
        logical.append(current)
        current = ""
    waiting = 'for p in $__bg; do wait "$p"; done; __bg=""'
    out = ["set -e -o pipefail", '__bg=""']
    for command in logical:
        stripped = command.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if any(stripped.startswith(prefix) for prefix in block.background):
            out.append(f'{{ {stripped}\n}} & __bg="$__bg $!"')
        else:
            out += [waiting, stripped]
    out.append(waiting)
    return "\n".join(out) + "\n"


def _environment(bin_dir: Path) -> dict[str, str]:
    """This checkout's ``fedad`` and ``python`` first on PATH, this checkout's package first on PYTHONPATH."""
    bin_dir.mkdir()
    for name, target in (("python", f'exec "{sys.executable}" "$@"'),
                         ("fedad", f'exec "{sys.executable}" -m fedad_tutorial.cli "$@"')):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{target}\n")
        script.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("FEDAD_THREADS", "1")
    return env


def run_block(block: Block, workdir: Path) -> subprocess.CompletedProcess:
    """Run ``block`` in ``workdir``; the whole process group is ended if it outlives :data:`TIMEOUT`."""
    text = block.text if block.port is None else block.text.replace(f":{block.port}", f":{_free_port()}")
    block = Block(block.path, block.line, block.language, text, background=block.background)
    env = _environment(workdir / ".bin")
    if block.language == "python":
        argv = [sys.executable, "-c", block.text]
    else:
        argv = ["bash", "-c", shell_script(block)]
    proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\n(killed after {TIMEOUT} s)"
    finally:
        try:  # what the block left running (a server whose clients failed) ends with it
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _param(block: Block):
    marks = [pytest.mark.slow] if block.slow else []
    if block.skip:
        marks.append(pytest.mark.skip(reason=f"docs-test: skip {block.skip}"))
    return pytest.param(block, id=block.id, marks=marks)


@pytest.mark.parametrize("block", [_param(b) for b in ALL])
def test_documented_block_runs(block, tmp_path):
    result = run_block(block, tmp_path)
    assert result.returncode == 0, (f"{block.id} ({block.language} block) failed with exit code "
                                    f"{result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def test_every_block_is_found_and_few_are_skipped():
    """The harness sees the documents' blocks (an empty list would pass every test above vacuously)."""
    assert [b for b in ALL if b.path.name == "README.md" and b.language == "python"], "README's Python snippet"
    assert any("fedad server" in b.text for b in ALL), "the deployment block"
    skipped = [b.id for b in ALL if b.skip]
    assert len(skipped) <= MAX_SKIPPED, f"too many blocks are not executed: {skipped}"


def test_the_cpu_install_pins_the_torch_of_requirements():
    """The Quickstart's CPU install asks for the version requirements.txt pins (so pip keeps that build)."""
    pinned = re.search(r"^torch==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE).group(1)
    installs = re.findall(r"pip install torch==(\S+) --index-url https://download.pytorch.org/whl/cpu",
                          (ROOT / "README.md").read_text())
    assert installs and set(installs) == {pinned}


def test_pyproject_declares_every_package_the_code_imports():
    """``pip install .`` gives a package whose every module can import (Flower was once missing)."""
    import ast
    import tomllib
    from importlib.metadata import packages_distributions

    declared = {re.split(r"[\[<>=~! ;]", d, maxsplit=1)[0].lower().replace("_", "-")
                for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    imported = set()
    for path in (ROOT / "fedad_tutorial").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"fedad_tutorial"}
    distributions = packages_distributions()
    missing = {name for name in third_party
               if not {d.lower().replace("_", "-") for d in distributions.get(name, [name])} & declared}
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"


def test_the_shell_harness_backgrounds_and_waits(tmp_path):
    """The harness itself: background commands run together (each waits for the other's file), the next
    command waits for them, and a failing background command fails the block."""
    doc = ("<!-- docs-test: background timeout, touch -->\n```bash\n"
           "timeout 20 sh -c 'until [ -e b ]; do sleep 0.05; done' && touch a\n"
           "touch b\n"
           "ls a b\n```\n")
    path = tmp_path / "doc.md"
    path.write_text(doc)
    (block,) = blocks(path)
    assert block.background == ("timeout", "touch") and block.language == "shell"
    (tmp_path / "ok").mkdir()
    assert run_block(block, tmp_path / "ok").returncode == 0
    failing = Block(path, 1, "shell", "false\nsleep 0.1\n", background=("false",))
    (tmp_path / "bad").mkdir()
    assert run_block(failing, tmp_path / "bad").returncode != 0


def coverage() -> str:
    """Which blocks run (and in which tier) and which are skipped: blocks run / blocks present."""
    lines = [f"{b.id:28} {b.language:7} " + (f"skipped: {b.skip}" if b.skip else "slow" if b.slow else "fast")
             for b in ALL]
    run = sum(not b.skip for b in ALL)
    return "\n".join([*lines, f"blocks run: {run} / blocks present: {len(ALL)}"])


if __name__ == "__main__":
    print(coverage())
