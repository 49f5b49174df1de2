"""``warpgate demo`` and the embedded infrastructure the CLI can start on loopback."""

from warpgate.demo.infra import EmbeddedInfra

__all__ = ["EmbeddedInfra"]
