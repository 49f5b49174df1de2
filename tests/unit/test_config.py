from __future__ import annotations

import pytest

from warpgate import NODE_CONF, NODE_TEST_CONF, ConfigError, ConfigWarning, Node, dict_child
from warpgate.config import check_port


def test_dict_child_inherits_and_overrides_without_touching_parent() -> None:
    parent = {"a": 1, "b": 2, "nested": {"x": 1, "y": 2}}
    child = dict_child({"b": 3, "nested": {"y": 9}, "c": 4}, parent)
    assert child == {"a": 1, "b": 3, "nested": {"x": 1, "y": 9}, "c": 4}
    assert parent == {"a": 1, "b": 2, "nested": {"x": 1, "y": 2}}
    child["nested"]["x"] = 100
    assert parent["nested"]["x"] == 1, "child must not share nested dicts with its parent"


def test_documented_import_paths_and_test_conf_values() -> None:
    from warpgate.node.node_defs import NODE_CONF as defs_conf
    from warpgate.node.node_defs import NODE_TEST_CONF as defs_test

    assert defs_conf is NODE_CONF and defs_test is NODE_TEST_CONF
    for key in (
        "reuse_addr",
        "enable_upnp",
        "sig_pipe_no",
        "install_path",
        "init_clock_skew",
        "enable_punching",
        "enable_nickname",
        "enable_stun_clients",
    ):
        assert key in NODE_CONF and key in NODE_TEST_CONF
    assert NODE_CONF["enable_upnp"] and not NODE_TEST_CONF["enable_upnp"]
    assert NODE_CONF["sig_pipe_no"] == 1 and NODE_TEST_CONF["sig_pipe_no"] == 0
    assert NODE_TEST_CONF["enable_punching"] and not NODE_TEST_CONF["enable_nickname"]


def test_unknown_conf_key_warns_with_nearest_valid_key() -> None:
    with pytest.warns(ConfigWarning, match=r"'enable_upnpp'.*did you mean 'enable_upnp'"):
        Node(conf=dict_child({"enable_upnpp": True}, NODE_TEST_CONF))


def test_plugin_declared_conf_keys_are_known() -> None:
    # 'ntp_servers' is declared by the built-in clock plugin: no warning.
    node = Node(conf=dict_child({"ntp_servers": ["127.0.0.1"]}, NODE_TEST_CONF))
    assert node.conf["ntp_servers"] == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"enable_upnp": "yes"}, "enable_upnp"),
        ({"sig_pipe_no": -1}, "sig_pipe_no"),
        ({"plugin_timeout": 0}, "plugin_timeout"),
        ({"plugins": {"traversl": ["direct"]}}, "did you mean 'traversal'"),
        ({"plugins": {"traversal": "direct"}}, "list of plugin names"),
        ({"identity_name": "../etc"}, "identity_name"),
        ({"max_message_size": 0}, "max_message_size"),
    ],
)
def test_invalid_conf_values_raise_clear_errors(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Node(conf=dict_child(override, NODE_TEST_CONF))


@pytest.mark.parametrize("port", [-1, 65536, "80", 1.5, True])
def test_invalid_ports_are_rejected(port: object) -> None:
    with pytest.raises(ConfigError, match="port must be"):
        check_port(port)
    with pytest.raises(ConfigError):
        Node(port=port, conf=NODE_TEST_CONF)  # type: ignore[arg-type]


def test_valid_ports() -> None:
    assert check_port(None) is None
    assert check_port(0) == 0
    assert check_port(65535) == 65535


def test_interface_discovery_is_cached_briefly(monkeypatch: pytest.MonkeyPatch) -> None:
    from warpgate.net import interfaces

    calls: list[int] = []
    real = interfaces.read_interfaces

    def counting(*args: object, **kwargs: object) -> list[interfaces.Interface]:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(interfaces, "read_interfaces", counting)
    monkeypatch.setattr(interfaces, "_discovered", {})
    first = interfaces.discover_interfaces()
    assert interfaces.discover_interfaces() == first and len(calls) == 1
    monkeypatch.setattr(interfaces, "DISCOVERY_TTL", 0.0)
    interfaces.discover_interfaces()
    assert len(calls) == 2, "an expired answer is read again"


def test_the_test_network_guard_refuses_public_servers() -> None:
    import socket

    with pytest.raises(socket.gaierror, match="network guard"):
        socket.getaddrinfo("pool.ntp.org", 123)
    with pytest.raises(socket.gaierror, match="network guard"):
        socket.getaddrinfo("8.8.8.8", 53)
    assert socket.getaddrinfo("127.0.0.1", 80)
