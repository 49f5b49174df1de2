"""Build, use and tear down a lab: the :class:`Lab` object.

>>> with Lab(two_nat("full-cone", "symmetric")) as lab:       # doctest: +SKIP
...     lab.run_python("a", "import json; print(json.dumps(42))")
42
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from warpgate.lab import _stun, nat, servers
from warpgate.lab.errors import LabError
from warpgate.lab.netns import (
    arun_coroutine_in_netns,
    call_in_netns,
    run_coroutine_in_netns,
    socket_in_netns,
)
from warpgate.lab.probe import ProbeResponder, ProbeResult, probe_host
from warpgate.lab.servers import ServerSpec
from warpgate.lab.state import (
    NETNS_ETC,
    LabState,
    ProcessRecord,
    list_states,
    new_prefix,
    process_start_time,
    stop_pids,
)
from warpgate.lab.state import teardown_state as _teardown_state
from warpgate.lab.system import (
    CORE_BINARIES,
    check_platform,
    find_binary,
    ip_batch,
    list_netns,
    netns_exec_argv,
    run,
)
from warpgate.lab.topology import (
    Host,
    NatMode,
    Plan,
    Router,
    Topology,
    expected_behaviour,
    plan,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Where `import warpgate` resolves from, so code run inside a host finds this warpgate.
_WARPGATE_ROOT = str(Path(__file__).resolve().parents[2])


def topology_to_dict(topo: Topology) -> dict[str, Any]:
    return {
        "routers": [
            {
                "name": r.name,
                "mode": r.mode.value,
                "parent": r.parent,
                "loss": r.loss,
                "upnp": r.upnp,
                "delay_ms": r.delay_ms,
                "jitter_ms": r.jitter_ms,
                "hairpin": r.hairpin,
                "tcp_reset": r.tcp_reset,
            }
            for r in topo.routers
        ],
        "hosts": [{"name": h.name, "router": h.router} for h in topo.hosts],
        "servers": sorted(topo.servers),
    }


def topology_from_dict(data: dict[str, Any]) -> Topology:
    return Topology(
        routers=tuple(
            Router(
                r["name"],
                NatMode(r["mode"]),
                r.get("parent"),
                r.get("loss", 0.0),
                r.get("upnp", False),
                r.get("delay_ms", 0.0),
                r.get("jitter_ms", 0.0),
                r.get("hairpin", False),
                r.get("tcp_reset", False),
            )
            for r in data["routers"]
        ),
        hosts=tuple(Host(h["name"], h.get("router")) for h in data["hosts"]),
        servers=frozenset(data.get("servers", ())),
    )


def _python_env() -> dict[str, str]:
    """The environment for a Python subprocess: it must import this very warpgate."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_WARPGATE_ROOT, env.get("PYTHONPATH")) if p)
    return env


def _write_sysctl(values: dict[str, str]) -> None:
    # Runs inside a lab namespace (call_in_netns): /proc/sys/net is the namespace's own.
    for key, value in values.items():
        Path("/proc/sys", key.replace(".", "/")).write_text(value)


class Lab:
    """A running (or to-be-built) lab.  Use as a context manager, or ``up()``/``down()``.

    ``servers=False`` skips all servers (faster, for tests that only need NATs).
    """

    def __init__(
        self, topology: Topology, *, prefix: str | None = None, servers: bool = True
    ) -> None:
        self.topology = topology
        self.prefix = prefix or new_prefix()
        self.plan: Plan = plan(topology, self.prefix)
        self.with_servers = servers
        self.workdir: Path | None = None
        self.state: LabState | None = None
        self.servers: dict[str, dict[str, Any]] = {}
        self._procs: list[subprocess.Popen[bytes]] = []
        # How each server was started, so fault tests can stop and restart it.
        # (ServerSpec imported by name: here ``servers`` means the attribute above.)
        self._server_specs: dict[str, tuple[ServerSpec, subprocess.Popen[bytes]]] = {}
        self._is_up = False

    # ------------------------------------------------------------------ lifecycle

    def required_binaries(self) -> list[str]:
        names = list(CORE_BINARIES)
        if self.with_servers:
            names += [servers.SERVER_BINARIES[s] for s in sorted(self.topology.servers)]
            if any(r.upnp for r in self.topology.routers):
                names.append(servers.SERVER_BINARIES["upnp"])
        if any(r.delay_ms for r in self.topology.routers):
            names.append("iptables")  # the NFQUEUE target (nft's queue is missing here)
        return names

    def up(self) -> Lab:
        """Build everything; on any failure (or Ctrl-C) tear down what was built."""
        check_platform()
        for name in self.required_binaries():
            find_binary(name)
        # Never adopt (and later delete) namespaces of a lab that already exists.
        if any(ns.startswith(self.prefix + "-") for ns in list_netns()):
            raise LabError(f"a lab named {self.prefix} already exists")
        started = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"warpgate-lab-{self.prefix}-"))
        self.state = LabState(
            prefix=self.prefix,
            topology=topology_to_dict(self.topology),
            namespaces=[n.netns for n in self.plan.nodes.values()],
            workdir=str(self.workdir),
        )
        # Written before anything exists, so `lab down` can always clean a half-built lab.
        self.state.save()
        try:
            self._build_network()
            self._start_delay_shims()
            if self.with_servers:
                self._start_servers()
            self.state.servers = self.servers
            self.state.save()
        except BaseException:
            log.debug("lab %s failed to build; tearing down", self.prefix)
            self.down()
            raise
        self._is_up = True
        # Last resort if the owner never calls down() (an exception escaping a script):
        # tear down at interpreter exit.  SIGKILL leaves leftovers for `lab down`.
        atexit.register(self.down)
        log.info("lab %s up in %.2fs", self.prefix, time.monotonic() - started)
        return self

    def down(self) -> None:
        """Stop every process, delete every namespace, remove the work dir and state."""
        atexit.unregister(self.down)
        if self.state is None:
            return
        # Popen objects we own are waited for, so no ResourceWarning about live children.
        stop_pids([(p.pid, process_start_time(p.pid)) for p in self._procs if p.poll() is None])
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2.0)
        self._procs.clear()
        _teardown_state(self.state)
        self.state = None
        self._is_up = False

    def detach(self) -> None:
        """Forget the processes without stopping them (the CLI's ``lab up`` leaves the lab
        running; ``lab down`` stops them later by their recorded PIDs)."""
        atexit.unregister(self.down)
        for proc in self._procs:
            proc.returncode = 0  # stop Popen.__del__ warning about a child it never waited
        self._procs.clear()

    def __enter__(self) -> Lab:
        if not self._is_up:
            self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    @classmethod
    def attach(cls, prefix: str | None = None) -> Lab:
        """The running lab with ``prefix`` (default: the newest), from its state file."""
        states = list_states()
        if prefix is not None:
            states = [s for s in states if s.prefix == prefix]
        if not states:
            raise LabError("no running lab" + (f" named {prefix}" if prefix else ""))
        state = states[0]
        lab = cls(topology_from_dict(state.topology), prefix=state.prefix)
        lab.state = state
        lab.workdir = Path(state.workdir)
        lab.servers = state.servers
        lab._is_up = True
        return lab

    # --------------------------------------------------------------- building

    def _build_network(self) -> None:
        nodes = self.plan.nodes
        ip_batch([f"netns add {n.netns}" for n in nodes.values()])
        self._write_netns_etc()
        # Parent-side commands create each veth pair with its peer directly in the
        # child namespace: nothing is ever created in the root namespace.
        order = list(nodes.values())  # inet, void, routers parent-first, hosts
        for node in order:
            cmds = []
            if node.bridge:
                cmds.append("link add lan type bridge forward_delay 0 mcast_snooping 0")
            for link in self.plan.links:
                if link.up_ns == node.netns:
                    cmds.append(
                        f"link add {link.up_if} type veth peer name {link.down_if} "
                        f"netns {link.down_ns}"
                    )
                    if node.bridge:
                        cmds.append(f"link set {link.up_if} master lan")
            ip_batch(cmds, netns=node.netns)
        for node in order:
            cmds = ["link set lo up"]
            cmds += [f"addr add {cidr} dev {ifname}" for ifname, cidr in node.addresses]
            ifnames = {ifname for ifname, _ in node.addresses if ifname != "lo"}
            ifnames |= {lk.up_if for lk in self.plan.links if lk.up_ns == node.netns}
            cmds += [f"link set {ifname} up" for ifname in sorted(ifnames)]
            ip_batch(cmds, netns=node.netns)
        for node in order:
            ip_batch([f"route add {r}" for r in node.routes], netns=node.netns)
            sysctls = {"net.ipv4.ip_forward": "1" if node.forward else "0"}
            call_in_netns(node.netns, _write_sysctl, sysctls, timeout=10.0)
        for node in order:
            ruleset = self._ruleset(node.name)
            if ruleset:
                self._nft(node.netns, ruleset)

    def _write_netns_etc(self) -> None:
        """Give processes started by ``ip netns exec`` a lab-only resolver and hosts file.

        ``ip netns exec NS`` bind-mounts /etc/netns/NS/* over /etc.  Without this, name
        lookups inside the lab would wait for the host's DNS server, which is (rightly)
        unreachable: e.g. ``python -m http.server`` stalls ~10 s in getfqdn().  With a
        resolver on the namespace's own loopback they fail at once.
        """
        names: dict[str, list[str]] = {}
        for node in self.plan.nodes.values():
            for addr in (node.address, node.wan_address):
                if addr:
                    names.setdefault(addr, []).append(node.name)
        hosts = "127.0.0.1 localhost\n" + "".join(
            f"{addr} {' '.join(n + '.lab' for n in sorted(set(ns)))}\n"
            for addr, ns in names.items()
        )
        for node in self.plan.nodes.values():
            etc = NETNS_ETC / node.netns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "resolv.conf").write_text("# warpgate lab: no DNS\nnameserver 127.0.0.1\n")
            (etc / "hosts").write_text(hosts)

    def _ruleset(self, name: str) -> str:
        node = self.plan.nodes[name]
        parts: list[str] = []
        if node.kind == "void":
            parts.append(nat.void_ruleset())
        if node.kind == "router":
            router = self.topology.router(name)
            hairpin = node.wan_address if router.hairpin else None
            parts.append(
                nat.router_ruleset(
                    router.mode,
                    hairpin_address=hairpin,
                    lan_cidr=node.lan_cidr,
                    wan_address=node.wan_address,
                    tcp_reset=router.tcp_reset,
                )
            )
            if router.loss:
                parts.append(nat.loss_ruleset("wan", router.loss))  # inbound loss
            if router.upnp and self.with_servers:
                parts.append(servers.upnp_ruleset())
        # Outbound loss of each child router, on this (the parent's) side of the link.
        for link in self.plan.links:
            if link.up_ns != node.netns:
                continue
            child = next(n for n in self.plan.nodes.values() if n.netns == link.down_ns)
            if child.kind == "router":
                loss = self.topology.router(child.name).loss
                parts.append(nat.loss_ruleset(link.up_if, loss))
        return "".join(p for p in parts if p)

    def _nft(self, netns: str, ruleset: str) -> None:
        # Merge several "table netdev wgloss" blocks: nft accepts repeated table blocks.
        # nft has no namespace option: run it from a thread that is inside the namespace
        # (a child process inherits the namespace of the thread that forked it).
        call_in_netns(netns, lambda: run(["nft", "-f", "-"], input=ruleset), timeout=15.0)

    # ----------------------------------------------------------- delay, jitter

    def _start_delay_shims(self) -> None:
        """One NFQUEUE shim per delayed WAN link, in ``inet``, delaying both directions."""
        inet = self.plan.nodes["inet"].netns
        for link in self.plan.links:
            if link.up_ns != inet:
                continue
            child = next(n for n in self.plan.nodes.values() if n.netns == link.down_ns)
            if child.kind != "router":
                continue
            router = self.topology.router(child.name)
            if not router.delay_ms:
                continue
            queue = int(link.up_if.removeprefix("l"))
            argv = [sys.executable, "-m", "warpgate.lab.delay", "--queue", str(queue)]
            argv += ["--delay-ms", str(router.delay_ms), "--jitter-ms", str(router.jitter_ms)]
            name = f"delay:{router.name}"
            proc = self._spawn_tracked(inet, argv, name, env=_python_env())
            self._wait_for_line(proc, name, "ready")
            # Both directions of the link; --queue-bypass: traffic flows if the shim dies.
            target = ["-j", "NFQUEUE", "--queue-num", str(queue), "--queue-bypass"]
            for rule in (["PREROUTING", "-i", link.up_if], ["POSTROUTING", "-o", link.up_if]):
                cmd = ["iptables", "-w", "5", "-t", "mangle", "-A", *rule, *target]
                call_in_netns(inet, run, cmd, timeout=15.0)

    def _wait_for_line(self, proc: subprocess.Popen[bytes], name: str, line: str) -> None:
        assert self.workdir is not None
        out = self.workdir / f"{name.replace(':', '-')}.out"
        deadline = time.monotonic() + servers.START_TIMEOUT
        while time.monotonic() < deadline:
            if line in out.read_text(errors="replace").splitlines():
                return
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        raise LabError(f"{name} did not start: {out.read_text(errors='replace')[-600:]}")

    # --------------------------------------------------------------- servers

    def _start_servers(self) -> None:
        assert self.workdir is not None and self.state is not None
        inet = self.plan.nodes["inet"].netns
        wanted = self.topology.servers
        first: list[ServerSpec] = []
        if "mqtt" in wanted:
            first.append(servers.mosquitto(inet, self.workdir))
        if "stun" in wanted:
            first.append(servers.coturn(inet, self.workdir))
        if "ntp" in wanted:
            first.append(servers.chrony(inet, self.workdir))
        upnp: list[ServerSpec] = []
        for r in self.topology.routers:
            if r.upnp:
                if "stun" not in wanted:
                    raise LabError(f"router {r.name}: miniupnpd needs the lab's STUN server")
                lan_host = next((h.name for h in self.topology.hosts if h.router == r.name), None)
                upnp.append(
                    servers.miniupnpd(
                        self.plan.nodes[r.name].netns,
                        self.plan.nodes[r.name].address,
                        self.plan.nodes[lan_host].netns if lan_host else None,
                        self.workdir,
                        r.name,
                        behind_nat=bool(
                            r.parent and self.topology.router(r.parent).mode is not NatMode.OPEN
                        ),
                    )
                )
        running = [(spec, self._spawn_tracked(spec.netns, spec.argv, spec.role)) for spec in first]
        # miniupnpd asks coturn for its external address when it starts: coturn first.
        stun_first = [(s, p) for s, p in running if s.role == "stun"]
        if upnp:
            servers.wait_ready(stun_first, self.workdir)
        running += [(s, self._spawn_tracked(s.netns, s.argv, s.role)) for s in upnp]
        servers.wait_ready(running, self.workdir)
        for spec, proc in running:
            self.servers[spec.role] = {**spec.info, "pid": proc.pid}
            self._server_specs[spec.role] = (spec, proc)

    def stop_server(self, role: str) -> None:
        """Kill one server at once (SIGKILL, the process the lab started): a crash, for
        fault tests.  :meth:`start_server` brings it back."""
        if role not in self._server_specs:
            raise LabError(f"no server {role!r} in this lab (have {sorted(self._server_specs)})")
        _spec, proc = self._server_specs[role]
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5.0)

    def start_server(self, role: str) -> None:
        """Start a server :meth:`stop_server` killed, on the same address and config;
        returns once it answers a real request."""
        if role not in self._server_specs:
            raise LabError(f"no server {role!r} in this lab (have {sorted(self._server_specs)})")
        assert self.workdir is not None and self.state is not None
        spec, old = self._server_specs[role]
        if old.poll() is None:
            raise LabError(f"server {role!r} is still running (pid {old.pid})")
        proc = self._spawn_tracked(spec.netns, spec.argv, spec.role)
        servers.wait_ready([(spec, proc)], self.workdir)
        self._server_specs[role] = (spec, proc)
        self.servers[role] = {**spec.info, "pid": proc.pid}
        self.state.servers = self.servers
        self.state.save()

    def _spawn_tracked(
        self, netns: str, argv: Sequence[str], name: str, **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        assert self.state is not None and self.workdir is not None
        if "stdout" not in kwargs:
            out = open(self.workdir / f"{name.replace(':', '-')}.out", "wb")
            kwargs.update(stdout=out, stderr=subprocess.STDOUT)
        else:
            out = None
        try:
            proc = subprocess.Popen(
                netns_exec_argv(netns, argv),
                stdin=kwargs.pop("stdin", subprocess.DEVNULL),
                start_new_session=True,
                **kwargs,
            )
        finally:
            if out is not None:
                out.close()
        self._procs.append(proc)
        start = process_start_time(proc.pid) or ""
        self.state.processes.append(ProcessRecord(proc.pid, name, netns, start))
        self.state.save()
        return proc

    # ------------------------------------------------------------------ using

    def netns(self, name: str) -> str:
        """The namespace name of host or router ``name`` (for ``ip netns exec``)."""
        return self.plan.netns(name)

    def address(self, name: str) -> str:
        """A host's address; for a router, its LAN-side address."""
        return self.plan.nodes[name].address

    def wan_address(self, router: str) -> str:
        """A router's WAN (external) address."""
        return self.plan.nodes[router].wan_address

    @property
    def hosts(self) -> list[str]:
        return [h.name for h in self.topology.hosts]

    def exec(
        self,
        host: str,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        check: bool = False,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``host`` and wait for it (bounded by ``timeout``)."""
        return run(
            netns_exec_argv(self.netns(host), argv), input=input, timeout=timeout, check=check
        )

    def spawn(self, host: str, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start a long-running process inside ``host``; it is stopped by ``down()``
        (and recorded in the state file so ``warpgate lab down`` stops it too)."""
        return self._spawn_tracked(self.netns(host), argv, f"proc-{host}", **popen_kwargs)

    def python_argv(self, code: str) -> list[str]:
        return [sys.executable, "-c", code]

    def run_python(self, host: str, code: str, *, timeout: float = 60.0) -> Any:
        """Run Python ``code`` in a new interpreter inside ``host``; return the JSON value
        of the last line it prints.  A non-zero exit raises :class:`LabError` with stderr.
        """
        env = _python_env()
        argv = netns_exec_argv(self.netns(host), self.python_argv(code))
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"python in {host} did not finish within {timeout}s") from exc
        if proc.returncode != 0:
            raise LabError(f"python in {host} exited with {proc.returncode}:\n{proc.stderr}")
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        if not lines:
            return None
        try:
            return json.loads(lines[-1])
        except ValueError as exc:
            raise LabError(f"python in {host} did not print JSON last: {lines[-1]!r}") from exc

    def call(self, host: str, fn: Callable[..., T], *args: Any, timeout: float = 60.0) -> T:
        """Run ``fn(*args)`` in this process, in a thread inside ``host``'s namespace."""
        return call_in_netns(self.netns(host), fn, *args, timeout=timeout)

    def run_async(
        self, host: str, coro_fn: Callable[..., Awaitable[T]], *args: Any, timeout: float = 60.0
    ) -> T:
        """Run ``coro_fn(*args)`` on its own event loop in a thread inside ``host``."""
        return run_coroutine_in_netns(self.netns(host), coro_fn, *args, timeout=timeout)

    async def arun(
        self, host: str, coro_fn: Callable[..., Awaitable[T]], *args: Any, timeout: float = 60.0
    ) -> T:
        """Await ``coro_fn(*args)`` run inside ``host`` (on a loop in a worker thread)."""
        return await arun_coroutine_in_netns(self.netns(host), coro_fn, *args, timeout=timeout)

    def socket(
        self, host: str, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM
    ) -> socket.socket:
        """A new socket (default UDP/IPv4) living in ``host``, usable from any loop."""
        return socket_in_netns(self.netns(host), family, type)

    def stun_binding(self, sock: Any, *, server: str | None = None) -> tuple[str, int]:
        """Ask the lab's coturn for ``sock``'s external address (binding it if needed).

        ``sock`` is a UDP socket from :meth:`socket`; ``server`` overrides the STUN
        server address (default: coturn's primary address).
        """
        if "stun" not in self.servers:
            raise LabError("this lab runs no STUN server (servers=False?)")
        if sock.getsockname()[1] == 0:
            sock.bind(("0.0.0.0", 0))
        stun = self.servers["stun"]
        return _stun.binding(sock, (server or stun["host"], stun["port"]))["mapped"]

    # ----------------------------------------------------------------- probing

    def expected(self, host: str) -> tuple[str, str]:
        """The (mapping, filtering) the documented modes promise for ``host``."""
        return expected_behaviour(self.topology.nat_chain(host))

    def _neighbour_netns(self, host: str) -> str | None:
        neighbour = self.topology.lan_neighbour(host)
        return self.netns(neighbour) if neighbour else None

    def probe(self, hosts: Sequence[str] | None = None) -> dict[str, ProbeResult]:
        """Run the NAT probe from each host (default: all) and return the results."""
        names = list(hosts) if hosts is not None else self.hosts
        with ProbeResponder(self.netns("inet")):
            # Hosts are probed concurrently: each has its own socket and nonce.
            with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
                futures = {
                    n: pool.submit(
                        probe_host,
                        self.netns(n),
                        self.address(n),
                        neighbour_netns=self._neighbour_netns(n),
                    )
                    for n in names
                }
                return {n: f.result(timeout=30) for n, f in futures.items()}

    def status(self, *, probe: bool = True) -> dict[str, Any]:
        """Everything about this lab as plain data (what ``warpgate lab status`` prints)."""
        results = self.probe() if probe else {}
        hosts = {}
        for h in self.topology.hosts:
            expected = self.expected(h.name)
            hairpin = self.topology.expected_hairpin(h.name)
            entry: dict[str, Any] = {
                "netns": self.netns(h.name),
                "address": self.address(h.name),
                "router": h.router,
                "nat_chain": [m.value for m in self.topology.nat_chain(h.name)],
                "expected": {
                    "mapping": expected[0],
                    "filtering": expected[1],
                    "hairpin": hairpin,
                },
            }
            if h.name in results:
                r = results[h.name]
                entry["probe"] = {
                    "mapping": r.mapping,
                    "filtering": r.filtering,
                    "external": list(r.external) if r.external else None,
                    "hairpin": r.hairpin,
                    "ok": r.verdict == expected and (hairpin is None or r.hairpin == hairpin),
                }
            hosts[h.name] = entry
        routers = {
            r.name: {
                "netns": self.netns(r.name),
                "mode": r.mode.value,
                "parent": r.parent,
                "wan_address": self.wan_address(r.name),
                "lan": self.plan.nodes[r.name].lan_cidr,
                "loss": r.loss,
                "upnp": r.upnp,
                "delay_ms": r.delay_ms,
                "jitter_ms": r.jitter_ms,
                "hairpin": r.hairpin,
                "tcp_reset": r.tcp_reset,
            }
            for r in self.topology.routers
        }
        alive = {}
        if self.state is not None:
            for p in self.state.processes:
                alive[p.name] = {
                    "pid": p.pid,
                    "running": process_start_time(p.pid) == p.start_time,
                }
        return {
            "prefix": self.prefix,
            "inet": self.netns("inet"),
            "routers": routers,
            "hosts": hosts,
            "servers": self.servers,
            "processes": alive,
        }
