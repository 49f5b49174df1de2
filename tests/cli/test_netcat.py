"""``warpgate listen`` / ``connect`` / ``send`` / ``receive``, as subprocesses, and what
each does with bad input: one line saying what happened and what to try, a non-zero
exit, nothing left running or bound."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import interrupt, lines, run_cli, spawn_cli, wait_for
from warpgate.sansio.address import NodeAddress

LOOP = ["--ip", "127.0.0.1"]


def _error_line(stderr: str, command: str) -> str:
    """The one error line (and assert there is exactly one, and no traceback)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in lines(stderr) if "error:" in line]
    assert len(errors) == 1, stderr
    assert errors[0].startswith(f"warpgate {command}: error: "), errors[0]
    return errors[0]


class Listener:
    """A ``warpgate listen``/``receive`` subprocess that hosts the embedded servers."""

    def __init__(self, tmp_path: Path, command: str, *extra: str, stdin: bytes = b"") -> None:
        self.conf = tmp_path / f"{command}-infra.json"
        self.addr = tmp_path / f"{command}.addr"
        self.proc = spawn_cli(
            [
                command,
                *LOOP,
                "--embedded-infra",
                str(self.conf),
                "--address-file",
                str(self.addr),
                *extra,
            ],
            tmp_path,
            stdin=subprocess.PIPE,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(stdin)
        self.proc.stdin.close()
        self.proc.stdin = None  # communicate() must not flush it again
        wait_for(lambda: self.addr.exists() or self.proc.poll() is not None, what=command)
        assert self.proc.poll() is None, self.proc.communicate()

    def finish(self, timeout: float = 30) -> tuple[int, bytes, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err.decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    lst = Listener(tmp_path, "listen", "--name", "alice", stdin=b"hello from alice\n")
    yield lst
    lst.stop()


def test_listen_and_connect_by_name_both_ways(tmp_path: Path, listener: Listener) -> None:
    result = run_cli(
        ["connect", "alice", "--conf", str(listener.conf), *LOOP],
        tmp_path,
        input=b"hello from bob\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from alice\n"
    code, out, err = listener.finish()
    assert code == 0, err
    assert out == b"hello from bob\n"
    assert "registered as alice.p2p" in err and "connected: inbound" in err


def test_connect_by_address_file_offline(tmp_path: Path) -> None:
    addr = tmp_path / "a.addr"
    proc = spawn_cli(
        ["listen", "--offline", *LOOP, "--address-file", str(addr)],
        tmp_path,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(addr.exists, what="address file")
        NodeAddress.decode(addr.read_bytes())  # a real address, not a placeholder
        data = os.urandom(200_000)
        (tmp_path / "data.bin").write_bytes(data)
        with (tmp_path / "data.bin").open("rb") as stdin:
            connect = subprocess.Popen(
                [sys.executable, "-m", "warpgate", "connect", str(addr), "--offline", *LOOP],
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(os.environ, WARPGATE_HOME=str(tmp_path / "wg2")),
            )
        # Read the listener's output while the data flows (a full pipe would stall it).
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        _, cerr = connect.communicate(timeout=60)
        assert connect.returncode == 0, cerr
        assert out == data  # binary-safe, in order, complete
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_send_and_receive_verify_the_checksum(tmp_path: Path) -> None:
    out_dir = tmp_path / "inbox"
    out_dir.mkdir()
    receiver = Listener(tmp_path, "receive", "--name", "bob", "-o", str(out_dir))
    try:
        payload = os.urandom(1_500_000)
        src = tmp_path / "photo.jpg"
        src.write_bytes(payload)
        result = run_cli(["send", str(src), "bob", "--conf", str(receiver.conf), *LOOP], tmp_path)
        assert result.returncode == 0, result.stderr
        digest = hashlib.sha256(payload).hexdigest()
        assert f"sha256 {digest} verified by the receiver" in result.stderr
        code, _, err = receiver.finish()
        assert code == 0, err
        assert (out_dir / "photo.jpg").read_bytes() == payload
        assert not (out_dir / "photo.jpg.part").exists()
        assert "\r" not in err  # no progress bar when stderr is not a terminal
    finally:
        receiver.stop()


def test_receive_refuses_to_overwrite_and_the_sender_is_told(tmp_path: Path) -> None:
    out_dir = tmp_path / "inbox"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("keep me")
    receiver = Listener(tmp_path, "receive", "-o", str(out_dir))
    try:
        src = tmp_path / "notes.txt"
        src.write_text("new")
        result = run_cli(["send", str(src), str(receiver.addr), "--offline", *LOOP], tmp_path)
        assert result.returncode == 1
        assert "refused the file: file exists" in _error_line(result.stderr, "send")
        code, _, err = receiver.finish()
        assert code == 1 and "--force" in _error_line(err, "receive")
        assert (out_dir / "notes.txt").read_text() == "keep me"
    finally:
        receiver.stop()


def test_wrong_name(tmp_path: Path, listener: Listener) -> None:
    result = run_cli(["connect", "nobody", "--conf", str(listener.conf), *LOOP], tmp_path)
    assert result.returncode == 1
    line = _error_line(result.stderr, "connect")
    assert "nobody is registered as 'nobody'" in line and "try:" in line


def test_unreachable_peer(tmp_path: Path) -> None:
    addr = tmp_path / "gone.addr"
    proc = spawn_cli(
        ["listen", "--offline", *LOOP, "--address-file", str(addr)],
        tmp_path,
        stdin=subprocess.DEVNULL,
    )
    wait_for(addr.exists, what="address file")
    interrupt(proc)  # the peer is gone; its address file stays
    result = run_cli(["connect", str(addr), "--offline", *LOOP, "--timeout", "3"], tmp_path)
    assert result.returncode == 1
    line = _error_line(result.stderr, "connect")
    assert "could not reach" in line and "try:" in line


@pytest.mark.parametrize("command", ["listen", "receive"])
def test_missing_name_server(tmp_path: Path, command: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free again once closed: nobody answers there
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"pnp_timeout": 1.0}))
    servers = ["--conf", str(conf), "--pnp", f"127.0.0.1:{port}"]
    result = run_cli([command, "--name", "x", "--offline", *LOOP, *servers], tmp_path)
    assert result.returncode == 1
    line = _error_line(result.stderr, command)
    assert "no PNP server answered" in line and "try:" in line


def test_name_without_any_name_server(tmp_path: Path) -> None:
    result = run_cli(["listen", "--name", "x", "--offline", *LOOP], tmp_path)
    assert result.returncode == 1
    assert "needs a PNP name server" in _error_line(result.stderr, "listen")


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["connect", "garbage.addr"], "does not hold a warpgate address"),
        (["connect", "./missing.addr"], "no such address file"),
        (["connect", "alice"], "'alice' is a name, and no name service is configured"),
        (["send", "garbage.addr", "alice"], "no name service is configured"),
        (["send", "missing.bin", "bob"], "no such file"),
        (["connect", "bob", "--conf", "nope.json"], "cannot read nope.json"),
        (["connect", "bob", "--conf", "bad.json"], "is not JSON"),
        (["receive", "-o", "no/such/dir/f"], "no such directory: no/such/dir"),
        (["listen", "--ip", "203.0.113.9"], "203.0.113.9 is not an address of the interfaces"),
    ],
)
def test_bad_arguments(tmp_path: Path, args: list[str], expect: str) -> None:
    (tmp_path / "garbage.addr").write_bytes(b"\x00not an address")
    (tmp_path / "bad.json").write_text("{")
    loop = [] if "--ip" in args else LOOP
    result = run_cli([*args, "--offline", *loop], tmp_path)
    assert result.returncode == 1
    assert expect in _error_line(result.stderr, args[0])


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_ctrl_c_while_listening_frees_everything(tmp_path: Path) -> None:
    lst = Listener(tmp_path, "listen", "--name", "alice")
    address = NodeAddress.decode(lst.addr.read_bytes())
    port = address.interfaces[0].port
    servers = json.loads(lst.conf.read_text())
    pnp_port = int(servers["pnp_servers"][0].rsplit(":", 1)[1])
    assert not _port_is_free(port)
    code, err = interrupt(lst.proc)
    assert code == 130
    assert lines(err)[-1].startswith("warpgate: interrupted")
    assert _port_is_free(port) and _port_is_free(pnp_port)
    assert not lst.conf.exists()  # the conf of servers that are gone is removed


def test_ctrl_c_mid_session(tmp_path: Path, listener: Listener) -> None:
    proc = spawn_cli(
        ["connect", "alice", "--conf", str(listener.conf), *LOOP],
        tmp_path,
        stdin=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"hello from alice\n"  # the session is up
    code, err = interrupt(proc)
    assert code == 130 and lines(err)[-1].startswith("warpgate: interrupted")
    # The listener sees the link break: one line, non-zero, and it exits.
    code, _, err = listener.finish()
    assert code == 1 and "the link broke" in _error_line(err, "listen")


def test_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from warpgate.cli.transfer import Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    err = Tty()
    monkeypatch.setattr("sys.stderr", err)
    bar = Progress(4 * 1024 * 1024, "sending x")
    for _ in range(4):
        bar.advance(1024 * 1024)
    bar.finish()
    text = err.getvalue()
    assert text.startswith("\rsending x [") and "100.0% 4.0 MiB/4.0 MiB" in text
    assert text.endswith("\n")
    plain = io.StringIO()
    monkeypatch.setattr("sys.stderr", plain)
    bar = Progress(10, "sending y")
    bar.advance(10)
    bar.finish()
    assert plain.getvalue() == ""  # a pipe gets only the final status line, from the command


def test_by_name_through_a_names_file_without_any_server(tmp_path: Path) -> None:
    conf = tmp_path / "hosts.json"
    conf.write_text(
        json.dumps({"names_file": str(tmp_path / "names"), "plugins": {"name_service": ["hosts"]}})
    )
    args = ["--offline", *LOOP, "--conf", str(conf)]
    proc = spawn_cli(["listen", "--name", "carol", *args], tmp_path, stdin=subprocess.PIPE)
    try:
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.write(b"from carol\n")
        proc.stdin.close()
        proc.stdin = None
        assert proc.stderr.readline() == b"registered as carol.lan\n"
        result = run_cli(["connect", "carol", *args], tmp_path, input=b"to carol\n")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "from carol\n"
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert out == b"to carol\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_listener_that_left_gave_its_name_back(tmp_path: Path) -> None:
    infra = Listener(tmp_path, "listen", stdin=b"")  # hosts the servers, stays up
    try:
        conf = ["--conf", str(infra.conf), *LOOP]
        dave = spawn_cli(["listen", "--name", "dave", *conf], tmp_path, stdin=subprocess.PIPE)
        assert dave.stderr is not None
        wait_for(lambda: b"registered as dave.p2p" in dave.stderr.readline(), what="dave")
        code, _ = interrupt(dave)
        assert code == 130
        result = run_cli(["connect", "dave", *conf, "--timeout", "3"], tmp_path)
        assert "nobody is registered as 'dave'" in _error_line(result.stderr, "connect")
    finally:
        infra.stop()


def test_ctrl_c_mid_transfer_keeps_no_partial_file(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    receiver = Listener(tmp_path, "receive", "-o", str(inbox), "--offline")
    src = tmp_path / "big.bin"
    with src.open("wb") as f:
        for _ in range(200):
            f.write(os.urandom(1 << 20))
    sender = spawn_cli(["send", str(src), str(receiver.addr), "--offline", *LOOP], tmp_path)
    try:
        assert receiver.proc.stderr is not None
        wait_for(
            lambda: (inbox / "big.bin.part").exists() or sender.poll() is not None,
            what="the transfer to start",
        )
        code, err = interrupt(receiver.proc)
        assert code == 130, err
        assert not (inbox / "big.bin.part").exists() and not (inbox / "big.bin").exists()
        _, serr = sender.communicate(timeout=30)
        assert sender.returncode == 1
        assert "the transfer broke off" in _error_line(serr.decode(), "send")
    finally:
        receiver.stop()
        if sender.poll() is None:
            sender.kill()
            sender.communicate()


def test_sigterm_cleans_up_like_ctrl_c(tmp_path: Path) -> None:
    lst = Listener(tmp_path, "listen", "--name", "alice")
    port = NodeAddress.decode(lst.addr.read_bytes()).interfaces[0].port
    lst.proc.terminate()
    code, _, err = lst.finish()
    assert code == 130 and lines(err)[-1].startswith("warpgate: interrupted")
    assert _port_is_free(port) and not lst.conf.exists()


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(["listen", "--offline", *LOOP, "--port", str(port)], tmp_path)
    assert result.returncode == 1
    line = _error_line(result.stderr, "listen")
    assert "cannot start the node" in line and "try: another --port" in line


def test_an_unexpected_failure_is_still_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from warpgate.cli.peer_options import run_command

    async def broken() -> int:
        raise RuntimeError("boom\nsecond line")

    assert run_command(broken(), "listen") == 1
    err = capsys.readouterr().err
    assert err == (
        "warpgate listen: error: unexpected RuntimeError: boom; "
        "try: -v shows the details; please report it\n"
    )
