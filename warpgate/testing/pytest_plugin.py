"""pytest fixtures for the NAT lab (registered as the ``pytest11`` entry point ``warpgate``).

* ``lab_factory``: ``lab_factory(topology="two-nat", servers=True)`` builds a lab that is
  torn down after the test, whatever happens.  ``topology`` is a
  :class:`~warpgate.lab.Topology`, a preset name, or a ``(mode_a, mode_b)`` pair for the
  ``two-nat`` preset.
* ``lab``: a ready lab; the default ``two-nat`` topology, or whatever the test's indirect
  parametrisation passes (``@pytest.mark.parametrize("lab", nat_pairs(), indirect=True)``).
* :func:`nat_pairs` / :func:`nat_modes`: parametrisation helpers over NAT modes.

Tests using these fixtures get the ``lab`` marker automatically.  They are skipped with
the reason when the lab cannot run here (not Linux, not root, a package missing) — except
when ``CI`` or ``WARPGATE_LAB_REQUIRED`` is set to a true value on Linux: then a lab that
cannot run is a failure, so CI never skips the NAT tests silently.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from warpgate.lab import Lab, NatMode, Topology

#: The modes a full matrix covers, in the order tests are generated.
ALL_MODES = (
    "open",
    "full-cone",
    "address-restricted",
    "port-restricted",
    "symmetric",
    "udp-blocked",
)

_TRUE = {"1", "true", "yes", "on"}


def _lab_required() -> bool:
    flag = os.environ.get("WARPGATE_LAB_REQUIRED", os.environ.get("CI", ""))
    return flag.strip().lower() in _TRUE


def lab_unavailable_reason(*, servers: bool = True, upnp: bool = True) -> str | None:
    """Why the lab cannot run on this machine, or None if it can."""
    if not sys.platform.startswith("linux"):
        return f"the NAT lab needs Linux network namespaces (this is {sys.platform})"
    if os.geteuid() != 0:
        return "the NAT lab needs root (network namespaces and netfilter)"
    from warpgate.lab.servers import SERVER_BINARIES
    from warpgate.lab.system import CORE_BINARIES, missing_binaries

    names = list(CORE_BINARIES)
    if servers:
        names += [b for role, b in SERVER_BINARIES.items() if upnp or role != "upnp"]
    missing = missing_binaries(names)
    if missing:
        return "; ".join(str(m) for m in missing)
    return None


def require_lab(*, servers: bool = True, upnp: bool = True) -> None:
    """Skip (or, in CI on Linux, fail) the current test unless the lab can run."""
    reason = lab_unavailable_reason(servers=servers, upnp=upnp)
    if reason is None:
        return
    if _lab_required() and sys.platform.startswith("linux"):
        pytest.fail(f"lab required here (CI / WARPGATE_LAB_REQUIRED) but: {reason}")
    pytest.skip(reason)


def _mode_value(mode: NatMode | str) -> str:
    return str(getattr(mode, "value", mode))


def nat_modes(modes: Iterable[NatMode | str] | None = None) -> list[Any]:
    """``pytest.param`` per NAT mode (default: all), with the mode's name as test id."""
    return [pytest.param(_mode_value(m), id=_mode_value(m)) for m in (modes or ALL_MODES)]


def nat_pairs(
    modes: Iterable[NatMode | str] | None = None,
    *,
    ordered: bool = False,
    same: bool = True,
) -> list[Any]:
    """``pytest.param((mode_a, mode_b))`` for pairs of NAT modes, ids like ``full-cone--symmetric``.

    By default unordered pairs with repetition (a 4-mode list gives 10 pairs);
    ``ordered=True`` gives every (a, b), ``same=False`` leaves out a == b.
    """
    values = [_mode_value(m) for m in (modes or ALL_MODES)]
    pairs: Iterator[tuple[str, str]]
    if ordered:
        pairs = ((a, b) for a in values for b in values)
    elif same:
        pairs = itertools.combinations_with_replacement(values, 2)
    else:
        pairs = itertools.combinations(values, 2)
    return [pytest.param((a, b), id=f"{a}--{b}") for a, b in pairs if same or a != b]


def _as_topology(spec: Any) -> Topology:
    from warpgate.lab import Topology, preset, two_nat

    if isinstance(spec, Topology):
        return spec
    if isinstance(spec, str):
        return preset(spec)
    if isinstance(spec, tuple | list) and len(spec) == 2:
        return two_nat(spec[0], spec[1])
    raise TypeError(f"cannot make a lab topology from {spec!r}")


LabFactory = Callable[..., "Lab"]


def _sigterm_to_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt("SIGTERM")


_LAB_FIXTURES = {"lab", "lab_factory"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: needs root and Linux network namespaces (real NATs)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that build a lab are lab tests, so `-m "not lab"` deselects them.
    for item in items:
        if _LAB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lab)


@pytest.fixture
def lab_factory() -> Iterator[LabFactory]:
    """Build labs on demand; every lab built is torn down after the test."""
    from warpgate.lab import Lab

    built: list[Lab] = []
    # A CI runner cancelling the job sends SIGTERM: turn it into KeyboardInterrupt so
    # the teardown below runs (pytest tears fixtures down on KeyboardInterrupt).
    restore = None
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            restore = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)

    def make(topology: Any = "two-nat", *, servers: bool = True) -> Lab:
        topo = _as_topology(topology)
        require_lab(servers=servers, upnp=servers and any(r.upnp for r in topo.routers))
        lab = Lab(topo, servers=servers)
        built.append(lab)
        return lab.up()

    try:
        yield make
    finally:
        try:
            for lab in reversed(built):
                lab.down()
        finally:
            if restore is not None:
                signal.signal(signal.SIGTERM, restore)


@pytest.fixture
def lab(request: pytest.FixtureRequest, lab_factory: LabFactory) -> Lab:
    """A running lab: ``two-nat`` by default, or the indirect parametrisation's value."""
    return lab_factory(getattr(request, "param", "two-nat"))
