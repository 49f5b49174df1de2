"""Phases 2 and 3: the keypair (from the keystore), machine id, listen port and node id."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from warpgate.identity.keystore import Keystore, public_key_bytes
from warpgate.identity.machine import compute_machine_id
from warpgate.identity.paths import resolve_install_path
from warpgate.net.interfaces import default_mac
from warpgate.plugin import hookimpl

if TYPE_CHECKING:
    from warpgate.node.node import Node

NODE_ID_BYTES = 16


def node_id_for(public_key: bytes) -> str:
    """The node id: hex of the first 16 bytes of SHA-256 over the compressed public key."""
    return hashlib.sha256(public_key).digest()[:NODE_ID_BYTES].hex()


@hookimpl(trylast=True)
async def warpgate_load_machine_identity(node: Node) -> str:
    if node.private_key is None:
        keystore = Keystore(resolve_install_path(node.conf["install_path"]))
        node.private_key = keystore.load_or_create(node.conf["identity_name"])
    if not node.machine_id:
        node.machine_id = compute_machine_id(default_mac(node.ifs))
    return node.conf["identity_name"]


@hookimpl(trylast=True)
async def warpgate_load_cryptography_and_auth(node: Node) -> str:
    assert node.private_key is not None, "phase load_machine_identity sets the key"
    node.public_key = public_key_bytes(node.private_key.public_key())
    node.node_id = node_id_for(node.public_key)
    return node.node_id[:12]
