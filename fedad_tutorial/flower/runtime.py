"""Our own long-lived app processes on Flower's Runtime API, instead of Flower's SuperExec.

By default a SuperLink and a SuperNode start a SuperExec that runs *whatever app a run names*:
anyone who can submit a run (Flower 1.41's Control API is on the same port, unauthenticated in the
open-source edition) runs their code on the server host and on every client. ``fedad`` starts
both with ``--isolation process`` and a SuperExec secret, and acquires the tasks itself:

- the server (:func:`run_server_task`) takes only the ServerApp task of the run it submitted,
  and runs this package's ServerApp code in its own process; any other run's task is failed;
- a client (:class:`ClientWorker`) answers a message only if the run's app bundle (FAB) is a
  fedad bundle, that is, names this package's apps and carries no code; the answer always comes
  from this package's installed ClientApp, never from code in a bundle.

Both keep the model code and the node's data loaded across messages (one Python process per
command, not one per message), and wait with short sleeps where Flower's own loops sleep
seconds (:mod:`~fedad_tutorial.flower.latency`).
"""

from __future__ import annotations

import io
import ssl
import threading
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterable
from typing import TypeVar

from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode, SubStatus
from flwr.common.serde import context_from_proto, context_to_proto, run_from_proto
from flwr.proto.runtime_pb2 import (  # pylint: disable=E0611
    AcquireTaskRequest,
    PullTaskInputRequest,
    PushTaskOutputRequest,
    SendTaskHeartbeatRequest,
)
from flwr.supercore.constant import TaskType
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SuperExecAuthHttpInterceptor,
)
from flwr.supercore.protobuf.client import ProtobufClient
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.grid import HttpGrid

from fedad_tutorial.flower.latency import PULL_MAX_TIME, shorten_pull_backoff

#: The app bundle's identity: ``[tool.flwr.app] publisher`` and the components it must name.
PUBLISHER = "fedad"
COMPONENTS = {"serverapp": "fedad_tutorial.flower.server_app:app", "clientapp": "fedad_tutorial.flower.client_app:app"}
_ACQUIRE = "/flwr.proto.Runtime/AcquireTask"
_C = TypeVar("_C", bound=ProtobufClient)
POLL = 0.05  # seconds between polls of a local Runtime API
#: Seconds a client's worker retries a call its own SuperNode does not answer (Flower retries for ever): a
#: SuperNode stopped because its server was lost (see :mod:`~fedad_tutorial.flower.watch`) must not hold the worker.
LOCAL_GIVE_UP = 5.0
#: The ServerApp's polls for replies start :data:`POLL` s apart and grow by this factor up to
#: :data:`MAX_POLL`: quick for quick replies, and not one SuperLink request every 50 ms while the nodes train.
POLL_GROWTH, MAX_POLL = 1.3, 0.25


def local_client(kind: type[_C], address: str, root_certificates: bytes | None, interceptors: list,
                 **options) -> _C:
    """A client of this server's own SuperLink, at the local ``address`` its Control and Runtime APIs
    listen on (``root_certificates=None``: plain HTTP).

    Over TLS the SuperLink's certificate must be signed by the CA, but need not name ``address``:
    it names the addresses *clients* dial, while a server listening on every interface (``0.0.0.0``)
    reaches its own SuperLink at 127.0.0.1, and one behind NAT listens on an address no certificate
    lists. The name adds nothing here: ``address`` is where the SuperLink this command started
    listens (:func:`~fedad_tutorial.flower.processes.owns_port` checked that before any call)."""
    if root_certificates is None:
        return kind(f"http://{address}", interceptors=interceptors, verify=False, **options)
    context = ssl.create_default_context(cadata=root_certificates.decode("ascii", errors="replace"))
    context.check_hostname = False  # the chain is still verified (CERT_REQUIRED)
    return kind(f"https://{address}", interceptors=interceptors, verify=context, **options)


def _client(address: str, root_certificates: bytes | None, component: str, *, secret: bytes | None = None,
            token: str | None = None, give_up: float | None = None) -> RuntimeHttpClient:
    """A Runtime API client whose failing calls are retried (Flower's back-off) for ``give_up`` seconds
    (``0``: one try, the caller decides what a failure means; ``None``: Flower's default, for ever)."""
    interceptors: list = [RuntimeVersionHttpInterceptor(component_name=component)]
    if secret is not None:
        interceptors.append(SuperExecAuthHttpInterceptor(master_secret=secret, protected_methods={_ACQUIRE}))
    if token is not None:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    invoker = make_simple_http_retry_invoker()
    if give_up == 0:
        invoker.max_tries = 1
    elif give_up is not None:
        invoker.max_time = give_up
    return local_client(RuntimeHttpClient, address, root_certificates, interceptors, retry_invoker=invoker)


def foreign_app(fab_content: bytes) -> str | None:
    """Why the app bundle is not fedad's (``None`` if it is): it must name this package's apps
    under publisher ``fedad`` and contain nothing but its ``pyproject.toml`` (no code to run)."""
    try:
        with zipfile.ZipFile(io.BytesIO(fab_content)) as fab:
            names = [n for n in fab.namelist() if not n.endswith("/")]
            code = [n for n in names if n != "pyproject.toml" and not n.startswith(".info/")]
            if code:
                return f"the app bundle carries files ({', '.join(code[:3])}); a fedad bundle has none"
            app = tomllib.loads(fab.read("pyproject.toml").decode())["tool"]["flwr"]["app"]
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return "the app bundle is not a fedad bundle"
    if app.get("publisher") != PUBLISHER or app.get("components") != COMPONENTS:
        return f"the app bundle names other apps ({app.get('components')}); this node runs only fedad's"
    return None


class _Heartbeat:
    """Tell the Runtime API every few seconds that a task is still being worked on."""

    def __init__(self, client: RuntimeHttpClient, every: float = 10.0) -> None:
        self.client, self.every, self.stopped = client, every, threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="fedad-task-heartbeat")

    def _beat(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                self.client.SendTaskHeartbeat(SendTaskHeartbeatRequest())
            except Exception:  # noqa: BLE001 - the task's own calls report a lost link
                pass

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()


def _acquire(client: RuntimeHttpClient, task_type: TaskType):
    """Claim the oldest pending task of ``task_type``; ``(task, token)`` or ``None``."""
    res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[task_type]))
    if res.HasField("task") and res.token:
        return res.task, res.token
    return None


def _refuse(address: str, root_certificates: bytes | None, token: str, reason: str) -> None:
    """End a task we will not run: pull its input (so it is running) and report it failed."""
    task_client = _client(address, root_certificates, "fedad", token=token)
    try:
        task_client.PullTaskInput(PullTaskInputRequest())
        task_client.PushTaskOutput(PushTaskOutputRequest(sub_status=SubStatus.FAILED, details=reason))
    except Exception:  # noqa: BLE001 - a refused task that cannot even be failed stays pending; harmless
        pass
    finally:
        task_client.close()


class FastGrid(HttpGrid):
    """Flower's HTTP Grid, but polling for replies after :data:`POLL` s (growing to :data:`MAX_POLL`)
    instead of every 3 s.

    A reply is listed as soon as its node announces it, before its contents are uploaded; pulling
    it then retries after a back-off that :func:`~fedad_tutorial.flower.latency.shorten_pull_backoff`
    starts short. It connects as :func:`local_client` does."""

    def _connect(self) -> None:
        """Flower's connection (its interceptors), over :func:`local_client`'s TLS."""
        self._client = local_client(RuntimeHttpClient, self._addr, self._cert, [
            self._tracing, RuntimeVersionHttpInterceptor(component_name="flwr-serverapp"),
            RuntimeTokenHttpInterceptor(token=self._token)], retry_invoker=self._retry_invoker)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        pending = set(self.push_messages(messages))
        end = time.monotonic() + (timeout if timeout is not None else 0.0)
        replies: list[Message] = []
        wait = POLL
        while pending:
            got = self.pull_messages(pending)
            replies += got
            pending -= {m.metadata.reply_to_message_id for m in got}
            if not pending or (timeout is not None and time.monotonic() >= end):
                break
            time.sleep(wait)
            wait = min(wait * POLL_GROWTH, MAX_POLL)
        return replies


def run_server_task(address: str, root_certificates: bytes | None, secret: bytes, run_id: int, fab_hash: str,
                    main: Callable[[HttpGrid, Context], None], alive: Callable[[], None],
                    timeout: float) -> None:
    """Acquire our run's ServerApp task from the SuperLink at ``address`` and run ``main`` on it.

    Tasks of other runs are failed. ``alive`` is called while waiting (it raises if the
    SuperLink died); after ``timeout`` seconds without our task, RuntimeError."""
    shorten_pull_backoff()  # the replies' contents: see FastGrid
    acquirer = _client(address, root_certificates, "SuperExec", secret=secret)
    deadline = time.monotonic() + timeout
    try:
        while True:
            alive()
            claimed = _acquire(acquirer, TaskType.SERVER_APP)
            if claimed is not None:
                task, token = claimed
                if task.run_id == run_id and task.fab_hash == fab_hash:
                    break
                _refuse(address, root_certificates, token, "this SuperLink runs only the fedad run it started")
                continue
            if time.monotonic() > deadline:
                raise RuntimeError(f"the SuperLink did not hand out our run's ServerApp task within {timeout:g} s")
            time.sleep(POLL)
    finally:
        acquirer.close()
    grid = FastGrid(runtime_api_address=address, insecure=root_certificates is None,
                    root_certificates=root_certificates, token=token)
    grid._connect()  # noqa: SLF001 - as Flower's flwr-serverapp does, before its first call
    runtime = grid._runtime_client  # noqa: SLF001
    status, details, context = SubStatus.FAILED, "the fedad server stopped", None
    try:
        with _Heartbeat(runtime):
            res = runtime.PullTaskInput(PullTaskInputRequest())
            TaskIdentity.task_id, TaskIdentity.run_id = res.task_id, res.run.run_id  # read by Flower's Grid
            TaskIdentity.node_id = res.context.node_id
            context = context_from_proto(res.context)
            grid.set_run(run_from_proto(res.run))
            main(grid, context)
            status, details = SubStatus.COMPLETED, ""
    except Exception as exc:
        details = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        try:
            runtime.PushTaskOutput(PushTaskOutputRequest(
                context=context_to_proto(context) if context is not None else None,
                sub_status=status, details=details))
        except Exception:  # noqa: BLE001 - the SuperLink may already be gone
            pass
        grid.close()


class ClientWorker:
    """Take the ClientApp tasks of a local SuperNode and answer them with fedad's ClientApp."""

    def __init__(self, address: str, secret: bytes, app: ClientApp) -> None:
        shorten_pull_backoff(PULL_MAX_TIME)  # a task is handed out before its message's contents reach the SuperNode
        self.address, self.app = address, app
        self.acquirer = _client(address, None, "SuperExec", secret=secret, give_up=0)
        self.refused: list[str] = []
        self.failures: list[str] = []

    def close(self) -> None:
        self.acquirer.close()

    def step(self) -> Message | None:
        """Handle at most one pending message; return the message handled (``None`` if none was waiting).

        ``httpx.TransportError`` if the local SuperNode does not answer for :data:`LOCAL_GIVE_UP` s."""
        from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message

        claimed = _acquire(self.acquirer, TaskType.CLIENT_APP)
        if claimed is None:
            return None
        client = _client(self.address, None, "flwr-clientapp", token=claimed[1], give_up=LOCAL_GIVE_UP)
        try:
            with _Heartbeat(client):
                message, context, _run, fab = pull_task_input(client)
                reason = foreign_app(fab.content)
                status = SubStatus.COMPLETED
                if reason is not None:
                    self.refused.append(reason)
                    reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"refused: {reason}"),
                                    reply_to=message)
                else:
                    try:
                        reply = self.app(message=message, context=context)
                    except Exception as exc:  # the server learns why; the node goes on
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                        reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, self.failures[-1]),
                                        reply_to=message)
                        status = SubStatus.FAILED
                push_message(client, reply, context)
                client.PushTaskOutput(PushTaskOutputRequest(context=context_to_proto(context),
                                                            sub_status=status, details=""))
            return message if reason is None else None
        finally:
            client.close()
