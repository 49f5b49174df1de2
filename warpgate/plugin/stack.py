"""Building the provider stack of one role for a node: which providers, in what order, started."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from warpgate.plugin.manager import ENV_STACK, env_list
from warpgate.plugin.types import Role, TraversalMethodInfo

if TYPE_CHECKING:
    from warpgate.node.node import Node


def stack_for(node: Node, role: Role) -> list[str] | None:
    """The ordered provider names for ``role``: environment over conf; ``None`` = all."""
    from_env = env_list(ENV_STACK[role])
    if from_env is not None:
        return from_env
    wanted = node.conf["plugins"].get(role)
    return list(wanted) if wanted is not None else None


async def start_providers(node: Node, role: Role) -> dict[str, Any]:
    """Create each selected provider with its factory, await its ``start()`` if it
    has one, and arrange for its ``aclose()`` when the node closes."""
    infos = node.plugins.select(role, stack_for(node, role))
    if role == "traversal" and not node.conf["enable_punching"]:
        infos = [i for i in infos if not (isinstance(i, TraversalMethodInfo) and i.kind == "punch")]
    providers: dict[str, Any] = {}
    for info in infos:
        provider = info.factory(node)
        start = getattr(provider, "start", None)
        if start is not None:
            result = start()
            if inspect.isawaitable(result):
                await result
        aclose = getattr(provider, "aclose", None)
        if aclose is not None:
            node.add_cleanup(aclose)
        providers[info.name] = provider
    return providers
