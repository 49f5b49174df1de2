"""Every NAT mode behaves as documented: the lab's probe observes its RFC 4787 verdict."""

from __future__ import annotations

import socket
import time

import pytest

from warpgate.lab import RFC4787, Lab, NatMode, Router, Topology, cgnat, same_lan, single
from warpgate.lab.topology import Host
from warpgate.testing import nat_modes

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("mode", nat_modes())
def test_probe_verdict_matches_mode(lab_factory, mode: str) -> None:
    lab = lab_factory(single(mode), servers=False)
    result = lab.probe(["a"])["a"]
    assert result.verdict == RFC4787[NatMode(mode)]
    assert result.hairpin is None  # no LAN neighbour to try it with
    if mode not in ("open", "udp-blocked"):
        assert result.external is not None
        assert result.external[0] == lab.wan_address("nat_a")


@pytest.mark.parametrize(
    ("cgn", "home", "expected"),
    [
        ("symmetric", "full-cone", ("APDM", "APDF")),
        ("full-cone", "full-cone", ("EIM", "EIF")),
        ("port-restricted", "address-restricted", ("EIM", "APDF")),
        ("open", "full-cone", ("EIM", "EIF")),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_double_nat_stricter_layer_wins(lab_factory, cgn, home, expected) -> None:
    lab = lab_factory(cgnat(cgn, home, "open"), servers=False)
    results = lab.probe(["a", "b", "pub"])
    assert results["a"].verdict == expected == lab.expected("a")
    assert results["b"].verdict == lab.expected("b")
    assert results["pub"].verdict == ("none", "none")


def test_status_reports_probe_verdicts(lab_factory) -> None:
    lab = lab_factory(("full-cone", "symmetric"), servers=False)
    status = lab.status()
    assert status["hosts"]["a"]["probe"]["mapping"] == "EIM"
    assert status["hosts"]["b"]["probe"]["mapping"] == "APDM"
    assert all(h["probe"]["ok"] for h in status["hosts"].values())


def _external_of(lab: Lab, host: str, sock: socket.socket) -> tuple[str, int]:
    """The external address of ``sock`` as the probe responder sees it."""
    from warpgate.lab.probe import ProbeResponder, run_probe

    with ProbeResponder(lab.netns("inet")):
        result = run_probe(sock, lab.address(host))
    assert result.external is not None
    return result.external


@pytest.mark.parametrize("mode", ["full-cone", "port-restricted", "symmetric"])
def test_no_hairpinning(lab_factory, mode: str) -> None:
    """Documented: no mode hairpins; a host cannot reach itself via its external address."""
    lab = lab_factory(single(mode), servers=False)
    with lab.socket("a") as target, lab.socket("a") as sender:
        external = _external_of(lab, "a", target)
        target.settimeout(0.3)
        sender.sendto(b"hairpin?", external)
        with pytest.raises(TimeoutError):
            target.recvfrom(100)


def _punch(lab: Lab, sock_a: socket.socket, sock_b: socket.socket) -> dict[str, tuple]:
    """Both sockets send to the other's STUN-learned external endpoint; returns, per
    host, the source it heard the other from (bounded: 25 rounds of 20 ms)."""
    ext = {sock_a: lab.stun_binding(sock_a), sock_b: lab.stun_binding(sock_b)}
    target = {sock_a: ext[sock_b], sock_b: ext[sock_a]}
    heard: dict[str, tuple] = {}
    for sock in target:
        sock.settimeout(0.02)
    for _ in range(25):
        for sock in target:
            sock.sendto(b"punch", target[sock])
        for name, sock in (("a", sock_a), ("b", sock_b)):
            try:
                _, source = sock.recvfrom(100)
            except (TimeoutError, ConnectionRefusedError):
                continue
            heard[name] = source
        if len(heard) == 2:
            break
    heard["ext_a"], heard["ext_b"] = ext[sock_a], ext[sock_b]
    return heard


@pytest.mark.parametrize("mode", ["full-cone", "address-restricted", "port-restricted"])
@pytest.mark.parametrize("hairpin", [True, False], ids=["hairpin", "no-hairpin"])
def test_hairpinning_on_and_off(lab_factory, mode: str, hairpin: bool) -> None:
    """Two hosts behind one NAT meet on their external endpoints only with hairpinning,
    and then each sees the other's external endpoint as source (RFC 4787 REQ-9)."""
    lab = lab_factory(same_lan(mode, hairpin=hairpin), servers=True)
    with lab.socket("a") as sock_a, lab.socket("b") as sock_b:
        heard = _punch(lab, sock_a, sock_b)
    if hairpin:
        assert heard.get("a") == heard["ext_b"]
        assert heard.get("b") == heard["ext_a"]
    else:
        assert "a" not in heard and "b" not in heard
    # The lab's probe sees the same, from a's side and from b's.
    results = lab.probe(["a", "b"])
    assert results["a"].hairpin is hairpin and results["b"].hairpin is hairpin
    assert lab.status(probe=False)["hosts"]["a"]["expected"]["hairpin"] is hairpin


def test_hairpin_is_refused_where_it_cannot_be_built() -> None:
    from warpgate.errors import ConfigError
    from warpgate.lab.topology import plan

    with pytest.raises(ConfigError, match="cannot hairpin"):
        plan(same_lan("symmetric", hairpin=True), "wgl000000")


def test_same_lan_hosts_talk_directly(lab_factory) -> None:
    lab = lab_factory(same_lan("symmetric"), servers=False)
    with lab.socket("a") as a, lab.socket("b") as b:
        b.bind((lab.address("b"), 0))
        a.sendto(b"hello neighbour", b.getsockname())
        b.settimeout(2)
        data, src = b.recvfrom(100)
    assert data == b"hello neighbour"
    assert src[0] == lab.address("a")  # no NAT between LAN neighbours


def test_wan_loss_drops_about_the_configured_fraction(lab_factory) -> None:
    topo = Topology(
        routers=(Router("nat_a", NatMode.FULL_CONE, loss=0.3),), hosts=(Host("a", "nat_a"),)
    )
    lab = lab_factory(topo, servers=False)
    with lab.socket("inet") as sink, lab.socket("a") as src:
        sink.bind(("198.51.100.10", 40000))
        sink.settimeout(0.5)
        # 200 datagrams fit the sink's receive buffer, so only the lossy link drops any.
        for i in range(200):
            src.sendto(b"%d" % i, ("198.51.100.10", 40000))
        received = 0
        for _ in range(200):
            try:
                sink.recvfrom(100)
            except TimeoutError:
                break
            received += 1
    # 200 packets at 30 % loss: ~140 expected; wide bounds keep this test deterministic.
    assert 90 < received < 185, received


def test_wan_delay_and_jitter_through_the_nfqueue_shim(lab_factory) -> None:
    topo = Topology(
        routers=(Router("nat_a", NatMode.PORT_RESTRICTED, delay_ms=20, jitter_ms=5),),
        hosts=(Host("a", "nat_a"),),
    )
    lab = lab_factory(topo, servers=False)
    rtts = []
    with lab.socket("inet") as echo, lab.socket("a") as client:
        echo.bind(("198.51.100.10", 7777))
        echo.settimeout(2)
        client.settimeout(2)
        for i in range(10):
            started = time.monotonic()
            client.sendto(b"%d" % i, ("198.51.100.10", 7777))
            data, addr = echo.recvfrom(100)
            echo.sendto(data, addr)
            assert client.recvfrom(100)[0] == data
            rtts.append(time.monotonic() - started)
    # Each way 20 ± 5 ms: a round trip takes 30..50 ms plus scheduling slack.
    assert min(rtts) >= 0.029, rtts
    assert sorted(rtts)[5] < 0.080, rtts
    assert lab.probe(["a"])["a"].verdict == ("EIM", "APDF")  # NAT unchanged by the shim
