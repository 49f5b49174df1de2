"""Default configurations (the documented import path for ``NODE_CONF`` and
``NODE_TEST_CONF``)."""

from __future__ import annotations

from typing import Any

from warpgate.config import dict_child

NODE_CONF: dict[str, Any] = {
    # -- keys from spec/nodes.md ------------------------------------------------------
    "reuse_addr": False,  # SO_REUSEADDR on the listen sockets
    "enable_upnp": True,  # try UPnP port forwarding on start-up
    "sig_pipe_no": 1,  # MQTT signal connections per peer; 0 = no signalling
    "install_path": None,  # data directory; None = per-platform default (or WARPGATE_HOME)
    "init_clock_skew": True,  # sync with NTP for punch timing
    "enable_punching": True,  # load the hole-punching traversal methods
    "enable_nickname": True,  # register the node's nickname during start()
    "enable_stun_clients": True,  # load STUN clients per interface
    # -- warpgate additions -------------------------------------------------------------
    "identity_name": "node",  # keystore entry holding this node's keypair
    "listen_loopback": True,  # also listen on 127.0.0.1 / ::1 (same-machine peers)
    "plugin_timeout": 30.0,  # seconds any one plugin may spend in one async hook
    "handshake_timeout": 10.0,  # seconds an inbound link may take to authenticate
    "connect_timeout": 10.0,  # default overall deadline of auto_connect, seconds
    "link_encryption": True,  # False only for benchmarks: plaintext when both sides agree
    # bytes per UDP-link message: one datagram, small enough for any path MTU
    "udp_max_message": 1200,
    # bytes; an inbound frame larger than this drops its connection
    "max_message_size": 16 * 1024 * 1024,
    # seconds of silence from the peer after which a link is pinged (0: no keepalives);
    # also what holds a UDP link's NAT mappings open
    "link_keepalive": 5.0,
    "link_timeout": 15.0,  # seconds of silence after which the link is closed
    # seconds a resumption ticket from a full link handshake lives (0: never resume)
    "link_resumption": 600.0,
    "plugins": {
        "disable": [],  # plugin (entry-point) or distribution names not to load
        "traversal": None,  # ordered traversal methods; None = all installed, by cost
        "name_service": None,  # ordered name backends; None = all installed
        "signal": None,  # ordered signal transports; None = all installed
    },
}

NODE_TEST_CONF: dict[str, Any] = dict_child(
    {
        "enable_upnp": False,
        "sig_pipe_no": 0,
        "init_clock_skew": False,
        "enable_nickname": False,
        "enable_stun_clients": False,
    },
    NODE_CONF,
)

__all__ = ["NODE_CONF", "NODE_TEST_CONF", "dict_child"]
