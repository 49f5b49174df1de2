"""Cleanup never leaks: failures, Ctrl-C and crashed runs leave nothing behind."""

from __future__ import annotations

import os
import subprocess

import pytest

from warpgate.lab import Lab, LabError, ServerStartError, single, two_nat
from warpgate.lab import lab as lab_module
from warpgate.lab import servers as servers_module
from warpgate.lab.state import STATE_DIR, cleanup_all, list_states, process_start_time
from warpgate.lab.system import list_netns
from warpgate.testing.pytest_plugin import require_lab

pytestmark = pytest.mark.lab


def _namespaces(prefix: str) -> list[str]:
    return [ns for ns in list_netns() if ns.startswith(prefix + "-")]


def _assert_gone(prefix: str, pids: list[int]) -> None:
    assert _namespaces(prefix) == []
    assert not (STATE_DIR / f"{prefix}.json").exists()
    for pid in pids:
        assert process_start_time(pid) is None, f"process {pid} survived"


def test_server_failure_during_up_tears_everything_down(monkeypatch) -> None:
    require_lab()
    seen: list[int] = []
    real_wait = servers_module.wait_ready

    def failing_wait(specs, workdir, timeout=servers_module.START_TIMEOUT):  # type: ignore[no-untyped-def]
        real_wait(specs, workdir, timeout)  # the servers really run...
        seen.extend(proc.pid for _spec, proc in specs)
        raise ServerStartError("simulated: a server never answered")

    monkeypatch.setattr(servers_module, "wait_ready", failing_wait)
    lab = Lab(two_nat())
    with pytest.raises(ServerStartError, match="simulated"):
        lab.up()
    assert seen
    _assert_gone(lab.prefix, seen)


def test_ctrl_c_during_up_tears_everything_down(monkeypatch) -> None:
    require_lab(servers=False)

    def interrupted(self):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(lab_module.Lab, "_start_servers", interrupted)
    lab = Lab(single())
    with pytest.raises(KeyboardInterrupt):
        lab.up()
    _assert_gone(lab.prefix, [])


def test_down_removes_a_crashed_runs_leftovers() -> None:
    require_lab()
    lab = Lab(two_nat()).up()
    pids = [p.pid for p in lab.state.processes]  # type: ignore[union-attr]
    lab.detach()  # as if this process had died without tearing down
    assert any(s.prefix == lab.prefix for s in list_states())
    assert process_start_time(pids[0]) is not None
    assert cleanup_all(lab.prefix) == [lab.prefix]
    _assert_gone(lab.prefix, pids)


def test_down_removes_namespaces_without_state_file() -> None:
    require_lab(servers=False)
    lab = Lab(single(), servers=False).up()
    lab.state.path.unlink()  # type: ignore[union-attr]
    assert _namespaces(lab.prefix)
    assert cleanup_all(lab.prefix) == [lab.prefix]
    _assert_gone(lab.prefix, [])
    lab.state = None  # nothing left for down()


def test_pid_reuse_is_never_signalled() -> None:
    require_lab(servers=False)
    from warpgate.lab.state import stop_pids

    with subprocess.Popen(["sleep", "30"]) as proc:
        stop_pids([(proc.pid, "not-its-start-time")])
        assert proc.poll() is None  # a different start time: left alone
        stop_pids([(proc.pid, process_start_time(proc.pid))])
        assert proc.wait(5) is not None
    assert os.getpid()


def test_an_existing_lab_is_never_adopted() -> None:
    require_lab(servers=False)
    with Lab(single(), servers=False) as first:
        with pytest.raises(LabError, match="already exists"):
            Lab(single(), prefix=first.prefix, servers=False).up()
        assert _namespaces(first.prefix)  # the first lab is intact
        assert first.probe(["a"])["a"].verdict == ("EIM", "APDF")
