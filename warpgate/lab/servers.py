"""The real servers a lab runs: mosquitto, coturn, chrony (in ``inet``) and miniupnpd
(on a NAT router).  Each gets a config file the lab writes, binds to lab addresses only,
and counts as started only once it has answered a real request.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from warpgate.lab import _stun
from warpgate.lab.errors import ServerStartError
from warpgate.lab.netns import socket_in_netns
from warpgate.lab.system import find_binary
from warpgate.lab.topology import SERVER_ADDRESS, SERVER_ADDRESS_ALT

log = logging.getLogger(__name__)

MQTT_PORT = 1883
STUN_PORT = 3478
NTP_PORT = 123
UPNP_HTTP_PORT = 5000
TURN_USER = "warpgate"
TURN_PASSWORD = "warpgate"
TURN_REALM = "warpgate.lab"
#: Longest a server may take to answer its first request.
START_TIMEOUT = 10.0
_POLL = 0.02

#: Server role → the program it needs (see system.BINARY_PACKAGES for packages).
SERVER_BINARIES = {"mqtt": "mosquitto", "stun": "turnserver", "ntp": "chronyd", "upnp": "miniupnpd"}


@dataclass
class ServerSpec:
    """How to run one server: argv (inside ``netns``), config and readiness check."""

    role: str
    netns: str
    argv: list[str]
    ready: Callable[[], bool]  # one attempt; True once the server answered
    info: dict[str, object]
    #: Longest the server may take to answer its first request.
    timeout: float = START_TIMEOUT


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# ----------------------------------------------------------------- readiness probes


def _mqtt_answers(netns: str) -> bool:
    """Send an MQTT 3.1.1 CONNECT and expect a CONNACK accepting it."""
    connect = bytes.fromhex("100c00044d5154540402003c0000")  # clean session, no client id
    with socket_in_netns(netns, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect((SERVER_ADDRESS, MQTT_PORT))
            sock.sendall(connect)
            return sock.recv(4) == b"\x20\x02\x00\x00"
        except OSError:
            return False


def _stun_answers(netns: str) -> bool:
    with socket_in_netns(netns, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((SERVER_ADDRESS, 0))
        try:
            _stun.binding(sock, (SERVER_ADDRESS, STUN_PORT), tries=1, wait=0.2)
        except (TimeoutError, OSError):
            return False
        return True


def _ntp_answers(netns: str) -> bool:
    request = b"\x23" + b"\x00" * 47  # LI 0, version 4, mode 3 (client)
    with socket_in_netns(netns, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((SERVER_ADDRESS, 0))
        sock.settimeout(0.2)
        try:
            sock.sendto(request, (SERVER_ADDRESS, NTP_PORT))
            data, _ = sock.recvfrom(512)
        except OSError:
            return False
        return len(data) >= 48 and data[0] & 0x07 == 4  # mode 4: server


def _http_answers(netns: str, address: str, port: int, path: str) -> bool:
    with socket_in_netns(netns, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect((address, port))
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
            return sock.recv(12).startswith(b"HTTP/1.")
        except OSError:
            return False


# ------------------------------------------------------------------- server specs


def mosquitto(inet_ns: str, workdir: Path) -> ServerSpec:
    conf = _write(
        workdir / "mosquitto.conf",
        f"listener {MQTT_PORT} {SERVER_ADDRESS}\n"
        "allow_anonymous true\n"
        # Without it mosquitto's small writes wait for Nagle: ~40 ms per signal message.
        "set_tcp_nodelay true\n"
        "persistence false\n"
        "log_dest stderr\n",
    )
    return ServerSpec(
        "mqtt",
        inet_ns,
        [find_binary("mosquitto"), "-c", conf],
        lambda: _mqtt_answers(inet_ns),
        {"host": SERVER_ADDRESS, "port": MQTT_PORT},
    )


def coturn(inet_ns: str, workdir: Path) -> ServerSpec:
    # Two listening addresses switch on RFC 5780 (OTHER-ADDRESS, CHANGE-REQUEST).
    conf = _write(
        workdir / "turnserver.conf",
        f"listening-ip={SERVER_ADDRESS}\n"
        f"listening-ip={SERVER_ADDRESS_ALT}\n"
        f"relay-ip={SERVER_ADDRESS}\n"
        f"listening-port={STUN_PORT}\n"
        "min-port=49152\nmax-port=65535\n"
        f"realm={TURN_REALM}\n"
        "lt-cred-mech\n"
        f"user={TURN_USER}:{TURN_PASSWORD}\n"
        "fingerprint\nno-tls\nno-dtls\nno-cli\nno-multicast-peers\n"
        f"userdb={workdir / 'turndb'}\n"
        f"pidfile={workdir / 'turnserver.pid'}\n"
        f"log-file={workdir / 'turnserver.log'}\n"
        "simple-log\n",
    )
    return ServerSpec(
        "stun",
        inet_ns,
        [find_binary("turnserver"), "-c", conf],
        lambda: _stun_answers(inet_ns),
        {
            "host": SERVER_ADDRESS,
            "port": STUN_PORT,
            "alt_host": SERVER_ADDRESS_ALT,
            "username": TURN_USER,
            "password": TURN_PASSWORD,
            "realm": TURN_REALM,
        },
    )


def chrony(inet_ns: str, workdir: Path) -> ServerSpec:
    conf = _write(
        workdir / "chrony.conf",
        f"bindaddress {SERVER_ADDRESS}\n"
        f"port {NTP_PORT}\n"
        "local stratum 8\n"
        "allow all\n"
        "cmdport 0\n"
        f"pidfile {workdir / 'chronyd.pid'}\n",
    )
    # -x: never touch the host's clock.  -d: foreground, log to stderr.
    # -u root: the default _chrony user could not read the lab's private work dir.
    return ServerSpec(
        "ntp",
        inet_ns,
        [find_binary("chronyd"), "-x", "-d", "-u", "root", "-f", conf],
        lambda: _ntp_answers(inet_ns),
        {"host": SERVER_ADDRESS, "port": NTP_PORT},
    )


UPNP_TABLE = "wgupnp"


def upnp_ruleset() -> str:
    """The nft table miniupnpd fills (Debian's init script for it is broken)."""
    return (
        f"table inet {UPNP_TABLE} {{\n"
        "  chain forward_ {\n"
        "    type filter hook forward priority -10; policy accept;\n"
        "    jump miniupnpd\n  }\n"
        "  chain miniupnpd {\n  }\n"
        "  chain prerouting_ {\n"
        "    type nat hook prerouting priority -110; policy accept;\n"
        "    jump prerouting_miniupnpd\n  }\n"
        "  chain prerouting_miniupnpd {\n  }\n"
        "  chain postrouting_ {\n"
        "    type nat hook postrouting priority 90; policy accept;\n"
        "    jump postrouting_miniupnpd\n  }\n"
        "  chain postrouting_miniupnpd {\n  }\n"
        "}\n"
    )


#: miniupnpd behind another NAT spends ~9 s in its STUN test (waiting for CHANGE-REQUEST
#: answers the upstream NAT filters) before it serves anything.
UPNP_BEHIND_NAT_TIMEOUT = 30.0


def miniupnpd(
    router_ns: str,
    lan_address: str,
    lan_host_ns: str | None,
    workdir: Path,
    name: str,
    *,
    behind_nat: bool = False,
) -> ServerSpec:
    # miniupnpd refuses to map ports when its WAN address is in a reserved range (the
    # lab's are); ext_perform_stun makes it ask the lab's coturn and accept the answer.
    conf = _write(
        workdir / f"miniupnpd-{name}.conf",
        "ext_ifname=wan\n"
        "listening_ip=lan\n"
        f"http_port={UPNP_HTTP_PORT}\n"
        "enable_natpmp=yes\n"
        "enable_upnp=yes\n"
        "secure_mode=no\n"
        "system_uptime=yes\n"
        f"uuid={uuid.uuid4()}\n"
        "ext_perform_stun=yes\n"
        f"ext_stun_host={SERVER_ADDRESS}\n"
        f"ext_stun_port={STUN_PORT}\n"
        f"upnp_table_name={UPNP_TABLE}\n"
        f"upnp_nat_table_name={UPNP_TABLE}\n"
        "upnp_forward_chain=miniupnpd\n"
        "upnp_nat_chain=prerouting_miniupnpd\n"
        "upnp_nat_postrouting_chain=postrouting_miniupnpd\n"
        f"lease_file={workdir / f'miniupnpd-{name}.leases'}\n"
        "allow 1024-65535 0.0.0.0/0 1024-65535\n"
        "deny 0-65535 0.0.0.0/0 0-65535\n",
    )
    check_ns = lan_host_ns or router_ns
    return ServerSpec(
        f"upnp:{name}",
        router_ns,
        [
            find_binary("miniupnpd"),
            "-d",
            "-f",
            conf,
            "-P",
            str(workdir / f"miniupnpd-{name}.pid"),
        ],
        lambda: _http_answers(check_ns, lan_address, UPNP_HTTP_PORT, "/rootDesc.xml"),
        {"router": name, "host": lan_address, "port": UPNP_HTTP_PORT},
        timeout=UPNP_BEHIND_NAT_TIMEOUT if behind_nat else START_TIMEOUT,
    )


# ------------------------------------------------------------------ starting


def wait_ready(
    specs: list[tuple[ServerSpec, subprocess.Popen[bytes]]],
    workdir: Path,
    timeout: float | None = None,
) -> None:
    """Poll every server until it answers; raise ServerStartError naming the laggard.

    Each server gets its own ``spec.timeout`` (or ``timeout`` for all, if given).
    """
    pending = list(specs)
    started = time.monotonic()
    while pending:
        still = []
        for spec, proc in pending:
            if proc.poll() is not None:
                raise ServerStartError(
                    f"{spec.role} server exited with {proc.returncode}: {_tail(spec, workdir)}"
                )
            if not spec.ready():
                still.append((spec, proc))
        pending = still
        if not pending:
            return
        late = [
            s
            for s, _ in pending
            if time.monotonic() - started > (timeout if timeout is not None else s.timeout)
        ]
        if late:
            roles = ", ".join(f"{s.role} ({s.timeout:g}s)" for s in late)
            tails = "; ".join(_tail(s, workdir) for s in late)
            raise ServerStartError(f"server(s) {roles} did not answer in time: {tails}")
        time.sleep(_POLL)


def _tail(spec: ServerSpec, workdir: Path) -> str:
    logname = workdir / f"{spec.role.replace(':', '-')}.out"
    with contextlib.suppress(OSError):
        return logname.read_text(errors="replace")[-600:].strip()
    return "(no output)"
