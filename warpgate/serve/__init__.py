"""Infrastructure a deployment runs, embedded: what ``warpgate serve`` and the demo start
so a fresh machine needs nothing else installed (the ``server`` extra)."""

from warpgate.serve.mqtt_broker import EmbeddedMqttBroker

__all__ = ["EmbeddedMqttBroker"]
