"""contrib/examples run as the docs tell a reader to run them: two processes that find
each other by nickname through servers one of them started."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.cli.helpers import cli_env, wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "contrib" / "examples"


def _start(tmp_path: Path, script: str, *args: str, home: str) -> subprocess.Popen[str]:
    env = dict(cli_env(tmp_path), WARPGATE_HOME=str(tmp_path / home))
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_chat_by_nickname(tmp_path: Path) -> None:
    conf = tmp_path / "infra.json"
    alice = _start(tmp_path, "chat.py", "alice", "--embedded", str(conf), home="a")
    bob = None
    try:
        wait_for(lambda: conf.exists() or alice.poll() is not None, what="alice's servers")
        assert alice.stdout is not None and alice.stdin is not None
        assert alice.stdout.readline().startswith("* servers up")
        assert alice.stdout.readline() == "* alice.p2p waiting for someone to chat with\n"
        bob = _start(tmp_path, "chat.py", "bob", "--conf", str(conf), "--to", "alice", home="b")
        assert bob.stdout is not None and bob.stdin is not None
        assert bob.stdout.readline().startswith("* chatting with alice.p2p over direct")
        assert alice.stdout.readline().startswith("* chatting with bob.p2p over inbound")
        bob.stdin.write("hi alice\n")
        bob.stdin.flush()
        assert alice.stdout.readline() == "bob.p2p> hi alice\n"
        alice.stdin.write("hello bob\n")
        alice.stdin.flush()
        assert bob.stdout.readline() == "alice.p2p> hello bob\n"
        _, err = bob.communicate(timeout=30)  # end of bob's input: he leaves
        assert bob.returncode == 0, err
        assert alice.stdout.readline() == "* bob.p2p left\n"  # alice is told, and exits
        _, err = alice.communicate(timeout=30)
        assert alice.returncode == 0, err
        assert not conf.exists()  # the servers are gone, and so is their conf
    finally:
        _stop(alice, *([bob] if bob else []))


def test_file_transfer_by_nickname(tmp_path: Path) -> None:
    conf, inbox = tmp_path / "infra.json", tmp_path / "inbox"
    inbox.mkdir()
    payload = os.urandom(3_000_000)
    (tmp_path / "photo.jpg").write_bytes(payload)
    receiver = _start(
        tmp_path,
        "transfer.py",
        "receive",
        "bob",
        "--embedded",
        str(conf),
        "-o",
        str(inbox),
        home="r",
    )
    try:
        wait_for(lambda: conf.exists() or receiver.poll() is not None, what="the servers")
        servers = ["--conf", str(conf)]
        sender = subprocess.run(
            [sys.executable, str(EXAMPLES / "transfer.py"), "send", "photo.jpg", "bob", *servers],
            cwd=tmp_path,
            env=dict(cli_env(tmp_path), WARPGATE_HOME=str(tmp_path / "s")),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sender.returncode == 0, sender.stderr
        assert "receiver says ok" in sender.stdout
        out, err = receiver.communicate(timeout=30)
        assert receiver.returncode == 0, err
        assert "* received" in out
        got = (inbox / "photo.jpg").read_bytes()
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    finally:
        _stop(receiver)
