"""The commands the README and docs/*.md show are the commands that run: each block is executed as written.

Every fenced ``bash``, ``sh`` and ``python`` block of README.md and docs/*.md, at any indentation (a block in a
numbered list loses the list's indentation), is read from the Markdown when the tests are collected (never
copied here) and becomes one test, run in a fresh temporary folder with this checkout's ``fedad`` and
``python`` first on PATH, so what a block writes (data, runs, keys) lands there. A shell block runs under
``bash -e -o pipefail``: the first failing command fails the test. Blocks in other languages (``toml``,
``text``) are not code and are not counted.

An HTML comment on the line right before a block (indented like the block) says how to run it (invisible on
GitHub); clauses are separated by ``;``:

- ``<!-- docs-test: skip REASON -->``: not executed (installing packages, for one); counted apart, and kept
  few (:data:`MAX_SKIPPED`);
- ``<!-- docs-test: slow -->``: runs only in the slow tier (``pytest -m slow``), for blocks that train for long;
- ``<!-- docs-test: background PREFIX, PREFIX -->``: commands starting with one of the prefixes (``fedad
  server``, ``fedad client``) start in the background; the next command that is not one of them, and the
  end of the block, first waits for them all and fails if one failed;
- ``<!-- docs-test: section -->``: this block and the blocks after it up to the next heading run as one test,
  one after the other in one ``bash`` session and one folder, as a reader types them into one terminal:
  variables they export and processes they start with ``&`` live on into the next blocks. The later blocks
  carry no comment of their own (this one's clauses hold for them all) and must be shell;
- ``<!-- docs-test: port N M ... -->``: every number ``N`` (and ``M``, ...) in the block, or in its section,
  becomes a port free on this machine (the same one wherever ``N`` appears), so that a server the block
  starts never meets another one.

When a test ends (passed, failed or after :data:`TIMEOUT`), every process its blocks started is killed: the
whole process group, and the descendants of its members that started sessions of their own.

``python tests/test_docs.py`` prints which blocks run and which are skipped (blocks run / blocks present).
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fedad_tutorial.flower.processes import alive, descendants

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"bash": "shell", "sh": "shell", "python": "python"}
#: Blocks that may be marked ``skip``, and little else: installation (changes the environment), a firewall
#: rule (changes the machine's), and ``fedad server --resume`` (needs a server killed after a round; the
#: same command is run by ``tests/test_resume.py``).
MAX_SKIPPED = 3
#: Seconds one test may run (the deployment block starts a server and two clients and trains 10 rounds; the
#: plain-Flower section starts a Python process per Flower message).
TIMEOUT = 900

_FENCE = re.compile(r"^(\s*)```(\w*)[^\n]*$")
_MARKER = re.compile(r"^<!--\s*docs-test:\s*(.*?)\s*-->$")
_HEADING = re.compile(r"^#{1,6}\s")


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
    ports: tuple[int, ...] = ()
    section: bool = False  # it and the rest of its section run as one test
    heading: int = 0  # line of the heading it stands under (0: none)
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
            block.ports = tuple(int(n) for n in rest.split())
        elif word == "section":
            block.section = True
        else:
            raise ValueError(f"{block.id}: unknown docs-test clause {clause!r}")
        block.clauses.append(clause)


def blocks(path: Path) -> list[Block]:
    """The ``bash``/``sh``/``python`` blocks of one Markdown file, with their markers."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i, heading = [], 0, 0
    while i < len(lines):
        if _HEADING.match(lines[i]):
            heading = i + 1
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent = fence.group(1)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```"))
        if fence.group(2) in LANGUAGES:
            body = [line[len(indent):] if line.startswith(indent) else line.lstrip() for line in lines[i + 1:end]]
            block = Block(path, i + 1, LANGUAGES[fence.group(2)], "\n".join(body) + "\n", heading=heading)
            marker = _MARKER.match(lines[i - 1].strip() if i > 0 else "")
            if marker:
                _parse_marker(block, marker.group(1))
            found.append(block)
        i = end + 1
    return found


def runs(found: list[Block]) -> list[list[Block]]:
    """The tests: one per block, but a ``section`` block takes the blocks after it under the same heading."""
    out: list[list[Block]] = []
    for block in found:
        first = out[-1][0] if out else None
        if first and first.section and (first.path, first.heading) == (block.path, block.heading):
            if block.clauses or block.language != "shell":
                raise ValueError(f"{block.id} runs in the section of {first.id}: it must be shell, with no "
                                 "docs-test comment of its own")
            out[-1].append(block)
        else:
            out.append([block])
    return out


ALL = [b for path in DOCUMENTS for b in blocks(path)]
RUNS = runs(ALL)


def _free_ports(count: int) -> list[int]:
    """``count`` different ports free on this machine (all held open at once, so none is given twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def shell_script(block: Block) -> str:
    """The block as bash runs it: as written, or with its ``background`` commands started with ``&`` and
    waited for as the marker says."""
    if not block.background:
        return block.text
    logical, current = [], ""
    for line in block.text.splitlines():
        current += line
        if line.endswith("\\"):
            current = current[:-1] + " "
            continue
        logical.append(current)
        current = ""
    waiting = 'for p in $__bg; do wait "$p"; done; __bg=""'
    out = ['__bg=""']
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


def _kill_all(group: int) -> None:
    """SIGKILL process group ``group`` and every descendant of its members, also those in sessions of their
    own (Flower's SuperLink starts its SuperExec so): they are found while their parents still live."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if os.getpgid(int(entry.name)) == group:
                members.append(int(entry.name))
        except (OSError, ValueError):
            continue
    pids = {pid for member in members for pid in (member, *descendants(member))}
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10  # SIGKILL takes effect when the process is next scheduled
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def run_blocks(run: list[Block], workdir: Path) -> subprocess.CompletedProcess:
    """Run the blocks of one test in ``workdir``, one shell session for a section; whatever they started is
    killed when the last one ends, or after :data:`TIMEOUT` seconds."""
    free = {str(port): str(new) for port, new in zip(run[0].ports, _free_ports(len(run[0].ports)), strict=True)}
    run = [dataclasses.replace(b, text=re.sub(r"\d+", lambda n: free.get(n.group(), n.group()), b.text))
           for b in run]
    env = _environment(workdir / ".bin")
    if run[0].language == "python":
        argv = [sys.executable, "-c", run[0].text]
    else:
        script = "".join(f"echo '--- docs-test: {b.id}' >&2\n{shell_script(b)}" for b in run)
        argv = ["bash", "-c", "set -e -o pipefail\n" + script]
    # Files, not pipes: a process left in the background would hold a pipe open and stall the reading.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                text=True, start_new_session=True)
        note = ""
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            note = f"\n(killed after {TIMEOUT} s)"
        finally:  # what the blocks left running (a SuperLink, a server whose clients failed) ends with them
            _kill_all(proc.pid)
            proc.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, proc.returncode, out.read(), err.read() + note)


def _param(run: list[Block]):
    first = run[0]
    marks = [pytest.mark.slow] if first.slow else []
    if first.skip:
        marks.append(pytest.mark.skip(reason=f"docs-test: skip {first.skip}"))
    return pytest.param(run, id=first.id, marks=marks)


@pytest.mark.parametrize("run", [_param(r) for r in RUNS])
def test_documented_block_runs(run, tmp_path):
    result = run_blocks(run, tmp_path)
    logs = "".join(f"\n--- {log.name}:\n{log.read_text(errors='replace')[-2000:]}"
                   for log in sorted(tmp_path.glob("*.log")))
    assert result.returncode == 0, (f"{run[0].id} ({run[0].language}, {len(run)} block(s)) failed with exit code "
                                    f"{result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}{logs}")


def test_every_block_is_found_and_few_are_skipped():
    """The harness sees the documents' blocks (an empty list would pass every test above vacuously), also
    those indented in a list, and the plain-Flower steps run together."""
    assert [b for b in ALL if b.path.name == "README.md" and b.language == "python"], "README's Python snippet"
    assert any("fedad server" in b.text for b in ALL), "the deployment block"
    (plain,) = [r for r in RUNS if any(b.text.startswith("flower-superlink") for b in r)]
    assert plain[0].section and plain[0].slow and len(plain[0].ports) == 3
    assert any(b.text.startswith("flwr run") for b in plain) and any("kill" in b.text for b in plain)
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
    assert run_blocks([block], tmp_path / "ok").returncode == 0
    failing = Block(path, 1, "shell", "false\nsleep 0.1\n", background=("false",))
    (tmp_path / "bad").mkdir()
    assert run_blocks([failing], tmp_path / "bad").returncode != 0


def test_a_section_runs_as_one_session_and_leaves_nothing_running(tmp_path):
    """Indented blocks lose the list's indentation; a ``section`` runs its blocks in one shell (a variable
    and a background process live on), gives each ``port`` one free port throughout, and when it ends
    (here by failing) its processes are killed, also one that started a session of its own."""
    doc = ("# Steps\n\n1. Start:\n\n"
           "   <!-- docs-test: section; port 9093 9094 -->\n   ```bash\n"
           "   export GREETING=hello\n"
           "   sh -c 'setsid sleep 300 & echo $! > inner; wait' &\n"
           "   echo $! > outer\n"
           "   echo 9093 9094 localhost:9093 > ports\n   ```\n\n"
           "   ```toml\n   [not]\n   code = true\n   ```\n\n"
           "2. Use:\n\n   ```bash\n"
           "   timeout 20 sh -c 'until [ -s inner ]; do sleep 0.05; done'\n"
           "   test \"$GREETING\" = hello && jobs -p | grep -q .\n"
           "   exit 3\n   ```\n\n"
           "# Next\n\n```bash\ntrue\n```\n")
    path = tmp_path / "doc.md"
    path.write_text(doc)
    found = blocks(path)
    assert [b.text.splitlines()[0] for b in found] == ["export GREETING=hello", "timeout 20 sh -c 'until [ -s "
                                                       "inner ]; do sleep 0.05; done'", "true"]
    section, alone = runs(found)
    assert [b.line for b in section] == [6, 20] and section[0].ports == (9093, 9094) and alone == [found[2]]
    work = tmp_path / "work"
    work.mkdir()
    result = run_blocks(section, work)
    assert result.returncode == 3, result.stderr
    first, second, address = (work / "ports").read_text().split()
    assert first != second and {first, second}.isdisjoint({"9093", "9094"}) and address == f"localhost:{first}"
    for name in ("outer", "inner"):
        assert not alive(int((work / name).read_text())), f"the {name} process outlived its section"


def coverage() -> str:
    """Which blocks run (and in which tier, and with which section) and which are skipped: blocks run /
    blocks present."""
    lines = []
    for run in RUNS:
        first = run[0]
        tier = f"skipped: {first.skip}" if first.skip else "slow" if first.slow else "fast"
        lines += [f"{b.id:28} {b.language:7} {tier}" + (f", in the section of {first.id}" if b is not first else "")
                  for b in run]
    ran = sum(len(run) for run in RUNS if not run[0].skip)
    return "\n".join([*lines, f"blocks run: {ran} / blocks present: {len(ALL)}"])


if __name__ == "__main__":
    print(coverage())
