"""Phase 11, ``setup_traversal_plugins``: create the selected traversal methods."""

from __future__ import annotations

from typing import TYPE_CHECKING

from warpgate.plugin import hookimpl
from warpgate.plugin.stack import start_providers

if TYPE_CHECKING:
    from warpgate.node.node import Node


@hookimpl(trylast=True)
async def warpgate_setup_traversal_plugins(node: Node) -> str:
    node.traversal_methods = await start_providers(node, "traversal")
    return ", ".join(node.traversal_methods) or "none installed"
