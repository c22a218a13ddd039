"""The Flower processes a ``fedad`` command starts, and how it makes sure none outlives it.

Three layers, so that no SuperLink or SuperNode is left behind however the command ends:

- a normal end, an error, SIGTERM or SIGINT: :meth:`Processes.stop` sends SIGTERM, then SIGKILL,
  to each child and its descendants (found in ``/proc``);
- SIGKILL of the command itself (nothing of it runs any more): each child was started with
  ``PR_SET_PDEATHSIG`` = SIGKILL, so Linux kills it when its parent dies;
- each child runs in its own session, so a Ctrl-C in the terminal reaches only the command,
  which then stops its children in order.

Ports: :func:`check_port` refuses to start a SuperLink on a port another process holds (or on
an address that does not resolve or is not this machine's), and :func:`owns_port` checks that the
process listening on a port is the one we started, so a command never talks to somebody else's
SuperLink.

State: what a command keeps while it runs (Flower's home, logs, the SuperExec secret) lives in a
folder stamped with its owner (:func:`claim`); a folder whose owner is gone (a ``kill -9``, a power
cut) is removed by the next command that looks there (:func:`remove_abandoned`). A client's state
lives under one per-user folder (:func:`state_root`), never in a shared ``/tmp`` name.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedad_tutorial.errors import UserError
from fedad_tutorial.flower.files import shown

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


def check_port(host: str, port: int) -> None:
    """A one-line :class:`UserError` unless a server could listen on ``host:port`` now: the host
    must resolve, be an address of this machine, and the port be free (and allowed) on every address
    the name resolves to (``localhost`` may be both 127.0.0.1 and ::1)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else "not a valid host name"
        raise UserError(f"--address {shown(f'{host}:{port}')}: cannot resolve {host!r} ({str(reason).lower()}); "
                        "give an address or name of this machine") from None
    failures = []
    for family, kind, proto, _, where in addresses:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
            try:
                s.bind(where)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise UserError(f"port {port} on {shown(host)} is already in use (another fedad server?): "
                                    "choose another --address") from None
                failures.append(exc)
    if len(failures) < len(addresses):
        return  # free wherever this machine has the address
    exc = failures[0]
    if exc.errno == errno.EADDRNOTAVAIL:
        raise UserError(f"--address {shown(f'{host}:{port}')}: {shown(host)} is not an address of this "
                        "machine; give one of its own (or 0.0.0.0 for every interface)")
    reason = (exc.strerror or str(exc)).lower()
    raise UserError(f"--address {shown(f'{host}:{port}')}: cannot listen there ({reason})")


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


def _started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), so a reused pid is not taken
    for the process that stamped a folder; ``None`` if it does not run."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


OWNER_FILE = "owner"


def claim(folder: Path) -> None:
    """Stamp ``folder`` with this process as its owner (pid and start time)."""
    (folder / OWNER_FILE).write_text(f"{os.getpid()} {_started(os.getpid())}\n")


def owner(folder: Path) -> int | None:
    """The pid of the live process that claimed ``folder``, or ``None`` if it is gone (or never claimed it)."""
    try:
        pid_text, started = (folder / OWNER_FILE).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if alive(pid) and _started(pid) == started else None


def remove_abandoned(folder: Path) -> None:
    """Remove ``folder`` if it exists and was claimed by a process that is gone; a one-line
    :class:`UserError` if its owner still runs, or if it is anything else (never fedad's to delete)."""
    if not os.path.lexists(folder):
        return
    if folder.is_symlink() or not folder.is_dir() or not (folder / OWNER_FILE).is_file():
        raise UserError(f"{shown(folder)}: exists, but is not a state folder left by a fedad command; "
                        "move it away")
    pid = owner(folder)
    if pid is not None:
        raise UserError(f"{shown(folder)}: in use by another fedad command (pid {pid}); wait for it or stop it")
    shutil.rmtree(folder)


def state_root() -> Path:
    """This user's folder for running commands' state: ``$XDG_RUNTIME_DIR/fedad`` if the session has
    one, else ``fedad-UID`` in the temporary folder; mode 700, owned by this user, not a symlink."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    base = Path(runtime) if runtime and Path(runtime).is_dir() else Path(tempfile.gettempdir())
    root = base / ("fedad" if base == Path(runtime) else f"fedad-{os.getuid()}")
    try:
        root.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise UserError(f"{root}: not a private folder of this user (mode 700); remove it or set "
                        "XDG_RUNTIME_DIR to one")
    return root


def private_state(kind: str) -> Path:
    """A new state folder for this process under :func:`state_root`, claimed by it; the folders of
    ``kind`` whose owners are gone are removed first."""
    root = state_root()
    claimed_hidden = [f for f in root.glob(f".{kind}-*") if (f / OWNER_FILE).exists()]  # being named, or left so
    for folder in [*root.glob(f"{kind}-*"), *claimed_hidden]:
        if owner(folder) is None:
            shutil.rmtree(folder, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{kind}-{os.getpid()}-", dir=root))
    claim(staging)  # before it carries a name the clean-up above looks at
    folder = root / staging.name[1:]
    staging.rename(folder)
    return folder
