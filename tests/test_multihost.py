"""``fedad server`` and ``fedad client`` on separate hosts: each in a Linux network namespace of its own.

Every host is a network namespace with its loopback up and one veth link to a bridge, which lives in a
namespace of its own; addresses come from a random /24 of 198.18.0.0/15 (RFC 2544's benchmarking range,
never routed on the Internet) apart from every route and address of the machine. Nothing is added to the
machine's own namespace, so its interfaces and routes are never touched. The server host has two
addresses; its certificates (``fedad certs``) name only the first. The server listens there, or on every
interface, and then a client that dials the second address gets one line naming both. The two clients
that dial the first train the run ``fedad simulate --engine loop`` trains on the same CSVs. Only the fleet
port is open across hosts (everything else a Flower process listens on is on 127.0.0.1), and when the
test ends, passed or failed, no process runs in the namespaces and the namespaces, and with them their
links and the bridge, are gone.

The test needs root and iproute2's ``ip``; elsewhere it is skipped, saying why.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedad_tutorial.csvio import read_node_csv, write_node_csv
from fedad_tutorial.data import hold_out, make_cloud_federation
from fedad_tutorial.federated import RECOMMENDED, run_federated
from fedad_tutorial.flower.processes import Processes, alive, descendants

CLI = [sys.executable, "-m", "fedad_tutorial.cli"]
TRAIN = ["--rounds", "2", "--local-epochs", "1", "--batch-size", "32", "--quiet"]
TIMEOUT = 300  # seconds for the whole deployment (the machine may be busy)
NETWORK = ipaddress.ip_network("198.18.0.0/15")
PORT = 9092  # every host has its own ports: no other server can hold this one in the server's namespace


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def _machine_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of the machine's routes (every table) and addresses."""
    out = []
    for args in (["-j", "-4", "route", "show", "table", "all"], ["-j", "-4", "addr"]):
        for entry in json.loads(_ip(*args).stdout or "[]"):
            places = [entry.get("dst", "")] + [f"{a['local']}/{a['prefixlen']}" for a in entry.get("addr_info", [])]
            for place in places:
                try:
                    out.append(ipaddress.ip_network(place, strict=False))
                except ValueError:  # "default", "broadcast" and the like
                    pass
    return out


def free_subnet() -> ipaddress.IPv4Network:
    """A random /24 of :data:`NETWORK` overlapping none of the machine's routes or addresses."""
    taken = _machine_networks()
    choices = [net for net in NETWORK.subnets(new_prefix=24) if not any(net.overlaps(t) for t in taken)]
    assert choices, f"every /24 of {NETWORK} is routed on this machine"
    return random.choice(choices)


class Lan:
    """Hosts on one bridge. ``hosts`` maps a role to how many addresses it gets; ``addresses[role]`` lists
    them, ``namespace[role]`` names its namespace (with a suffix no other run uses)."""

    def __init__(self, hosts: dict[str, int]) -> None:
        self.subnet = free_subnet()
        suffix = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.bridge = f"fedad-lan-{suffix}"
        self.namespace = {role: f"fedad-{role}-{suffix}" for role in hosts}
        numbers = iter(self.subnet.hosts())
        self.addresses = {role: [str(next(numbers)) for _ in range(count)] for role, count in hosts.items()}
        self.made: list[str] = []

    def create(self) -> None:
        _ip("netns", "add", self.bridge)
        self.made.append(self.bridge)
        _ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge, "link", "set", "br0", "up")
        for k, (role, ns) in enumerate(self.namespace.items()):
            _ip("netns", "add", ns)
            self.made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            port = f"port{k}"  # interface names are per namespace: none can clash with the machine's
            _ip("-n", self.bridge, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.bridge, "link", "set", port, "master", "br0", "up")
            for address in self.addresses[role]:
                _ip("-n", ns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def run(self, role: str) -> list[str]:
        """The command prefix that runs a command on ``role``'s host (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.namespace[role]]

    def pids(self, *roles: str) -> list[int]:
        """The processes running in the namespaces of ``roles`` (default: all of ours, the bridge's too)."""
        names = [self.namespace[r] for r in roles] if roles else self.made
        return [int(p) for ns in names for p in _ip("netns", "pids", ns, check=False).stdout.split()]

    def remove(self) -> list[str]:
        """Kill what runs in the namespaces (only this test's commands ever enter them), delete them and
        with them their links and the bridge; return the namespaces still present (none, unless it failed)."""
        deadline = time.monotonic() + 10
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        for ns in reversed(self.made):
            _ip("netns", "delete", ns, check=False)
        listed = {line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()}
        return [ns for ns in self.made if ns in listed]


def _unavailable() -> str | None:
    """Why network namespaces cannot be made here (``None``: they can)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) to make network namespaces"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    return None


@pytest.fixture
def lan():
    """The server host (two addresses), two client hosts and one more host, on one bridge; removed at the
    end, passed or failed (the finalizer fails the test if anything of it is left)."""
    if reason := _unavailable():
        pytest.skip(reason)
    network = Lan({"server": 2, "node1": 1, "node2": 1, "elsewhere": 1})
    try:
        network.create()
    except subprocess.CalledProcessError as exc:
        network.remove()
        pytest.skip(f"cannot make network namespaces here: `{' '.join(exc.cmd)}` said {exc.stderr.strip()!r}")
    yield network
    left = network.remove()
    assert not left, f"network namespaces left behind: {left}"


@pytest.fixture
def started(tmp_path):
    """Start commands in the background; the finalizer stops them and their descendants by PID."""
    group = Processes()

    def start(name: str, cmd: list[str]) -> subprocess.Popen:
        return group.start(cmd, dict(os.environ), tmp_path / f"{name}.log")

    yield start
    group.stop()


def _listening(pid: int) -> set[tuple[str, int]]:
    """The TCP addresses listening in the network namespace of process ``pid``: (address, port)."""
    out = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # little-endian 32-bit words
            out.add((str(ipaddress.ip_address(raw)), int(port, 16)))
    return out


def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _reference(data: Path, names: list[str]) -> pd.DataFrame:
    """`fedad simulate --engine loop` on the same CSVs with :data:`TRAIN`'s settings."""
    nodes = [read_node_csv(data / f"{n}.csv") for n in names]
    config = replace(RECOMMENDED, rounds=2, local_epochs=1, batch_size=32, engine="loop")
    return run_federated(hold_out(nodes, seed=42), config, feature_names=nodes[0].feature_names,
                         progress=False).history


def _fedad(*args: str) -> None:
    subprocess.run([*CLI, *args], check=True, capture_output=True, timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize("listen", ["named address", "every interface"])
def test_server_and_clients_on_separate_hosts_train_like_simulate(lan, started, tmp_path, listen):
    """The server listens on the address its certificate names, or on 0.0.0.0 (as behind NAT), where it
    reaches its own SuperLink at 127.0.0.1, which the certificate does not name; only then does its second
    address answer, and a client dialling it is told which names the certificate holds."""
    for ns in lan.namespace.values():
        assert "UP" in json.loads(_ip("-j", "-n", ns, "link", "show", "lo").stdout)[0]["flags"]
    data = tmp_path / "data"
    for node in make_cloud_federation(2, 150, 8, seed=5):
        write_node_csv(data / f"{node.name}.csv", node)
    named, other = lan.addresses["server"]
    _fedad("certs", "--host", named, "--output", str(tmp_path / "certs"))
    for k in (1, 2):
        _fedad("keygen", "--output", str(tmp_path / "keys" / f"node_{k}"))
    (tmp_path / "authorized_keys").write_text("".join((tmp_path / "keys" / f"node_{k}.pub").read_text()
                                                      for k in (1, 2)))
    out = tmp_path / "run"
    host = named if listen == "named address" else "0.0.0.0"
    server = started("server", [*lan.run("server"), *CLI, "server", "--address", f"{host}:{PORT}", *TRAIN,
                                "--min-clients", "2", "--output-dir", str(out), "--wait-timeout", "240",
                                "--certificates", str(tmp_path / "certs"),
                                "--authorized-keys", str(tmp_path / "authorized_keys")])

    def client(k: int, role: str, address: str) -> list[str]:
        return [*lan.run(role), *CLI, "client", "--node-id", str(k), "--data-path", str(data / f"node_{k}.csv"),
                "--server-address", f"{address}:{PORT}", "--wait-timeout", "120",
                "--root-certificates", str(tmp_path / "certs" / "ca.crt"),
                "--auth-key", str(tmp_path / "keys" / f"node_{k}")]

    if host == "0.0.0.0":  # the second address is not in the certificate: one line naming both, exit 2, nothing left
        wrong = subprocess.run(client(1, "elsewhere", other), capture_output=True, text=True, timeout=TIMEOUT)
        assert wrong.returncode == 2, wrong.stderr
        assert wrong.stderr == (f"fedad client: error: the certificate of the fedad server at {other}:{PORT} is not "
                                f"valid for the name '{other}': it lists {named}; connect with one of those, or "
                                f"make certificates for {other} with `fedad certs --host {other}`\n")
        assert lan.pids("elsewhere") == []

    clients = []
    for k in (1, 2):
        clients.append(proc := started(f"client{k}", client(k, f"node{k}", named)))
        _until(lambda k=k, proc=proc: "connected to the fedad server" in (tmp_path / f"client{k}.log").read_text()
               or proc.poll() is not None or server.poll() is not None, TIMEOUT, f"client {k} to connect")
        assert server.poll() is None, (tmp_path / "server.log").read_text()
        assert proc.poll() is None, (tmp_path / f"client{k}.log").read_text()
        if k == 1:  # the server waits for client 2: across hosts only its port is open, the rest is on loopback
            assert _listening(server.pid) == {(host, PORT)}, _listening(server.pid)
            assert {address for address, _ in _listening(proc.pid)} == {"127.0.0.1"}, _listening(proc.pid)
    trees = [[p.pid, *descendants(p.pid)] for p in (server, *clients)]

    assert server.wait(timeout=TIMEOUT) == 0, (tmp_path / "server.log").read_text()
    assert [c.wait(timeout=60) for c in clients] == [0, 0]
    history = pd.read_csv(out / "history.csv")
    reference = _reference(data, ["node_1", "node_2"])
    assert list(history.columns) == list(reference.columns)
    assert history[["round", "client"]].equals(reference[["round", "client"]])
    np.testing.assert_allclose(history[["loss", "threshold", "f1", "roc_auc"]].to_numpy(),
                               reference[["loss", "threshold", "f1", "roc_auc"]].to_numpy(), rtol=1e-5)
    assert sorted(json.loads((out / "summary.json").read_text())["flower"]["nodes"]) == ["node_1", "node_2"]
    _until(lambda: not any(alive(p) for tree in trees for p in tree) and not lan.pids(), 15,
           "every process of the run to end")


def test_a_firewall_that_drops_the_connection_reads_timed_out(monkeypatch):
    """A firewall that drops packets makes each try time out (TimeoutError has no strerror): the message
    names that, as it names a refusal."""
    import socket

    from fedad_tutorial.flower.preflight import check_server

    def dropped(*_args, **_kwargs):
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", dropped)
    with pytest.raises(RuntimeError) as info:
        check_server("198.18.0.1", PORT, None, 0)
    assert str(info.value) == (f"cannot reach the fedad server at 198.18.0.1:{PORT} within 0 s (timed out): "
                               "is it running, and are the address and port right?")
