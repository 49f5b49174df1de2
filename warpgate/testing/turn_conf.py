"""The conf of a node in the NAT lab that relays through the lab's coturn (for tests and
benchmarks that need a relay in the lab)."""

from __future__ import annotations

from typing import Any

from warpgate import NODE_TEST_CONF, dict_child


def turn_conf(lab: Any, name: str, **extra: Any) -> dict[str, Any]:
    """Identity ``name``, in-process signalling, the lab's coturn as STUN server (NAT
    types known) and TURN relay with its long-term credentials; ``extra`` on top."""
    stun = lab.servers["stun"]
    server = f"{stun['host']}:{stun['port']}"
    return dict_child(
        {
            "identity_name": name,
            "sig_pipe_no": 1,
            "plugins": {"signal": ["memory"]},
            "enable_stun_clients": True,
            "stun_servers": [server],
            "turn_servers": [server],
            "turn_username": stun["username"],
            "turn_password": stun["password"],
            **extra,
        },
        NODE_TEST_CONF,
    )
