"""Phase 10, ``setup_nickname_service``: start the selected name services and, when
``enable_nickname`` is on, register the node's own name."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from warpgate.plugin import hookimpl
from warpgate.plugin.stack import start_providers

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)


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
    return full
