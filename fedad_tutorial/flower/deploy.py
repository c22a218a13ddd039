"""``fedad server`` and ``fedad client``: a Flower SuperLink or SuperNode, and our app process beside it.

``fedad server`` checks its port is free, starts ``flower-superlink`` (Fleet, Control and Runtime
APIs on one address; with TLS, SuperNode authentication on), registers the node keys listed in
``--authorized-keys``, submits a run of the fedad app bundle through the Control API, and runs the
ServerApp itself (:func:`~fedad_tutorial.flower.runtime.run_server_task`): only nodes whose key
it registered take part. ``fedad client`` checks its CSV, its key and the server (reachable,
TLS as expected, certificate signed by the given CA), starts a SuperNode with its key, and
answers the fedad app's messages itself (:class:`~fedad_tutorial.flower.runtime.ClientWorker`).

Both Flower processes run with ``--isolation process`` and a fresh SuperExec secret, so no app
bundle submitted by anyone else is ever run (see :mod:`~fedad_tutorial.flower.runtime`), and
die with the command (:mod:`~fedad_tutorial.flower.processes`).

Offline and quiet: no runtime dependency installation, no telemetry, no update check; Flower's
state (``FLWR_HOME``, logs) lives in a folder beside the run folder while the server runs and is
moved to ``OUTPUT_DIR/flower/`` at the end, never in ``~/.flwr``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from fedad_tutorial.errors import UserError
from fedad_tutorial.flower.certs import CA_CERT, SERVER_CERT, SERVER_KEY, check_server_files, load_ca
from fedad_tutorial.flower.files import read_regular
from fedad_tutorial.flower.keys import PublicKey, load_private_key, read_authorized_keys
from fedad_tutorial.flower.latency import NOTIFY_FD
from fedad_tutorial.flower.processes import (
    OWNER_FILE,
    Processes,
    alive,
    check_port,
    claim,
    free_port,
    owns_port,
    private_state,
    reachable,
    remove_abandoned,
)
from fedad_tutorial.flower.settings import EVALUATE, FlowerSettings
from fedad_tutorial.flower.supernode import HEARTBEAT

if TYPE_CHECKING:
    from fedad_tutorial.flower.checkpoint import Checkpoint

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: What Flower's SuperNode logs when the SuperLink does not activate its key's node: the key is unknown, or
#: its node still counts as online (Flower tells the two apart only in the SuperLink's own log).
_ACTIVATION_REFUSED = "Failed to activate SuperNode"
#: Seconds between a client's checks for a message it was not told of (see :func:`_serve_messages`).
FALLBACK_POLL = 0.5


def flower_env(home: Path) -> dict[str, str]:
    """The environment of every Flower process we start: offline, quiet, state under ``home``."""
    env = dict(os.environ)
    env.update({
        "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
        "PYTHONUNBUFFERED": "1",
    })
    bindir = str(Path(sys.executable).parent)  # the flower-* scripts of this interpreter
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"address must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def _local(host: str) -> str:
    """Where this machine reaches a server bound to ``host`` (a wildcard means loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host


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
        check_server_files(certificates)
        files = {"--ssl-ca-certfile": CA_CERT, "--ssl-certfile": SERVER_CERT, "--ssl-keyfile": SERVER_KEY}
        return [a for flag_, name in files.items() for a in (flag_, str((certificates / name).resolve()))]
    load_ca(certificates)
    return ["--root-certificates", str(certificates.resolve())]


def server_keys(certificates: Path | None, insecure: bool, authorized_keys: Path | None) -> list[PublicKey] | None:
    """The node keys a server admits (``None``: any node, only with ``--insecure``)."""
    tls_args(certificates, insecure, server=True)
    if insecure:
        if authorized_keys is not None:
            raise UserError("--authorized-keys needs TLS (Flower authenticates nodes only over TLS): "
                            "give --certificates DIR instead of --insecure")
        return None
    if authorized_keys is None:
        raise UserError("with --certificates, --authorized-keys FILE is required (one public key per line, "
                        "from each client's `fedad keygen`); without it any node could join")
    return read_authorized_keys(authorized_keys)


def client_key(root_certificates: Path | None, insecure: bool, auth_key: Path | None) -> PublicKey | None:
    """The client's key (``None`` with ``--insecure``)."""
    tls_args(root_certificates, insecure, server=False)
    if insecure:
        if auth_key is not None:
            raise UserError("--auth-key needs TLS: give --root-certificates FILE instead of --insecure")
        return None
    if auth_key is None:
        raise UserError("with --root-certificates, --auth-key KEYFILE is required (make one with "
                        "`fedad keygen --output KEYFILE` and send KEYFILE.pub to the server operator)")
    return load_private_key(auth_key)


def write_app(app_dir: Path, settings: FlowerSettings) -> Path:
    """A Flower App folder (just a ``pyproject.toml``) naming this package's apps; its run config
    records the training settings (the server runs its own ServerApp with them)."""
    from fedad_tutorial.flower.runtime import COMPONENTS, PUBLISHER

    app_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"{key} = {json.dumps(value)}" for key, value in settings.to_run_config().items()]
    components = "\n".join(f'{k} = "{v}"' for k, v in COMPONENTS.items())
    (app_dir / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "fedad-flower"\nversion = "1.0.0"\n'
        'description = "fedad-tutorial detector trained with Flower"\nlicense = "MIT"\n'
        'dependencies = ["flwr>=1.41"]\n\n'
        f'[tool.flwr.app]\npublisher = "{PUBLISHER}"\n\n'
        f'[tool.flwr.app.components]\n{components}\n\n'
        '[tool.flwr.app.config]\n' + "\n".join(lines) + "\n")
    return app_dir


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = _ANSI.sub("", path.read_text(errors="replace")).strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def _secret(path: Path) -> bytes:
    """A fresh SuperExec secret (mode 600): only the holder may take tasks from the Runtime API."""
    secret = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, secret)
    finally:
        os.close(fd)
    return secret


class _FlowerLog:
    """Send the ``flwr`` logger of this process to a file (not the console) while a command runs."""

    def __init__(self, path: Path) -> None:
        self.logger = logging.getLogger("flwr")
        self.handler = logging.FileHandler(path)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def __enter__(self) -> _FlowerLog:
        self.saved = list(self.logger.handlers)
        for h in self.saved:
            self.logger.removeHandler(h)
        self.logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self.handler)
        self.handler.close()
        for h in self.saved:
            self.logger.addHandler(h)


def _wait_listening(proc, port: int, timeout: float, what: str, log: Path) -> None:
    """Until ``proc`` itself listens on ``port`` (never somebody else's process on it)."""
    deadline = time.monotonic() + timeout
    exit_code = _LogWatch(log)
    while not owns_port(proc.pid, port):
        if proc.poll() is not None or exit_code.check() is not None:
            text = _tail(log, 8)
            if "address already in use" in text.lower():
                raise UserError(f"port {port} is already in use: choose another --address")
            raise RuntimeError(f"the Flower {what} exited (code {exit_code.code or proc.returncode}): "
                               f"{_tail(log, 3)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Flower {what} did not listen on port {port} within {timeout:g} s")
        time.sleep(0.1)


def _register(control, keys: list[PublicKey]) -> dict[int, PublicKey]:
    """Register each authorized key with the SuperLink; its node id -> the key."""
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key
    from flwr.proto.control_pb2 import RegisterNodeRequest  # pylint: disable=E0611
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    out = {}
    for key in keys:
        res = control.RegisterNode(RegisterNodeRequest(public_key=public_key_to_bytes(load_ssh_public_key(
            key.line.encode())), name=key.comment or key.fingerprint[:15]))
        out[int(res.node_id)] = key
    return out


def _submit(control, app_dir: Path) -> tuple[int, str]:
    """Submit the app bundle built from ``app_dir``; return the run id and the bundle's hash."""
    from flwr.cli.build import build_fab_from_disk
    from flwr.common.serde import fab_to_proto, user_config_to_proto
    from flwr.proto.control_pb2 import StartRunRequest  # pylint: disable=E0611
    from flwr.supercore.fab import Fab

    content = build_fab_from_disk(app_dir)
    fab_hash = hashlib.sha256(content).hexdigest()
    res = control.StartRun(StartRunRequest(fab=fab_to_proto(Fab(fab_hash, content, {})),
                                           override_config=user_config_to_proto({}), federation=""))
    if not res.HasField("run_id"):
        raise RuntimeError("the SuperLink did not accept the run")
    return int(res.run_id), fab_hash


def serve(settings: FlowerSettings, address: str, certificates: Path | None, insecure: bool,
          authorized_keys: Path | None = None, on_round: Callable[[dict], None] | None = None,
          startup_timeout: float = 60.0, threads: int | None = None,
          on_count: Callable[[int], None] | None = None, resume: Checkpoint | None = None,
          say: Callable[[str], None] | None = None) -> dict:
    """Run the whole server side; return the run's summary (RuntimeError on failure).

    ``on_round`` hears each round's means, ``on_count`` the number of connected nodes while waiting, ``say``
    a line for each node dropped or rejoining. The
    run folder keeps a checkpoint after every completed round; ``resume`` continues the run of one.
    A killed server's state folder (``.NAME.flower`` beside the run folder) is removed here, never the
    run folder, so its checkpoint survives the kill and the restart."""
    from flwr.supercore.control import ControlHttpClient
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

    from fedad_tutorial.flower.runtime import local_client, run_server_task
    from fedad_tutorial.threads import set_threads

    host, port = split_address(address)
    tls = tls_args(certificates, insecure, server=True)
    keys = server_keys(certificates, insecure, authorized_keys)
    check_port(host, port)
    root = read_regular(certificates / CA_CERT, "the CA certificate") if certificates is not None else None
    output = Path(settings.output_dir).resolve()
    settings = replace(settings, output_dir=str(output))
    local = f"{_local(host)}:{port}"
    state = output.parent / f".{output.name}.flower"
    remove_abandoned(state)  # a killed server's state (its secret, its logs); never a live server's
    state.mkdir(parents=True)
    procs = Processes()
    log = state / "superlink.log"
    result: dict = {}
    try:
        claim(state)
        (state / "home").mkdir()
        app_dir = write_app(state / "app", settings)
        secret_file = state / "superexec.secret"
        secret = _secret(secret_file)
        auth = ["--enable-supernode-auth"] if keys is not None else []
        link = procs.start(["flower-superlink", *tls, *auth, "--host", host, "--port", str(port),
                            "--isolation", "process", "--superexec-auth-secret-file", str(secret_file),
                            "--disable-runtime-dependency-installation"], flower_env(state / "home"), log)
        # PyTorch and the ServerApp load while the SuperLink starts, not before it
        from fedad_tutorial.flower.server_app import run_server

        set_threads(threads)
        _wait_listening(link, port, startup_timeout, "SuperLink", log)

        def link_alive() -> None:
            if not alive(link.pid):
                raise RuntimeError(f"the Flower SuperLink exited: {_tail(log, 3)}")

        with _FlowerLog(state / "serverapp.log"):
            control = local_client(ControlHttpClient, local, root,
                                   [RuntimeVersionHttpInterceptor(component_name="flwr-cli")])
            try:
                allowed = _register(control, keys) if keys is not None else None
                run_id, fab_hash = _submit(control, app_dir)
            finally:
                control.close()

            def main(grid, _context) -> None:
                fed = run_server(grid, settings, _progress(on_round), allowed=allowed, on_count=on_count,
                                 checkpoints=True, resume=resume, say=say)
                result["summary"] = fed.summary()

            run_server_task(local, root, secret, run_id, fab_hash, main, link_alive, startup_timeout)
    except RuntimeError as exc:  # the logs stay (named in the message) until the next server starts here
        logs = _end_server(procs, state, keep=state)
        raise RuntimeError(f"{_ANSI.sub('', str(exc))} (Flower logs: {logs})") from None
    except BaseException:
        _end_server(procs, state, keep=None)
        raise
    _end_server(procs, state, keep=output / "flower" if output.is_dir() else None)
    return result


def _end_server(procs: Processes, state: Path, keep: Path | None) -> Path | None:
    """Stop the Flower processes and drop the secret; keep Flower's logs (without colour codes) at
    ``keep`` (the run folder's ``flower/``, or the state folder itself), or remove them; return ``keep``."""
    procs.stop()
    (state / "superexec.secret").unlink(missing_ok=True)
    if keep is None:
        shutil.rmtree(state, ignore_errors=True)
        return None
    for log in state.glob("*.log"):  # Flower colours its log lines even in a file
        log.write_text(_ANSI.sub("", log.read_text(errors="replace")))
    if keep != state:
        (state / OWNER_FILE).unlink(missing_ok=True)
        shutil.rmtree(keep, ignore_errors=True)
        shutil.move(str(state), str(keep))
    return keep


class _LogWatch:
    """Reads a Flower log as it grows; notices Flower's ``Exit Code: N`` and ``SuperNode ID: N`` lines."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.code, self.node_id = path, 0, None, None

    def check(self) -> int | None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                text = handle.read().decode(errors="replace")
        except OSError:
            return self.code
        cut = text.rfind("\n") + 1  # keep a partial last line for the next read
        self.offset += len(text[:cut].encode())
        text = _ANSI.sub("", text[:cut])
        if found := re.search(r"Exit Code: (\d+)", text):
            self.code = int(found.group(1))
        if found := re.search(r"SuperNode ID: (\d+)", text):
            self.node_id = int(found.group(1))
        return self.code


def _progress(on_round: Callable[[dict], None] | None):
    if on_round is None:
        return None
    return lambda rnd, means: on_round({"round": rnd, **means})


#: Seconds between a client's tries to join while the server does not activate its key's node.
STILL_ONLINE_RETRY = 2.0
#: How long a client tries again: a SuperLink counts a node as online until two heartbeats are missed
#: (:data:`~fedad_tutorial.flower.supernode.HEARTBEAT` s apart), so a client killed and started again under the
#: same key is let in by then; a key the server does not know is reported after this long.
STILL_ONLINE_WINDOW = 2 * HEARTBEAT + 5.0


class NodeStillOnline(RuntimeError):
    """The SuperLink did not activate this key's node: it may still count it as online (a client with this key
    killed less than two heartbeats ago), or not know the key at all."""


class ServerLost(RuntimeError):
    """The fedad server stopped answering while this node served it: it may be restarting (``--resume``)."""

    def __init__(self, answered: int) -> None:
        super().__init__(f"lost the fedad server after {answered} message(s)")
        self.answered = answered


def join(data_path: Path, node_id: int, server_address: str, root_certificates: Path | None, insecure: bool,
         wait_timeout: float, auth_key: Path | None = None, say: Callable[[str], None] = print,
         threads: int | None = None) -> str:
    """Run a SuperNode serving ``data_path`` until the server's last message; return a one-line summary.

    If the server goes away before its last message (killed, restarting with ``--resume``, a network
    outage), the node waits up to ``wait_timeout`` s for it to come back and joins again with a new
    SuperNode (with node authentication, under the same key, so the same Flower node id); if it does
    not come back, one line and :class:`UserError` (exit 2).

    Each SuperNode's state (Flower's home, logs, the SuperExec secret) lives in a folder of this user's
    :func:`~fedad_tutorial.flower.processes.state_root`, removed at the end, or by the next client if
    this one is killed."""
    from fedad_tutorial.flower.preflight import check_server

    tls_args(root_certificates, insecure, server=False)
    key = client_key(root_certificates, insecure, auth_key)
    host, port = split_address(server_address)
    check_server(host, port, root_certificates, wait_timeout)  # before the slow imports below

    from fedad_tutorial.flower.client_app import warm_up
    from fedad_tutorial.threads import set_threads

    set_threads(threads)  # this process trains: one intra-op thread unless told otherwise
    name = f"node {node_id} ({data_path.name})"
    answered, rejoining_since, busy_since = 0, None, None
    refused: NodeStillOnline | None = None  # the last time the server did not let this node's key in
    while True:
        try:
            return _supernode_session(data_path, node_id, server_address, root_certificates, insecure, wait_timeout,
                                      auth_key, key, name, say, answered,
                                      warm_up if rejoining_since is None and busy_since is None else None)
        except NodeStillOnline as refusal:
            refused = refusal
            now = time.monotonic()
            window = min(wait_timeout, STILL_ONLINE_WINDOW)
            if busy_since is None:
                busy_since = now
                say(f"{name}: the fedad server did not let this node's key in (it may still count a client with "
                    f"this key, stopped moments ago, as connected); trying again for up to {window:g} s")
            if now - busy_since > window:
                raise RuntimeError(str(refused)) from None
            time.sleep(STILL_ONLINE_RETRY)
            continue
        except ServerLost as lost:
            if refused is not None and not answered + lost.answered:  # never let in, and now the server is gone
                raise RuntimeError(str(refused)) from None
            answered += lost.answered
            if lost.answered or rejoining_since is None:
                rejoining_since = time.monotonic()
                say(f"{name}: lost the fedad server at {server_address} after {answered} message(s); waiting up "
                    f"to {wait_timeout:g} s (--wait-timeout) for it to come back")
        except RuntimeError:  # a SuperNode that could not join a restarted server yet (its keys not registered)
            if rejoining_since is None or time.monotonic() - rejoining_since > wait_timeout:
                raise
            time.sleep(1.0)
        left = wait_timeout - (time.monotonic() - rejoining_since)
        try:
            check_server(host, port, root_certificates, max(left, 0.0))
        except RuntimeError:
            raise UserError(f"{name}: the fedad server at {server_address} did not come back within "
                            f"{wait_timeout:g} s (--wait-timeout) after {answered} message(s); giving up") from None
        say(f"{name}: the fedad server at {server_address} answers again; joining it")


def _supernode_session(data_path: Path, node_id: int, server_address: str, root_certificates: Path | None,
                       insecure: bool, wait_timeout: float, auth_key: Path | None, key: PublicKey | None,
                       name: str, say: Callable[[str], None], answered_before: int,
                       warm_up: Callable[[], None] | None) -> str:
    """One SuperNode and the worker answering its messages, until the last message (the summary line) or
    until the server is lost (:class:`ServerLost`); both stopped, their state removed, however it ends."""
    from fedad_tutorial.flower.client_app import make_client_app
    from fedad_tutorial.flower.preflight import supernode_failure
    from fedad_tutorial.flower.runtime import ClientWorker

    tls = tls_args(root_certificates, insecure, server=False)
    host, port = split_address(server_address)
    node_config = f'data-path={json.dumps(str(data_path.resolve()))} node-id={int(node_id)}'
    runtime_port = free_port()
    auth = ["--auth-supernode-private-key", str(auth_key.resolve())] if key is not None else []
    procs = Processes()
    state = worker = notify_read = None
    try:
        state = private_state("client")
        log = state / "supernode.log"
        secret_file = state / "superexec.secret"
        secret = _secret(secret_file)
        notify_read, notify_write = os.pipe()  # the SuperNode writes a byte per message it stores
        env = {**flower_env(state / "home"), NOTIFY_FD: str(notify_write)}
        try:
            node = procs.start([sys.executable, "-m", "fedad_tutorial.flower.supernode", *tls, *auth,
                                "--superlink", server_address, "--isolation", "process",
                                "--superexec-auth-secret-file", str(secret_file), "--host", "127.0.0.1",
                                "--port", str(runtime_port), "--node-config", node_config,
                                "--max-wait-time", str(wait_timeout)], env, log, pass_fds=(notify_write,))
        finally:
            os.close(notify_write)
        if warm_up is not None:
            warm_up()  # while the SuperNode starts, not during the first round
        try:
            try:
                _wait_listening(node, runtime_port, wait_timeout, "SuperNode", log)
            except RuntimeError:
                if not reachable(host, port):
                    raise ServerLost(0) from None
                raise RuntimeError(supernode_failure(_tail(log, 12), server_address, key, node.poll())) from None
            with _FlowerLog(state / "clientapp.log"):
                worker = ClientWorker(f"127.0.0.1:{runtime_port}", secret, make_client_app())
                return _serve_messages(worker, node, log, host, port, server_address, wait_timeout, key, name, say,
                                       notify_read, answered_before)
        except RuntimeError as exc:
            if not isinstance(exc, ServerLost) and _ACTIVATION_REFUSED in _tail(log, 20):
                raise NodeStillOnline(str(exc)) from None
            raise
    finally:
        if notify_read is not None:
            os.close(notify_read)
        if worker is not None:
            worker.close()
        procs.stop()
        if state is not None:
            shutil.rmtree(state, ignore_errors=True)


def _serve_messages(worker, node, log: Path, host: str, port: int, address: str, wait_timeout: float,
                    key: PublicKey | None, name: str, say: Callable[[str], None], notified: int,
                    answered_before: int = 0) -> str:
    """Answer messages until the last one; :class:`ServerLost` as soon as the server is gone (a
    :class:`~fedad_tutorial.flower.watch.ServerWatch` looks, whatever call this thread waits in),
    RuntimeError if the SuperNode stops for another reason.

    Between messages it waits on ``notified`` (the SuperNode's pipe), asking the SuperNode for a
    task only when told of a message, or every :data:`FALLBACK_POLL` s."""
    import httpx
    from flwr.supercore.inflatable.inflatable_utils import ObjectPullError

    from fedad_tutorial.flower.preflight import supernode_failure
    from fedad_tutorial.flower.watch import ServerWatch

    answered = 0
    exit_code = _LogWatch(log)

    def stopped(code: int | None = None) -> RuntimeError:
        """Why the SuperNode stopped answering before the last message: the server is lost, or a failure."""
        try:
            node.wait(timeout=2.0)  # a SuperNode that ends on its own (its exit status says why) is ending now
        except subprocess.TimeoutExpired:
            pass
        if watch.server_gone():
            return ServerLost(answered)
        code = exit_code.check() if code is None else code
        return RuntimeError(supernode_failure(_tail(log, 12), address, key, code if code is not None else node.poll()))

    checked = time.monotonic()
    connected = False
    finished_at = None
    with ServerWatch(node, host, port) as watch:
        while True:
            try:
                message = worker.step()
            except ObjectPullError:  # a message whose contents never came (PULL_MAX_TIME): its server is gone
                raise ServerLost(answered) from None
            except (httpx.TransportError, httpx.HTTPStatusError):  # the SuperNode's Runtime API stopped answering
                raise stopped() from None
            now = time.monotonic()
            if message is not None:
                answered += 1
                if message.metadata.message_type == EVALUATE and message.content["config"].get("last", False):
                    finished_at = now
                    watch.finish()
            if node.poll() is not None or watch.lost.is_set():
                if finished_at is not None:
                    break
                raise stopped(node.poll())
            if now - checked > 1.0:
                checked = now
                code = exit_code.check()
                if exit_code.node_id is not None and not connected:
                    connected = True
                    say(f"{name}: connected to the fedad server at {address} (Flower node id {exit_code.node_id})")
                if code is not None and finished_at is None:  # Flower reported its exit but may linger
                    raise stopped(code)
                if watch.closed and finished_at is not None:
                    break  # the server stopped after collecting the last replies
            if finished_at is not None and now - finished_at > wait_timeout:
                break
            if message is None and select.select([notified], [], [], FALLBACK_POLL)[0]:
                os.read(notified, 4096)  # drain: the next step takes the task
    if worker.failures:
        raise RuntimeError(f"{name}: training finished, but this node failed to answer: {worker.failures[-1]}")
    return f"{name}: training finished ({answered_before + answered} messages answered)"
