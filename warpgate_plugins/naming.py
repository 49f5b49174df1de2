"""Phase 10, ``setup_nickname_service``: start the selected name services and, when
``enable_nickname`` is on, register the node's own name."""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING

from warpgate.errors import WarpgateError
from warpgate.plugin import hookimpl
from warpgate.plugin.stack import start_providers

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

# The address each node's nickname was registered with in phase 10.  The address is
# only final after phase 12 (STUN mappings, port mappings), so it is published again
# then if it changed: a record without the external address cannot be punched to.
_registered_address: weakref.WeakKeyDictionary[Node, bytes] = weakref.WeakKeyDictionary()


@hookimpl(trylast=True)
async def warpgate_setup_nickname_service(node: Node) -> str:
    node.name_services = await start_providers(node, "name_service")
    if not node.conf["enable_nickname"]:
        return "started" if node.name_services else "disabled"
    if not node.name_services:
        log.warning(
            "nicknames are unavailable: no name service plugin is installed "
            "(set enable_nickname=False to silence this)"
        )
        return "unavailable"
    full = await node.nickname(node.conf["identity_name"])
    if full:
        _registered_address[node] = node.address()
    return full


@hookimpl
def warpgate_node_started(node: Node) -> None:
    registered = _registered_address.pop(node, None)
    if registered is not None and registered != node.address():
        node.spawn(_publish_final_address(node), name="nickname: publish the final address")


async def _publish_final_address(node: Node) -> None:
    try:
        await node.nickname(node.conf["identity_name"])
    except (WarpgateError, LookupError, OSError) as exc:
        log.warning("could not update the nickname record with the final address: %s", exc)
