"""Hostile input to the deployment commands: ``keygen``, ``certs``, ``server`` and ``client``, each input
through the same families of cases (issue 26).

Families: special files (FIFO, character device when run as root, socket, folder), symlinks (dangling and
live), existing user files, odd names (separators, quotes, HTML, ``$``, newline, control characters,
bytes that are not UTF-8), odd contents (huge, binary, not UTF-8, the wrong kind of key), addresses, and
signals between steps. A refused case must exit 2 with one line on stderr, no traceback, nothing written
and nothing of the user's changed (every file under the test's folders compared byte for byte, with its
type, mode and link target); an accepted odd name must be taken literally. The server's accepted cases
stop at a port that is taken, which proves the input got past every check without starting a process.

Everything runs in this process under a SIGALRM guard (a FIFO that blocks fails the test instead of
hanging it); only the ``kill -9`` case starts real processes and is marked slow.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedad_tutorial.cli import main
from fedad_tutorial.flower import certs as certs_module
from fedad_tutorial.flower import deploy, files
from fedad_tutorial.flower.certs import generate_certificates
from fedad_tutorial.flower.keys import generate_key
from fedad_tutorial.flower.processes import OWNER_FILE, Processes, alive, descendants, owner, state_root

GUARD = 30  # seconds any one case may take (a blocked open would otherwise hang the suite)
ROOT_USER = os.geteuid() == 0
NOT_UTF8 = os.fsdecode(b"bad\xff")


@dataclass(frozen=True)
class Base:
    """Valid material every case starts from (a user's files: they must not change)."""

    root: Path
    certs: Path
    key: Path
    authorized: Path
    csv: Path


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    from fedad_tutorial.csvio import write_node_csv
    from fedad_tutorial.data import make_cloud_federation

    root = tmp_path_factory.mktemp("hostile_base")
    certs = generate_certificates(root / "certs", ["127.0.0.1", "localhost"]).folder
    line = generate_key(root / "k1").line
    (root / "authorized_keys").write_text(line + "\n")
    [node] = make_cloud_federation(1, 60, 4, seed=3)
    write_node_csv(root / "node_1.csv", node)
    return Base(root, certs, root / "k1", root / "authorized_keys", root / "node_1.csv")


def snapshot(*folders: Path) -> dict:
    """Every entry under ``folders`` (never following links): type, mode, size and bytes or link target."""
    out = {}
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
            for name in dirnames + filenames:
                path = Path(dirpath, name)
                info = os.lstat(path)
                if stat.S_ISLNK(info.st_mode):
                    what = ("link", os.readlink(path))
                elif stat.S_ISREG(info.st_mode):
                    what = ("file", path.read_bytes())
                else:
                    what = ("other", info.st_rdev)
                out[str(path)] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), what)
    return out


# --- the hostile objects --------------------------------------------------------------------------------------

def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def device(path: Path) -> Path:
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # a second /dev/null
    return path


def unix_socket(path: Path) -> Path:
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
    return path


def folder(path: Path) -> Path:
    path.mkdir()
    return path


def dangling(path: Path) -> Path:
    path.symlink_to(path.parent / "nowhere")
    return path


def user_file(path: Path, text: str = "the user's own file\n") -> Path:
    path.write_text(text)
    return path


def live_link(path: Path) -> Path:
    path.symlink_to(user_file(path.parent / f"{path.name}.target"))
    return path


def huge(path: Path) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(2 << 20)  # sparse: 2 MiB of zeros
    return path


SPECIAL: dict[str, Callable[[Path], Path]] = {"fifo": fifo, "socket": unix_socket, "folder": folder}
if ROOT_USER:
    SPECIAL["device"] = device
#: How a refusal names each kind of special file.
KIND = {"fifo": "a FIFO", "socket": "a socket", "folder": "a folder", "device": "a character device"}


# --- the cases --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    path: str  # the command and its input
    family: str
    name: str
    argv: Callable[[Path, Base], list[str]]  # builds the hostile object under the case's folder, returns argv
    needles: tuple[str, ...] = ()  # words the one-line error must hold
    accepted: Callable[[Path], None] | None = None  # for names that are odd but legal: what must exist after

    @property
    def id(self) -> str:
        return f"{self.path}/{self.family}/{self.name}"


def _keygen(output: str | Path, *extra: str) -> list[str]:
    return ["keygen", "--output", str(output), *extra]


def _certs(tmp: Path, *extra: str, output: Path | None = None) -> list[str]:
    return ["certs", "--host", "localhost", "--output", str(output or tmp / "certs"), *extra]


def _server(tmp: Path, base: Base, *, certificates: Path | None = None, authorized: Path | None = None,
            address: str | None = None) -> list[str]:
    return ["server", "--certificates", str(certificates or base.certs), "--authorized-keys",
            str(authorized or base.authorized), "--address", address or f"127.0.0.1:{BUSY.port}",
            "--output-dir", str(tmp / "run"), "--quiet"]


def _client(base: Base, *, auth_key: Path | None = None, root: Path | None = None, address: str | None = None
            ) -> list[str]:
    return ["client", "--node-id", "1", "--data-path", str(base.csv), "--auth-key", str(auth_key or base.key),
            "--root-certificates", str(root or base.certs / "ca.crt"),
            "--server-address", address or "127.0.0.1:1", "--wait-timeout", "1"]


class _Busy:
    """A port that is taken for the whole module (the server's accepted cases stop there)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]


BUSY = _Busy()


def _keygen_cases() -> list[Case]:
    out = []
    for kind, make in SPECIAL.items():
        out.append(Case("keygen --output", "special", kind, lambda t, b, m=make: _keygen(m(t / "node")),
                        ("node",)))
        out.append(Case("keygen --output", "special", f"{kind} as .pub",
                        lambda t, b, m=make: (m(t / "node.pub"), _keygen(t / "node"))[1], ("node.pub",)))
    out += [
        Case("keygen --output", "symlink", "dangling", lambda t, b: _keygen(dangling(t / "node")), ("symlink",)),
        Case("keygen --output", "symlink", "dangling .pub",
             lambda t, b: (dangling(t / "node.pub"), _keygen(t / "node"))[1], ("node.pub", "symlink")),
        Case("keygen --output", "symlink", "live", lambda t, b: _keygen(live_link(t / "node")), ("symlink",)),
        Case("keygen --output", "symlink", "live .pub",
             lambda t, b: (live_link(t / "node.pub"), _keygen(t / "node"))[1], ("symlink",)),
        Case("keygen --output", "existing", "file", lambda t, b: _keygen(user_file(t / "node")), ("already exists",)),
        Case("keygen --output", "existing", ".pub only",
             lambda t, b: (user_file(t / "node.pub"), _keygen(t / "node"))[1], ("node.pub", "already exists")),
        Case("keygen --output", "existing", "parent is a file",
             lambda t, b: _keygen(user_file(t / "keys") / "node"), ("not a folder",)),
        Case("keygen --output", "existing", "parent is a dangling link",
             lambda t, b: _keygen(dangling(t / "keys") / "node"), ("not a folder",)),
        Case("keygen --output", "names", "newline", lambda t, b: _keygen(t / "no\nde"), ("control character",)),
        Case("keygen --output", "names", "escape", lambda t, b: _keygen(t / "no\x1bde"), ("control character",)),
        Case("keygen --output", "names", "not UTF-8", lambda t, b: _keygen(t / NOT_UTF8), ("control character",)),
        Case("keygen --output", "names", "a folder's spelling", lambda t, b: _keygen(f"{t}/"), ("already exists",)),
        Case("keygen --output", "names", "dot", lambda t, b: _keygen("."), ("name the private",)),
        Case("keygen --output", "names", "empty", lambda t, b: _keygen(""), ("name the private",)),
        Case("keygen --comment", "names", "newline", lambda t, b: _keygen(t / "n", "--comment", "a\nb"),
             ("--comment",)),
        Case("keygen --comment", "names", "carriage return", lambda t, b: _keygen(t / "n", "--comment", "a\rb"),
             ("--comment",)),
        Case("keygen --comment", "names", "not UTF-8", lambda t, b: _keygen(t / "n", "--comment", NOT_UTF8),
             ("--comment",)),
    ]
    for label, name in (("quotes", "it's \"mine\""), ("HTML", "<b>&amp;</b>"), ("dollar", "$HOME$(id)"),
                        ("separators", "a/b/c"), ("spaces", " lead and trail ")):
        out.append(Case("keygen --output", "names", f"{label} (accepted)", lambda t, b, n=name: _keygen(t / n),
                        accepted=lambda t, n=name: _both_keys(t / n)))
        out.append(Case("keygen --comment", "names", f"{label} (accepted)",
                        lambda t, b, n=name: _keygen(t / "n", "--comment", n),
                        accepted=lambda t, n=name: _comment_is(t / "n.pub", n.strip())))
    return out


def _both_keys(path: Path) -> None:
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.with_name(path.name + ".pub").read_text().startswith("ecdsa-sha2-nistp384 ")


def _comment_is(pub: Path, comment: str) -> None:
    text = pub.read_text()
    assert text.count("\n") == 1 and text.rstrip("\n").split(" ", 2)[2] == comment


def _certs_cases() -> list[Case]:
    out = []
    for kind, make in SPECIAL.items():
        if kind != "folder":  # an empty folder is accepted (below)
            out.append(Case("certs --output", "special", kind, lambda t, b, m=make: _certs(t, output=m(t / "certs")),
                            ("certs",)))
        out.append(Case("certs --ca-key", "special", kind,
                        lambda t, b, m=make: _certs(t, "--ca-key", str(m(t / "ca.key"))), ("ca.key",)))
    out += [
        Case("certs --output", "symlink", "dangling", lambda t, b: _certs(t, output=dangling(t / "certs")),
             ("symlink",)),
        Case("certs --output", "symlink", "live, to an empty folder",
             lambda t, b: (folder(t / "empty"), (t / "certs").symlink_to(t / "empty"), _certs(t))[2], ("symlink",)),
        Case("certs --ca-key", "symlink", "dangling", lambda t, b: _certs(t, "--ca-key", str(dangling(t / "ca.key"))),
             ("symlink",)),
        Case("certs --ca-key", "symlink", "live", lambda t, b: _certs(t, "--ca-key", str(live_link(t / "ca.key"))),
             ("symlink",)),
        Case("certs --output", "existing", "a file", lambda t, b: _certs(t, output=user_file(t / "certs")),
             ("already exists",)),
        Case("certs --output", "existing", "a folder with the user's files",
             lambda t, b: (folder(t / "certs"), user_file(t / "certs" / "notes.txt"), _certs(t))[2],
             ("already exists",)),
        Case("certs --ca-key", "existing", "the default place",
             lambda t, b: (user_file(t / "certs-ca.key"), _certs(t))[1], ("certs-ca.key", "already exists")),
        Case("certs --ca-key", "existing", "inside the output folder",
             lambda t, b: _certs(t, "--ca-key", str(t / "certs" / "ca.key")), ("must stay apart",)),
        Case("certs --output", "names", "newline", lambda t, b: _certs(t, output=t / "ce\nrts"),
             ("control character",)),
        Case("certs --output", "names", "not UTF-8", lambda t, b: _certs(t, output=t / NOT_UTF8),
             ("control character",)),
        Case("certs --output", "names", "dot", lambda t, b: ["certs", "--host", "localhost", "--output", "."],
             ("name a new folder",)),
        Case("certs --ca-key", "names", "newline", lambda t, b: _certs(t, "--ca-key", str(t / "ca\nkey")),
             ("control character",)),
        Case("certs --output", "special", "empty folder (accepted)", lambda t, b: _certs(t, output=folder(t / "certs")),
             accepted=lambda t: _cert_files(t / "certs")),
    ]
    for label, host in (("newline", "a\nb.example"), ("quotes", "'a.example'"), ("HTML", "<a>.example"),
                        ("dollar", "$HOST"), ("not UTF-8", NOT_UTF8), ("empty", ""), ("a port", "a.example:8000"),
                        ("every interface", "0.0.0.0"), ("a space", "a .example"), ("a path", "a/b")):
        out.append(Case("certs --host", "names", label,
                        lambda t, b, h=host: ["certs", f"--host={h}", "--output", str(t / "certs")], ("--host",)))
    for label, name in (("quotes", "it's \"certs\""), ("HTML", "<certs>&"), ("dollar", "$certs"),
                        ("separators", "a/b/certs")):
        out.append(Case("certs --output", "names", f"{label} (accepted)",
                        lambda t, b, n=name: _certs(t, output=t / n), accepted=lambda t, n=name: _cert_files(t / n)))
    return out


def _cert_files(path: Path) -> None:
    assert sorted(os.listdir(path)) == ["ca.crt", "server.key", "server.pem"]
    assert path.with_name(path.name + "-ca.key").stat().st_mode & 0o777 == 0o600


def _copy_certs(t: Path, base: Base, replace: str, make: Callable[[Path], Path]) -> Path:
    out = folder(t / "certs")
    for name in ("ca.crt", "server.pem", "server.key"):
        if name == replace:
            make(out / name)
        else:
            (out / name).write_bytes((base.certs / name).read_bytes())
    return out


def _server_cases() -> list[Case]:
    out = []
    for kind, make in SPECIAL.items():
        out.append(Case("server --authorized-keys", "special", kind,
                        lambda t, b, m=make: _server(t, b, authorized=m(t / "authorized_keys")), (KIND[kind],)))
        for name in ("ca.crt", "server.pem", "server.key"):
            out.append(Case("server --certificates", "special", f"{kind} as {name}",
                            lambda t, b, m=make, n=name: _server(t, b, certificates=_copy_certs(t, b, n, m)),
                            (name, KIND[kind])))
    out += [
        Case("server --certificates", "special", "a file as DIR",
             lambda t, b: _server(t, b, certificates=user_file(t / "certs")), ("ca.crt",)),
        Case("server --authorized-keys", "symlink", "dangling",
             lambda t, b: _server(t, b, authorized=dangling(t / "ak")), ("no such file",)),
        Case("server --certificates", "symlink", "dangling server.pem",
             lambda t, b: _server(t, b, certificates=_copy_certs(t, b, "server.pem", dangling)), ("server.pem",)),
        Case("server --authorized-keys", "contents", "huge", lambda t, b: _server(t, b, authorized=huge(t / "ak")),
             ("too large",)),
        Case("server --authorized-keys", "contents", "not UTF-8",
             lambda t, b: _server(t, b, authorized=_bytes(t / "ak", b"# ok\n\xff\xfe\n")), ("line 2", "not UTF-8")),
        Case("server --authorized-keys", "contents", "a private key",
             lambda t, b: _server(t, b, authorized=_bytes(t / "ak", b.key.read_bytes())), ("line 1",)),
        Case("server --authorized-keys", "contents", "a key line with HTML and a newline in its name",
             lambda t, b: _server(t, b, authorized=_bytes(t / "ak\n<b>", b"garbage\n")), ("'", "line 1")),
        Case("server --certificates", "contents", "garbage server.pem",
             lambda t, b: _server(t, b, certificates=_copy_certs(t, b, "server.pem", lambda p: _bytes(p, b"\0" * 99))),
             ("not a PEM certificate",)),
        Case("server --certificates", "contents", "huge ca.crt",
             lambda t, b: _server(t, b, certificates=_copy_certs(t, b, "ca.crt", huge)), ("too large",)),
        Case("server --authorized-keys", "names", "missing, newline in the name",
             lambda t, b: _server(t, b, authorized=t / "a\nb"), ("'",)),
        Case("server --address", "addresses", "does not resolve",
             lambda t, b: _server(t, b, address="no-such-host.invalid:8000"), ("cannot resolve",)),
        Case("server --address", "addresses", "not this machine's",
             lambda t, b: _server(t, b, address="192.0.2.1:8000"), ("not an address of this machine",)),
        Case("server --address", "addresses", "no port", lambda t, b: _server(t, b, address="127.0.0.1"),
             ("HOST:PORT",)),
        Case("server --address", "addresses", "port out of range",
             lambda t, b: _server(t, b, address="127.0.0.1:70000"), ("HOST:PORT",)),
        Case("server --address", "addresses", "newline", lambda t, b: _server(t, b, address="local\nhost:8000"),
             ("cannot resolve",)),
        Case("server --address", "addresses", "port taken", lambda t, b: _server(t, b), ("already in use",)),
        Case("server --authorized-keys", "symlink", "live, to the real list (accepted: stops at the taken port)",
             lambda t, b: _server(t, b, authorized=_link_to(t / "ak", b.authorized)), ("already in use",)),
        Case("server --authorized-keys", "names", "quotes, HTML and $ (accepted: stops at the taken port)",
             lambda t, b: _server(t, b, authorized=_bytes(t / "it's <b>$x", b.authorized.read_bytes())),
             ("already in use",)),
    ]
    return out


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _link_to(path: Path, target: Path) -> Path:
    path.symlink_to(target)
    return path


def _client_cases() -> list[Case]:
    out = []
    for kind, make in SPECIAL.items():
        out.append(Case("client --auth-key", "special", kind, lambda t, b, m=make: _client(b, auth_key=m(t / "key")),
                        (KIND[kind],)))
        out.append(Case("client --root-certificates", "special", kind,
                        lambda t, b, m=make: _client(b, root=m(t / "ca.crt")), (KIND[kind],)))
    out += [
        Case("client --auth-key", "symlink", "dangling", lambda t, b: _client(b, auth_key=dangling(t / "key")),
             ("no such file",)),
        Case("client --root-certificates", "symlink", "dangling", lambda t, b: _client(b, root=dangling(t / "ca")),
             ("no such file",)),
        Case("client --auth-key", "contents", "huge", lambda t, b: _client(b, auth_key=huge(t / "key")),
             ("too large",)),
        Case("client --auth-key", "contents", "a public key", lambda t, b: _client(
            b, auth_key=_bytes(t / "key", b.authorized.read_bytes())), ("not an unencrypted OpenSSH private key",)),
        Case("client --auth-key", "contents", "binary", lambda t, b: _client(b, auth_key=_bytes(t / "k", b"\xff" * 64)),
             ("not an unencrypted OpenSSH private key",)),
        Case("client --root-certificates", "contents", "a private key",
             lambda t, b: _client(b, root=b.certs / "server.key"), ("not a PEM certificate",)),
        Case("client --root-certificates", "contents", "huge", lambda t, b: _client(b, root=huge(t / "ca")),
             ("too large",)),
        Case("client --auth-key", "names", "missing, not UTF-8 and a newline",
             lambda t, b: _client(b, auth_key=t / f"{NOT_UTF8}\nkey"), ("'",)),
        Case("client --server-address", "addresses", "does not resolve",
             lambda t, b: _client(b, address="no-such-host.invalid:8000"), ("cannot resolve",)),
        Case("client --server-address", "addresses", "no port", lambda t, b: _client(b, address="localhost"),
             ("HOST:PORT",)),
        Case("client --server-address", "addresses", "port zero", lambda t, b: _client(b, address="localhost:0"),
             ("HOST:PORT",)),
    ]
    return out


CASES = _keygen_cases() + _certs_cases() + _server_cases() + _client_cases()


@pytest.fixture
def guard():
    """Fail (never hang) a case that blocks, e.g. on a FIFO."""
    def expired(signum, frame):
        raise TimeoutError(f"blocked for {GUARD} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(GUARD)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, base: Base, tmp_path: Path, capsys, guard):
    work = tmp_path / "work"
    work.mkdir()
    argv = case.argv(work, base)
    before = snapshot(work, base.root)
    start = time.monotonic()
    code = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert time.monotonic() - start < GUARD
    if case.accepted is not None:
        assert code == 0, captured.err
        case.accepted(work)
        after = snapshot(work, base.root)
        assert {k: v for k, v in after.items() if k in before} == before  # only additions
        return
    assert code == 2, (code, captured.err)
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"fedad {argv[0]}: error: "), captured.err
    for needle in case.needles:
        assert needle in captured.err, captured.err
    assert snapshot(work, base.root) == before  # nothing written, nothing of the user's changed


def test_the_battery_covers_every_path_and_family():
    by_path = Counter(c.path.split()[0] for c in CASES)
    families = {c.family for c in CASES}
    assert set(by_path) == {"keygen", "certs", "server", "client"}
    assert {"special", "symlink", "existing", "names", "contents", "addresses"} <= families
    for command in ("keygen", "certs", "server", "client"):
        mine = {c.family for c in CASES if c.path.startswith(command)}
        assert {"special", "symlink", "names"} <= mine, (command, mine)


# --- signals between steps ------------------------------------------------------------------------------------

def _sigterm_after(owner_, name: str, nth: int, monkeypatch) -> None:
    """Make the ``nth`` call of ``owner_.name`` send this process SIGTERM right after it runs (the command
    line turns it into an interrupt, as a real ``kill`` would)."""
    real = getattr(owner_, name)
    calls = []

    def wrapped(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(name)
        if len(calls) == nth:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs before this returns
        return result

    monkeypatch.setattr(owner_, name, wrapped)


NewFiles = files.NewFiles
#: (command, where, method, nth call, the step it interrupts): every step of keygen and certs, and the server's
#: before its first process.
SIGNAL_STEPS = [
    ("keygen", NewFiles, "folder", 1, "the folder made"),
    ("keygen", NewFiles, "temporary_file", 1, "the private key written"),
    ("keygen", NewFiles, "temporary_file", 2, "the public key written"),
    ("keygen", NewFiles, "publish", 1, "the private key published"),
    ("keygen", NewFiles, "publish", 2, "both published"),
    ("certs", NewFiles, "folder", 1, "the folder's parent made"),
    ("certs", NewFiles, "temporary_folder", 1, "the staging folder made"),
    ("certs", certs_module, "write_new", 1, "the first certificate written"),
    ("certs", NewFiles, "temporary_file", 1, "the CA key written"),
    ("certs", NewFiles, "publish", 1, "the CA key published"),
    ("certs", NewFiles, "publish", 2, "the folder published"),
    ("server", deploy, "claim", 1, "the Flower state claimed"),
    ("server", deploy, "write_app", 1, "the App folder written"),
    ("server", deploy, "_secret", 1, "the secret written"),
]


@pytest.mark.parametrize("command, owner_, step, nth, what", SIGNAL_STEPS,
                         ids=[f"{c}/{w}" for c, _, _, _, w in SIGNAL_STEPS])
def test_sigterm_between_steps_leaves_nothing(command, owner_, step, nth, what, base, tmp_path, monkeypatch, capsys,
                                              guard):
    work = tmp_path / "work"
    work.mkdir()
    argv = {"keygen": _keygen(work / "keys" / "node"), "certs": _certs(work, output=work / "deep" / "certs"),
            "server": ["server", "--certificates", str(base.certs), "--authorized-keys", str(base.authorized),
                       "--address", f"127.0.0.1:{_free_port()}", "--output-dir", str(work / "run"), "--quiet"]}[command]
    before = snapshot(work, base.root)
    _sigterm_after(owner_, step, nth, monkeypatch)
    assert main(argv) == 130
    assert capsys.readouterr().err == f"fedad {command}: interrupted\n"
    assert snapshot(work, base.root) == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_after_a_clients_secret_is_written_removes_its_state(base, tmp_path, monkeypatch, capsys, guard):
    """The client's secret and logs go with an interrupted client (the pre-flight passes against a plain
    HTTP listener; the SuperNode is never started)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def answer() -> None:
        conn, _ = listener.accept()
        conn.recv(100)
        conn.sendall(b"HTTP/1.0 404 Not Found\r\n\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    made: list[Path] = []
    real = deploy._secret

    def secret(path: Path) -> bytes:  # the client's secret is written: now a SIGTERM
        made.append(path)
        out = real(path)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
        return out

    monkeypatch.setattr(deploy, "_secret", secret)
    code = main(["client", "--node-id", "1", "--data-path", str(base.csv), "--insecure",
                 "--server-address", f"127.0.0.1:{listener.getsockname()[1]}", "--wait-timeout", "5"])
    listener.close()
    assert code == 130 and capsys.readouterr().err.endswith("fedad client: interrupted\n")
    assert made and not made[0].exists() and not made[0].parent.exists()


# --- kill -9 of a real client --------------------------------------------------------------------------------

@pytest.mark.slow
def test_kill_9_of_a_client_leaves_its_secret_only_until_the_next_client_starts(base, tmp_path):
    """A client killed with SIGKILL cannot clean up: its state folder (secret, logs) stays, in this user's
    state folder (not a shared /tmp name), and goes when the next client starts; its SuperNode dies with it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def answer() -> None:  # the pre-flight's plain-HTTP probe; then the SuperNode retries into the void
        listener.settimeout(0.5)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            try:
                conn.recv(100)
                conn.sendall(b"HTTP/1.0 404 Not Found\r\n\r\n")
            except OSError:
                pass
            conn.close()

    threading.Thread(target=answer, daemon=True).start()
    group = Processes()
    try:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                            os.environ.get("PYTHONPATH", "")])}
        client = group.start([sys.executable, "-m", "fedad_tutorial.cli", "client", "--node-id", "1", "--data-path",
                              str(base.csv), "--insecure", "--server-address",
                              f"127.0.0.1:{listener.getsockname()[1]}", "--wait-timeout", "120"],
                             env, tmp_path / "client.log")
        root = state_root()
        deadline = time.monotonic() + 120
        mine: list[Path] = []
        while not mine:
            assert time.monotonic() < deadline and client.poll() is None, (tmp_path / "client.log").read_text()
            mine = [f for f in root.glob(f"client-{client.pid}-*") if (f / "superexec.secret").exists()]
            time.sleep(0.2)
        tree = [client.pid, *descendants(client.pid)]
        os.kill(client.pid, signal.SIGKILL)
        client.wait(30)
        deadline = time.monotonic() + 15
        while any(alive(p) for p in tree):
            assert time.monotonic() < deadline, "the SuperNode outlived its client"
            time.sleep(0.1)
        [state] = mine
        assert (state / "superexec.secret").exists() and owner(state) is None  # left, and known to be abandoned
        assert state.parent == root and stat.S_IMODE(root.stat().st_mode) == 0o700
        from fedad_tutorial.flower.processes import private_state

        fresh = private_state("client")  # what the next client does first
        assert not state.exists()
        (fresh / OWNER_FILE).unlink()
        fresh.rmdir()
    finally:
        stop.set()
        group.stop()
        listener.close()


def test_battery_size(capsys):
    """Print the battery's size by family and path (``pytest -s`` shows it)."""
    table = Counter((c.path, c.family) for c in CASES)
    signals = Counter(c for c, *_ in SIGNAL_STEPS)
    with capsys.disabled():
        for (path, family), n in sorted(table.items()):
            print(f"{path:28} {family:10} {n}")
        for command, n in sorted(signals.items()):
            print(f"{command:28} {'signals':10} {n}")
    assert sum(table.values()) == len(CASES)
