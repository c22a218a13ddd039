"""`fedad keygen` and `fedad certs`, and the checks `fedad server`/`client` make before any process starts.

Fast: everything runs in this process (no SuperLink, no SuperNode); TLS is checked against a one-thread
listener. The hostile-input battery over the same commands is in ``test_hostile_deploy.py``.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from pathlib import Path

import pytest
from cryptography import x509
from tls_listener import TLSServer

from fedad_tutorial.cli import main
from fedad_tutorial.errors import UserError
from fedad_tutorial.flower import files, keys
from fedad_tutorial.flower.certs import check_server_files, generate_certificates, names
from fedad_tutorial.flower.deploy import _end_server
from fedad_tutorial.flower.keys import read_authorized_keys
from fedad_tutorial.flower.preflight import check_server
from fedad_tutorial.flower.processes import (
    OWNER_FILE,
    Processes,
    check_port,
    claim,
    free_port,
    private_state,
    remove_abandoned,
    state_root,
)


def _one_line_error(capsys, *needles: str) -> str:
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and err.startswith("fedad ") and "Traceback" not in err + captured.out, err
    for needle in needles:
        assert needle in err, err
    return err


# --- keygen -------------------------------------------------------------------------------------------------

def test_keygen_creates_the_readme_folder_privately_and_the_pub_lines_concatenate(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["keygen", "--output", "keys/node_1"]) == 0
    assert main(["keygen", "--output", "keys/node_2", "--comment", "rack 4 <ops> $HOME 'x'"]) == 0
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "keys/node_1").stat().st_mode & 0o777 == 0o600
    out = capsys.readouterr().out
    # the README's step: cat keys/*.pub > authorized_keys
    pubs = sorted((tmp_path / "keys").glob("*.pub"))
    (tmp_path / "authorized_keys").write_bytes(b"".join(p.read_bytes() for p in pubs))
    listed = read_authorized_keys(tmp_path / "authorized_keys")
    assert [k.comment for k in listed] == ["node_1", "rack 4 <ops> $HOME 'x'"]  # taken literally
    assert all(k.fingerprint in out for k in listed)
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["node_1", "node_1.pub", "node_2", "node_2.pub"]


def test_keygen_creates_every_missing_parent_with_mode_700(tmp_path):
    keys.generate_key(tmp_path / "a" / "b" / "node")
    assert [(tmp_path / p).stat().st_mode & 0o777 for p in ("a", "a/b")] == [0o700, 0o700]


@pytest.mark.parametrize("fail_on", ["write .pub", "publish .pub", "interrupt before .pub"])
def test_keygen_leaves_nothing_when_the_public_key_cannot_be_written_and_a_retry_works(tmp_path, monkeypatch,
                                                                                       fail_on):
    target = tmp_path / "keys" / "node"
    real_write, real_publish = files.NewFiles.temporary_file, files.NewFiles.publish

    def write(self, folder, name, data, mode):
        if fail_on == "write .pub" and name.endswith(".pub"):
            raise UserError(f"{folder}: cannot write there (No space left on device)")
        return real_write(self, folder, name, data, mode)

    def publish(self, tmp, path, hint):
        if path.name.endswith(".pub"):
            if fail_on == "publish .pub":
                raise OSError(28, "No space left on device", str(path))
            if fail_on == "interrupt before .pub":
                raise KeyboardInterrupt
        return real_publish(self, tmp, path, hint)

    monkeypatch.setattr(files.NewFiles, "temporary_file", write)
    monkeypatch.setattr(files.NewFiles, "publish", publish)
    with pytest.raises((UserError, OSError, KeyboardInterrupt)):
        keys.generate_key(target)
    assert list(tmp_path.iterdir()) == []  # no key, no temporary file, not even the folder it made
    monkeypatch.undo()
    key = keys.generate_key(target)
    assert target.stat().st_mode & 0o777 == 0o600 and Path(key.source).read_text() == key.line + "\n"


def test_an_undone_write_never_removes_what_took_the_name_meanwhile(tmp_path):
    with pytest.raises(KeyboardInterrupt), files.NewFiles() as new:
        tmp = new.temporary_file(tmp_path, "node", b"ours", 0o600)
        new.publish(tmp, tmp_path / "node", "hint")
        (tmp_path / "node").unlink()
        (tmp_path / "node").write_text("the user's")  # the name now holds another file
        raise KeyboardInterrupt
    assert (tmp_path / "node").read_text() == "the user's" and os.listdir(tmp_path) == ["node"]


def test_keygen_never_follows_a_dangling_pub_symlink(tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere.txt"
    (tmp_path / "node.pub").symlink_to(elsewhere)
    assert main(["keygen", "--output", str(tmp_path / "node")]) == 2
    _one_line_error(capsys, "node.pub", "symlink")
    assert not elsewhere.exists() and not (tmp_path / "node").exists()


@pytest.mark.parametrize("output", [".", "", "..", "/"])
def test_keygen_output_must_name_a_file(output, capsys):
    assert main(["keygen", "--output", output]) == 2
    _one_line_error(capsys, "--output", "name the private key file")


@pytest.mark.parametrize("comment", ["two\nlines", "cr\rreturn", "esc\x1b[31m", "tab\there", "", "  "])
def test_keygen_comment_is_one_line_of_text(tmp_path, comment, capsys):
    assert main(["keygen", "--output", str(tmp_path / "node"), "--comment", comment]) == 2
    _one_line_error(capsys, "--comment")
    assert list(tmp_path.iterdir()) == []


# --- certs --------------------------------------------------------------------------------------------------

def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certs_names_exactly_the_hosts_and_keeps_the_ca_key_apart(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["certs", "--host", "server.example.org", "--host", "192.0.2.10", "--host", "::1",
                 "--host", "Server.Example.ORG.", "--output", "certs", "--days", "30"]) == 0
    out = capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["certs", "certs-ca.key"]
    assert sorted(os.listdir(tmp_path / "certs")) == ["ca.crt", "server.key", "server.pem"]
    assert (tmp_path / "certs-ca.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "certs/server.key").stat().st_mode & 0o777 == 0o600
    cert = _load(tmp_path / "certs/server.pem")
    assert sorted(names(cert)) == sorted(["server.example.org", "192.0.2.10", "::1"])  # duplicates dropped
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["server.example.org"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.10", "::1"]
    days = (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).total_seconds() / 86400
    assert 29.9 < days <= 30
    assert sorted(check_server_files(tmp_path / "certs")) == sorted(names(cert))  # signed by ca.crt, key matches
    # what it says: where each file goes, and that the CA key goes nowhere
    assert "--certificates certs" in out and "--root-certificates certs/ca.crt" in out
    assert "certs-ca.key" in out and "never copy it to the server or a client" in out


def test_certs_never_overwrites_and_writes_nothing_when_refused(tmp_path, capsys):
    generate_certificates(tmp_path / "certs", ["localhost"])
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for argv in (["--output", str(tmp_path / "certs")],  # the folder exists (and is not empty)
                 ["--output", str(tmp_path / "new"), "--ca-key", str(tmp_path / "certs-ca.key")],  # the key exists
                 ["--output", str(tmp_path / "new2"), "--ca-key", str(tmp_path / "new2" / "ca.key")]):  # inside
        assert main(["certs", "--host", "localhost", *argv]) == 2
        _one_line_error(capsys)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert sorted(os.listdir(tmp_path)) == ["certs", "certs-ca.key"]


def test_certs_accepts_an_empty_folder(tmp_path):
    (tmp_path / "certs").mkdir()
    generate_certificates(tmp_path / "certs", ["localhost"])
    assert sorted(os.listdir(tmp_path / "certs")) == ["ca.crt", "server.key", "server.pem"]


@pytest.mark.parametrize("host, message", [
    ("server.example.org:8000", "the port belongs in --address"),
    ("0.0.0.0", "every interface"),
    ("::", "every interface"),
    ("bad name", "expected a DNS name"),
    ("under_score.example", "expected a DNS name"),
    ("-lead.example", "expected a DNS name"),
    ("a" * 64 + ".example", "expected a DNS name"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("", "expected a DNS name"),
])
def test_certs_host_must_be_a_name_or_an_address(tmp_path, host, message, capsys):
    assert main(["certs", f"--host={host}", "--output", str(tmp_path / "certs")]) == 2
    _one_line_error(capsys, "--host", message)
    assert list(tmp_path.iterdir()) == []


def test_certs_interrupted_after_the_ca_key_leaves_nothing(tmp_path, monkeypatch):
    real_rename = os.rename

    def rename(src, dst):
        if Path(dst).name == "certs":
            raise KeyboardInterrupt  # what SIGTERM becomes in the command line
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        generate_certificates(tmp_path / "deep" / "certs", ["localhost"])
    assert list(tmp_path.iterdir()) == []


def test_server_files_are_checked_before_anything_starts(tmp_path, capsys):
    a = generate_certificates(tmp_path / "a", ["localhost"]).folder
    b = generate_certificates(tmp_path / "b", ["localhost"]).folder
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    cases = {"not the key of": ("ca.crt", a, "server.pem", a, "server.key", b),
             "not signed by ca.crt": ("ca.crt", b, "server.pem", a, "server.key", a)}
    for message, layout in cases.items():
        for name, source in zip(layout[::2], layout[1::2], strict=True):
            (mixed / name).write_bytes((source / name).read_bytes())
        with pytest.raises(UserError, match=message):
            check_server_files(mixed)
    (mixed / "server.pem").write_text("not a certificate\n")
    with pytest.raises(UserError, match="not a PEM certificate"):
        check_server_files(mixed)
    (mixed / "server.pem").unlink()
    with pytest.raises(UserError, match="server.pem: no such file .*fedad certs"):
        check_server_files(mixed)


# --- the client's look at the server's certificate ----------------------------------------------------------

def test_a_client_names_what_the_certificate_holds_and_what_it_asked_for(tmp_path):
    certs = generate_certificates(tmp_path / "certs", ["localhost", "server.example.org"]).folder
    listener = TLSServer(certs)
    check_server("localhost", listener.port, certs / "ca.crt", 5)  # a listed name: fine
    with pytest.raises(UserError) as info:
        check_server("127.0.0.1", listener.port, certs / "ca.crt", 5)
    message = str(info.value)
    assert "\n" not in message and "not valid for the name '127.0.0.1'" in message
    assert "it lists localhost, server.example.org" in message and "fedad certs --host 127.0.0.1" in message
    listener.sock.close()


@pytest.mark.parametrize("pattern, host, matches", [
    ("*.example.org", "a.example.org", True), ("*.example.org", "a.b.example.org", False),
    ("*.example.org", "example.org", False), ("Server.Example.org", "server.example.org.", True),
])
def test_wildcard_names_cover_one_label(pattern, host, matches):
    from fedad_tutorial.flower.preflight import _dns_match

    assert _dns_match(pattern, host) is matches


# --- addresses and ports ------------------------------------------------------------------------------------

def test_port_errors_say_what_is_wrong():
    with pytest.raises(UserError, match="cannot resolve 'no-such-host.invalid'"):
        check_port("no-such-host.invalid", free_port())
    with pytest.raises(UserError, match="192.0.2.1 is not an address of this machine"):
        check_port("192.0.2.1", free_port())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(UserError, match="already in use"):
            check_port("127.0.0.1", busy.getsockname()[1])
    check_port("127.0.0.1", free_port())


def test_a_server_checks_its_port_before_it_says_it_waits(tmp_path, capsys):
    for address, message in (("no-such-host.invalid:8000", "cannot resolve"), (None, "already in use")):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            address = address or f"127.0.0.1:{busy.getsockname()[1]}"
            assert main(["server", "--insecure", "--address", address, "--output-dir", str(tmp_path / "run")]) == 2
        err = _one_line_error(capsys, message)
        assert "already in use" not in err or message == "already in use"
        assert capsys.readouterr().out == ""  # no "waiting for 2 clients" before the error
    assert list(tmp_path.iterdir()) == []


def test_a_client_with_an_unresolvable_server_fails_at_once(tmp_path, capsys):
    from fedad_tutorial.csvio import write_node_csv
    from fedad_tutorial.data import make_cloud_federation

    [node] = make_cloud_federation(1, 50, 4, seed=1)
    write_node_csv(tmp_path / "node_1.csv", node)
    assert main(["client", "--node-id", "1", "--data-path", str(tmp_path / "node_1.csv"), "--insecure",
                 "--server-address", "no-such-host.invalid:8000", "--wait-timeout", "30"]) == 2
    _one_line_error(capsys, "cannot resolve 'no-such-host.invalid'")


# --- state folders ------------------------------------------------------------------------------------------

def _dead_pid() -> int:
    """A pid whose process has ended (a child reaped at once)."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_a_killed_clients_state_goes_at_the_next_start_and_a_live_ones_stays(tmp_path):
    root = state_root()
    assert root.stat().st_mode & 0o777 == 0o700 and root.stat().st_uid == os.getuid()
    dead = root / f"client-{_dead_pid()}-test"
    dead.mkdir()
    (dead / "superexec.secret").write_bytes(b"x" * 32)
    (dead / OWNER_FILE).write_text(f"{_dead_pid()} 1\n")
    live = root / "client-live-test"
    live.mkdir()
    claim(live)  # this process: alive
    mine = private_state("client")
    try:
        assert not dead.exists() and live.exists() and mine.parent == root and mine.name.startswith("client-")
    finally:
        for folder in (live, mine):
            for child in folder.iterdir():
                child.unlink()
            folder.rmdir()


def test_a_server_state_folder_is_removed_only_when_its_owner_is_gone(tmp_path):
    state = tmp_path / ".run.flower"
    state.mkdir()
    claim(state)
    with pytest.raises(UserError, match=f"in use by another fedad command \\(pid {os.getpid()}\\)"):
        remove_abandoned(state)
    (state / OWNER_FILE).write_text(f"{_dead_pid()} 1\n")
    remove_abandoned(state)
    assert not state.exists()
    state.mkdir()
    (state / "mine.txt").write_text("user data")
    with pytest.raises(UserError, match="not a state folder left by a fedad command"):
        remove_abandoned(state)
    assert (state / "mine.txt").read_text() == "user data"


def test_flower_logs_kept_with_the_run_carry_no_colour_codes(tmp_path):
    state, run = tmp_path / ".run.flower", tmp_path / "run"
    state.mkdir()
    run.mkdir()
    claim(state)
    (state / "superlink.log").write_text("\x1b[92mINFO \x1b[0m:      Starting\n")
    (state / "superexec.secret").write_bytes(b"s")
    assert _end_server(Processes(), state, keep=run / "flower") == run / "flower"
    assert (run / "flower/superlink.log").read_text() == "INFO :      Starting\n"
    assert sorted(p.name for p in (run / "flower").iterdir()) == ["superlink.log"] and not state.exists()


def test_shown_keeps_a_message_on_one_line():
    assert files.shown("plain/name.csv") == "plain/name.csv"
    assert files.shown("two\nlines") == "'two\\nlines'"
    assert "\n" not in files.shown(os.fsdecode(b"bad\xff\nname"))


@pytest.mark.slow
def test_a_server_that_gives_up_names_only_logs_that_exist_on_a_line_of_its_own(tmp_path):
    import re
    import subprocess
    import sys

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "fedad_tutorial.cli", "server", "--insecure", "--address",
                           f"127.0.0.1:{free_port()}", "--output-dir", str(out), "--wait-timeout", "3", "--quiet"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    last = done.stderr.strip()
    assert last.startswith("fedad server: error: only 0 of the 2 required clients"), done.stderr
    logs = Path(re.search(r"\(Flower logs: (.+)\)$", last).group(1))
    assert logs.is_dir() and (logs / "superlink.log").is_file() and not out.exists()
    assert "\x1b" not in (logs / "superlink.log").read_text() and not (logs / "superexec.secret").exists()
    remove_abandoned(logs)  # what the next server with this --output-dir does
    assert not logs.exists()


def test_the_state_root_must_be_this_users_private_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert state_root() == tmp_path / "fedad" and (tmp_path / "fedad").stat().st_mode & 0o777 == 0o700
    (tmp_path / "fedad").chmod(0o755)  # readable by others: somebody else's, or tampered with
    with pytest.raises(UserError, match="not a private folder of this user"):
        state_root()
    (tmp_path / "fedad").rmdir()
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "fedad").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="not a private folder of this user"):
        state_root()


def test_client_threads_is_honoured(tmp_path, capsys):
    import torch

    from fedad_tutorial.csvio import write_node_csv
    from fedad_tutorial.data import make_cloud_federation

    [node] = make_cloud_federation(1, 50, 4, seed=1)
    write_node_csv(tmp_path / "node_1.csv", node)
    before = torch.get_num_threads()
    try:
        assert main(["client", "--node-id", "1", "--data-path", str(tmp_path / "node_1.csv"), "--insecure",
                     "--threads", "2", "--server-address", "no-such-host.invalid:8000"]) == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert main(["client", "--threads", "0", "--node-id", "1", "--data-path", "x.csv", "--insecure"]) == 2
    assert "--threads" in capsys.readouterr().err
