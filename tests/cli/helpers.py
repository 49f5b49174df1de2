"""Run the ``warpgate`` command as a user would: a subprocess with its own home."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def cli_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose keystore and home are inside the test's directory."""
    return dict(
        os.environ,
        WARPGATE_HOME=str(tmp_path / "wghome"),
        HOME=str(tmp_path / "home"),
        PYTHONUNBUFFERED="1",
        TMPDIR=str(tmp_path),  # whatever it creates (a coturn's files) stays in the test's dir
    )


def run_cli(
    args: list[str], tmp_path: Path, *, timeout: float = 60, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warpgate", *args],
        env=cli_env(tmp_path),
        cwd=tmp_path,
        input=input.decode() if input is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def spawn_cli(args: list[str], tmp_path: Path, **kwargs: object) -> subprocess.Popen[bytes]:
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        [sys.executable, "-m", "warpgate", *args],
        env=cli_env(tmp_path),
        cwd=tmp_path,
        **kwargs,
    )


def wait_for(predicate: object, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``predicate()`` every 50 ms, bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def interrupt(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> tuple[int, str]:
    """Ctrl-C the process; its exit status and stderr.  Kills it if it hangs."""
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the command did not stop on Ctrl-C") from None
    return proc.returncode, err.decode(errors="replace")


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]
