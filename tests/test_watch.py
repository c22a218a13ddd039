"""A ``fedad client`` notices a lost server whatever call its main thread waits in.

The bug these guard against: the server was killed while a client's worker waited in a call to its
SuperNode (for a message's contents, or on a SuperNode retrying the dead server); the client never ran its
between-calls checks, never said it lost the server, and the resumed server waited for it in vain. Now
a :class:`~fedad_tutorial.flower.watch.ServerWatch` thread looks at the server's port and the SuperNode,
and a SuperNode the restarted server does not know stops with
:data:`~fedad_tutorial.flower.supernode.FORGOTTEN`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import httpx
import pytest

from fedad_tutorial.flower import deploy, supernode, watch

#: Seconds within which the watch must have decided (it needs MISSES checks EVERY s apart; the machine may be busy).
DECIDED = 15.0


@pytest.fixture
def server():
    """A listening TCP port standing in for the fedad server; ``close()`` is the server being killed."""
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener
    listener.close()


@pytest.fixture
def node(tmp_path):
    """A process standing in for the SuperNode: ``exit(N)`` on a line to its stdin, else it sleeps."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(int(sys.stdin.readline() or 0))"],
                            stdin=subprocess.PIPE, text=True)
    yield proc
    proc.kill()
    proc.wait()


def _until(condition, timeout: float = DECIDED) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout
        time.sleep(0.05)
    return time.monotonic() - start


def test_a_closed_port_means_the_server_is_lost_and_the_supernode_is_stopped(server, node):
    port = server.getsockname()[1]
    with watch.ServerWatch(node, "127.0.0.1", port) as seen:
        time.sleep(3 * watch.EVERY)
        assert not seen.lost.is_set() and not seen.closed and node.poll() is None  # the server is there
        server.close()
        _until(seen.lost.is_set)
    assert node.wait(timeout=5) == -9  # killed: whatever call the worker waits in on it ends


def test_a_supernode_the_restarted_server_does_not_know_means_the_server_is_lost(server, node):
    with watch.ServerWatch(node, "127.0.0.1", server.getsockname()[1]) as seen:
        node.communicate(f"{supernode.FORGOTTEN}\n")
        _until(seen.lost.is_set)


def test_a_supernode_failing_otherwise_is_left_for_the_caller_to_report(server, node):
    with watch.ServerWatch(node, "127.0.0.1", server.getsockname()[1]) as seen:
        node.communicate("1\n")
        time.sleep(4 * watch.EVERY)
    assert not seen.lost.is_set()


def test_after_the_last_message_a_server_that_stops_is_expected(server, node):
    with watch.ServerWatch(node, "127.0.0.1", server.getsockname()[1]) as seen:
        seen.finish()
        server.close()
        _until(lambda: seen.closed)
        time.sleep((watch.MISSES + 1) * watch.EVERY)
    assert not seen.lost.is_set() and node.poll() is None


class _StuckWorker:
    """A worker waiting in a call to its SuperNode (as it did for a message's contents a dead server never
    sent): the call ends, with Flower's transport error, when that SuperNode is stopped (or, so that a client
    that never stops it fails the test instead of hanging it, after twice :data:`DECIDED` s)."""

    failures: list[str] = []

    def __init__(self, node: subprocess.Popen) -> None:
        self.node = node

    def step(self):
        start = time.monotonic()
        while self.node.poll() is None and time.monotonic() - start < 2 * DECIDED:
            time.sleep(0.05)
        raise httpx.ConnectError("All connection attempts failed")


def _serve(tmp_path, node, port: int, worker) -> tuple[BaseException | None, float]:
    log = tmp_path / "supernode.log"
    log.write_text("")
    read, write = os.pipe()
    start = time.monotonic()
    try:
        deploy._serve_messages(worker, node, log, "127.0.0.1", port, f"127.0.0.1:{port}", 60.0, None,
                               "node 1", print, read)
    except BaseException as exc:  # noqa: BLE001 - the test looks at what came out
        return exc, time.monotonic() - start
    finally:
        os.close(read)
        os.close(write)
    return None, time.monotonic() - start


def test_a_worker_stuck_in_a_call_when_the_server_dies_still_gets_server_lost(tmp_path, server, node):
    port = server.getsockname()[1]
    threading.Timer(1.0, server.close).start()
    raised, took = _serve(tmp_path, node, port, _StuckWorker(node))
    assert isinstance(raised, deploy.ServerLost) and raised.answered == 0, raised
    assert took < DECIDED


def test_a_supernode_that_the_restarted_server_does_not_know_gets_server_lost_though_the_port_answers(
        tmp_path, server, node):
    """The server came back before the port was seen closed: only the SuperNode can tell (exit FORGOTTEN)."""
    threading.Timer(1.0, node.communicate, [f"{supernode.FORGOTTEN}\n"]).start()
    raised, took = _serve(tmp_path, node, server.getsockname()[1], _StuckWorker(node))
    assert isinstance(raised, deploy.ServerLost), raised
    assert took < DECIDED


def test_a_supernode_failing_while_the_server_is_there_is_a_failure_not_a_lost_server(tmp_path, server, node):
    threading.Timer(1.0, node.communicate, ["1\n"]).start()
    raised, _ = _serve(tmp_path, node, server.getsockname()[1], _StuckWorker(node))
    assert isinstance(raised, RuntimeError) and not isinstance(raised, deploy.ServerLost), raised


@pytest.fixture
def fleet(monkeypatch):
    """Flower's Fleet client with its HTTP call replaced by ``answer(path)``; ``os._exit`` raises instead."""
    from flwr.supernode.fleet_http_client import FleetHttpClient

    calls = SimpleNamespace(answer=None)
    monkeypatch.setattr(FleetHttpClient, "_unary_unary", lambda self, *, path, **kw: calls.answer(path))
    monkeypatch.setattr(supernode.os, "_exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))
    supernode.exit_when_forgotten()
    return SimpleNamespace(call=lambda path: FleetHttpClient._unary_unary(None, path=path), calls=calls)


def _refused(status: int):
    def answer(path):
        request = httpx.Request("POST", f"https://server{path}")
        raise httpx.HTTPStatusError("refused", request=request, response=httpx.Response(status, request=request))
    return answer


@pytest.mark.parametrize("path", ["/v1/fleet/pull-messages", "/v1/fleet/send-node-heartbeat",
                                  "/v1/fleet/pull-object"])
def test_a_supernode_whose_admitted_node_is_refused_stops_as_forgotten(fleet, path, capsys):
    fleet.calls.answer = _refused(401)
    with pytest.raises(SystemExit) as stop:
        fleet.call(path)
    assert stop.value.code == supernode.FORGOTTEN
    assert capsys.readouterr().err == supernode.FORGOTTEN_LINE + "\n"


def test_an_unsuccessful_heartbeat_without_node_authentication_stops_as_forgotten(fleet):
    fleet.calls.answer = lambda path: SimpleNamespace(success=False)
    with pytest.raises(SystemExit) as stop:
        fleet.call("/v1/fleet/send-node-heartbeat")
    assert stop.value.code == supernode.FORGOTTEN
    fleet.calls.answer = lambda path: SimpleNamespace(success=True)
    assert fleet.call("/v1/fleet/send-node-heartbeat").success


@pytest.mark.parametrize("path", ["/v1/fleet/register-node", "/v1/fleet/activate-node"])
def test_a_key_refused_while_joining_is_left_to_flower_and_its_message(fleet, path):
    """Not a restart: a key the server does not list (``fedad client`` explains it from the SuperNode's log)."""
    fleet.calls.answer = _refused(401)
    with pytest.raises(httpx.HTTPStatusError):
        fleet.call(path)


def test_other_refusals_are_left_to_flower(fleet):
    fleet.calls.answer = _refused(503)
    with pytest.raises(httpx.HTTPStatusError):
        fleet.call("/v1/fleet/pull-messages")


def test_the_worker_gives_up_on_a_supernode_that_does_not_answer(monkeypatch):
    """Flower's clients retry a local Runtime API for ever; the worker's task calls stop after LOCAL_GIVE_UP s."""
    from fedad_tutorial.flower import runtime
    from fedad_tutorial.flower.processes import free_port

    monkeypatch.setattr(runtime, "LOCAL_GIVE_UP", 1.0)
    client = runtime._client(f"127.0.0.1:{free_port()}", None, "flwr-clientapp", token="t",
                             give_up=runtime.LOCAL_GIVE_UP)
    start = time.monotonic()
    with pytest.raises(httpx.TransportError):
        client.SendTaskHeartbeat(runtime.SendTaskHeartbeatRequest())
    assert time.monotonic() - start < 10
    client.close()

