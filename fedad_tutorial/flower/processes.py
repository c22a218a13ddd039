"""The Flower processes a ``fedad`` command starts, and how it makes sure none outlives it.

Three layers, so that no SuperLink or SuperNode is left behind however the command ends:

- a normal end, an error, SIGTERM or SIGINT: :meth:`Processes.stop` sends SIGTERM, then SIGKILL,
  to each child and its descendants (found in ``/proc``);
- SIGKILL of the command itself (nothing of it runs any more): each child was started with
  ``PR_SET_PDEATHSIG`` = SIGKILL, so Linux kills it when its parent dies;
- each child runs in its own session, so a Ctrl-C in the terminal reaches only the command,
  which then stops its children in order.

Ports: :func:`port_in_use` refuses to start a SuperLink on a port another process holds, and
:func:`owns_port` checks that the process listening on a port is the one we started, so a
command never talks to somebody else's SuperLink.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int):
    """A ``preexec_fn``: SIGKILL this child when ``parent`` dies (Linux; a no-op elsewhere)."""
    def setup() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)
    return setup


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc; empty where /proc is unavailable)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Processes:
    """The processes one command started; :meth:`stop` ends them and their descendants by PID."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.logs: list = []

    def start(self, cmd: list[str], env: dict[str, str], log_path: Path, pass_fds: tuple[int, ...] = ()
              ) -> subprocess.Popen:
        handle = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.logs.append(handle)
        proc = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_die_with_parent(os.getpid()), pass_fds=pass_fds)
        self.procs.append(proc)
        return proc

    def stop(self, grace: float = 3.0) -> None:
        pids = []
        for proc in self.procs:
            pids += [proc.pid, *descendants(proc.pid)] if proc.poll() is None else descendants(proc.pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            for proc in self.procs:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            while time.monotonic() < deadline and any(alive(p) for p in pids):
                time.sleep(0.05)
            pids = [p for p in pids if alive(p)]
            if not pids:
                break
        for handle in self.logs:
            handle.close()
        self.logs.clear()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    """Whether binding ``host:port`` fails (another process listens there)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes


def owns_port(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a socket listening on ``port`` (Linux /proc)."""
    inodes = _listening_inodes(port)
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False
