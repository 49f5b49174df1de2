"""warpgate: direct peer-to-peer links across NATs and firewalls, from asyncio Python.

The high-level API is ``Gate``/``Link`` (coming with links); the low-level one is
:class:`Node`.  Plugin authors need :data:`hookimpl` and the records in
:mod:`warpgate.plugin.types`.
"""

from __future__ import annotations

import logging

from warpgate._version import __version__
from warpgate.config import ConfigWarning, dict_child
from warpgate.connect import Attempt, ConnectError, auto_connect
from warpgate.errors import (
    AddressError,
    ConfigError,
    KeystoreError,
    PhaseError,
    PluginError,
    PluginValidationError,
    PortInUseError,
    UnavailableError,
    WarpgateError,
)
from warpgate.gate import Gate, PeerHandle, peer
from warpgate.link.link import Link, LinkClosed, LinkPath, LinkStream, MessageTooLarge
from warpgate.net.interfaces import IP4, IP6
from warpgate.node.node import Node
from warpgate.node.node_defs import NODE_CONF, NODE_TEST_CONF
from warpgate.plugin import hookimpl
from warpgate.plugin.types import NameServiceInfo, SignalTransportInfo, TraversalMethodInfo

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "IP4",
    "IP6",
    "NODE_CONF",
    "NODE_TEST_CONF",
    "AddressError",
    "Attempt",
    "ConfigError",
    "ConfigWarning",
    "ConnectError",
    "Gate",
    "KeystoreError",
    "Link",
    "LinkClosed",
    "LinkPath",
    "LinkStream",
    "MessageTooLarge",
    "NameServiceInfo",
    "Node",
    "PeerHandle",
    "PhaseError",
    "PluginError",
    "PluginValidationError",
    "PortInUseError",
    "SignalTransportInfo",
    "TraversalMethodInfo",
    "UnavailableError",
    "WarpgateError",
    "__version__",
    "auto_connect",
    "dict_child",
    "hookimpl",
    "peer",
]
