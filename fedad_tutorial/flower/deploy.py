"""The processes behind ``fedad server`` and ``fedad client``: a Flower SuperLink, SuperNodes, ``flwr run``.

``fedad server`` starts ``flower-superlink`` (Fleet, Control and runtime APIs on one address),
writes a small Flower App folder whose components are this package's ``ServerApp`` and
``ClientApp`` and whose run config holds the training settings, submits it with ``flwr run``, and
waits for the ServerApp to report that it is done; then it stops what it started, by PID.
``fedad client`` checks its CSV, then starts ``flower-supernode`` with the CSV path in its node
config; once the node has answered the last round's ``evaluate`` message and the server has
stopped, it stops the SuperNode.

Offline and quiet: no runtime dependency installation, no telemetry, no update check; Flower's
state (``FLWR_HOME``: its config, installed app bundles, logs) lives in a folder beside the run
folder while the server runs and is moved to ``OUTPUT_DIR/flower/`` at the end, never in ``~/.flwr``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from fedad_tutorial.errors import UserError
from fedad_tutorial.flower.certs import CA_CERT, SERVER_CERT, SERVER_KEY
from fedad_tutorial.flower.settings import FlowerSettings

CONNECTION = "fedad"


def flower_env(home: Path) -> dict[str, str]:
    """The environment of every Flower process we start: offline, quiet, state under ``home``."""
    env = dict(os.environ)
    env.update({
        "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "RAY_USAGE_STATS_ENABLED": "0",
        "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1",
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": env.get("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.2"),
    })
    bindir = str(Path(sys.executable).parent)  # the flower-* scripts of this interpreter
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"address must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the process exited before it started listening")
        if _listening(host, port):
            return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:g} s")


def _children(pid: int) -> list[int]:
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


class Processes:
    """The processes one command started; :meth:`stop` ends them and their descendants by PID."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.logs: list = []

    def start(self, cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
        handle = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.logs.append(handle)
        proc = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stop(self, grace: float = 5.0) -> None:
        pids = []
        for proc in self.procs:
            pids += [proc.pid, *_children(proc.pid)] if proc.poll() is None else _children(proc.pid)
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
            while time.monotonic() < deadline and any(_exists(p) for p in pids):
                time.sleep(0.1)
            pids = [p for p in pids if _exists(p)]
            if not pids:
                break
        for handle in self.logs:
            handle.close()


def _exists(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def tls_args(certificates: Path | None, insecure: bool, server: bool) -> list[str]:
    """``--insecure`` or the certificate flags; neither (or a missing file) is the user's error."""
    flag = "--certificates DIR" if server else "--root-certificates FILE"
    if insecure and certificates is not None:
        raise UserError(f"give either {flag} or --insecure, not both")
    if insecure:
        return ["--insecure"]
    if certificates is None:
        raise UserError(f"TLS needs {flag}; pass --insecure to run without encryption (local tests only)")
    if server:
        files = {"--ssl-ca-certfile": CA_CERT, "--ssl-certfile": SERVER_CERT, "--ssl-keyfile": SERVER_KEY}
        for name in files.values():
            if not (certificates / name).is_file():
                raise UserError(f"{certificates / name}: no such file (--certificates DIR needs {CA_CERT}, "
                                f"{SERVER_CERT} and {SERVER_KEY})")
        return [a for flag_, name in files.items() for a in (flag_, str((certificates / name).resolve()))]
    if not certificates.is_file():
        raise UserError(f"{certificates}: no such file (--root-certificates needs the CA certificate)")
    return ["--root-certificates", str(certificates.resolve())]


def write_app(app_dir: Path, settings: FlowerSettings) -> Path:
    """A Flower App folder (just a ``pyproject.toml``) pointing at this package's apps."""
    app_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for key, value in settings.to_run_config().items():
        lines.append(f"{key} = {json.dumps(value)}")
    (app_dir / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "fedad-flower"\nversion = "1.0.0"\n'
        'description = "fedad-tutorial detector trained with Flower"\nlicense = "MIT"\n'
        'dependencies = ["flwr>=1.41"]\n\n'
        '[tool.flwr.app]\npublisher = "fedad"\n\n'
        '[tool.flwr.app.components]\nserverapp = "fedad_tutorial.flower.server_app:app"\n'
        'clientapp = "fedad_tutorial.flower.client_app:app"\n\n'
        '[tool.flwr.app.config]\n' + "\n".join(lines) + "\n")
    return app_dir


def _write_connection(home: Path, address: str, root_cert: Path | None) -> None:
    home.mkdir(parents=True, exist_ok=True)
    conn = f'address = "{address}"\n' + (f'root-certificates = "{root_cert}"\n' if root_cert else "insecure = true\n")
    (home / "config.toml").write_text(f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n{conn}')


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def serve(settings: FlowerSettings, address: str, certificates: Path | None, insecure: bool,
          on_round: Callable[[dict], None] | None = None, startup_timeout: float = 60.0) -> dict:
    """Run the whole server side; return the ServerApp's status (raises RuntimeError on failure)."""
    host, port = split_address(address)
    tls = tls_args(certificates, insecure, server=True)
    output = Path(settings.output_dir).resolve()
    state = output.parent / f".{output.name}.flower"
    if state.exists():
        shutil.rmtree(state)
    home = state / "home"
    home.mkdir(parents=True)
    status, progress = state / "status.json", state / "progress.jsonl"
    settings = replace(settings, output_dir=str(output), status_file=str(status), progress_file=str(progress))
    app_dir = write_app(state / "app", settings)
    root = (certificates / CA_CERT).resolve() if certificates is not None else None
    _write_connection(home, address, root)
    env = flower_env(home)
    procs = Processes()
    try:
        link = procs.start(["flower-superlink", *tls, "--host", host, "--port", str(port),
                            "--disable-runtime-dependency-installation"], env, state / "superlink.log")
        try:
            wait_for_port(host, port, startup_timeout, lambda: link.poll() is None)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"the Flower SuperLink did not start on {address} ({exc}): "
                               f"{_tail(state / 'superlink.log')}") from None
        submit = None
        for _ in range(5):  # the Control API may need a moment after the port opens
            submit = subprocess.run(["flwr", "run", str(app_dir), CONNECTION, "--format", "json"], env=env,
                                    capture_output=True, text=True, timeout=120, cwd=state)
            if submit.returncode == 0:
                break
            time.sleep(2)
        if submit.returncode != 0:
            raise RuntimeError(f"flwr run failed: {(submit.stdout + submit.stderr).strip()[-400:]}")
        rounds = settings.config.rounds
        deadline = time.monotonic() + settings.wait_timeout + (3 * rounds + 4) * settings.round_timeout + 60
        seen = 0
        while time.monotonic() < deadline:
            if progress.exists() and on_round is not None:
                lines = progress.read_text().splitlines()
                for line in lines[seen:]:
                    on_round(json.loads(line))
                seen = len(lines)
            if status.exists():
                result = json.loads(status.read_text())
                if not result.get("ok"):
                    raise RuntimeError(result.get("error", "the ServerApp failed"))
                return result
            if link.poll() is not None:
                raise RuntimeError(f"the Flower SuperLink exited (code {link.returncode}): "
                                   f"{_tail(state / 'superlink.log')}")
            time.sleep(0.5)
        raise RuntimeError("the run did not finish in time (see the logs in "
                           f"{output / 'flower'}); check --round-timeout and --wait-timeout")
    except RuntimeError as exc:
        where = output / "flower" if output.is_dir() else state
        raise RuntimeError(f"{exc} (Flower logs: {where})") from None
    finally:
        procs.stop()
        if output.is_dir():  # keep Flower's logs with the run
            target = output / "flower"
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(str(state), str(target))


def join(data_path: Path, node_id: int, server_address: str, root_certificates: Path | None, insecure: bool,
         wait_timeout: float, state_dir: Path | None = None) -> str:
    """Run a SuperNode serving ``data_path`` until the server says it is done; return a one-line summary."""
    tls = tls_args(root_certificates, insecure, server=False)
    split_address(server_address)
    own_state = state_dir is None
    state = Path(tempfile.mkdtemp(prefix="fedad-client-")) if own_state else Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    done = state / "done"
    done.unlink(missing_ok=True)
    node_config = (f'data-path={json.dumps(str(data_path.resolve()))} node-id={int(node_id)} '
                   f'done-file={json.dumps(str(done))}')
    port = free_port()
    procs = Processes()
    log_path = state / "supernode.log"
    try:
        node = procs.start(["flower-supernode", *tls, "--superlink", server_address, "--port", str(port),
                            "--node-config", node_config, "--max-wait-time", str(wait_timeout)],
                           flower_env(state / "home"), log_path)
        host, port_ = split_address(server_address)
        finished_at = None
        while True:
            if done.exists() and finished_at is None:
                finished_at = time.monotonic()
            if finished_at is not None and (not _listening(host, port_)
                                            or time.monotonic() - finished_at > wait_timeout):
                # the last reply has been collected once the server has stopped
                return f"node {node_id} ({data_path.name}): training finished"
            if node.poll() is not None:
                if finished_at is not None:
                    return f"node {node_id} ({data_path.name}): training finished"
                raise RuntimeError(f"the Flower SuperNode stopped (code {node.returncode}) before the server "
                                   f"finished: could not reach {server_address} or lost it; "
                                   f"{_tail(log_path, 3)}")
            time.sleep(0.5)
    finally:
        procs.stop()
        if own_state:
            shutil.rmtree(state, ignore_errors=True)
