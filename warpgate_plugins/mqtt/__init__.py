"""The ``mqtt`` built-in: signal messages through MQTT brokers (see docs/signalling.md).

Registered as a signal transport named ``mqtt``; its conf keys are declared here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from warpgate.plugin import hookimpl
from warpgate.plugin.types import SignalTransportInfo
from warpgate_plugins.mqtt.brokers import BrokerUrl, hrw_rank, hrw_select, parse_broker_url
from warpgate_plugins.mqtt.transport import (
    MqttSignal,
    SignalDeliveryError,
    SignalRequestError,
    signal_request,
    topic_for,
)

__all__ = [
    "DEFAULT_BROKERS",
    "BrokerUrl",
    "MqttSignal",
    "SignalDeliveryError",
    "SignalRequestError",
    "hrw_rank",
    "hrw_select",
    "parse_broker_url",
    "signal_request",
    "topic_for",
]

# Well-known public brokers: production defaults only.  Tests, the lab and `warpgate
# serve` deployments set mqtt_brokers to their own.
DEFAULT_BROKERS = [
    "mqtt://broker.hivemq.com:1883",
    "mqtt://test.mosquitto.org:1883",
    "mqtt://broker.emqx.io:1883",
    "mqtt://mqtt.eclipseprojects.io:1883",
]


@hookimpl
def warpgate_conf_defaults() -> Mapping[str, Any]:
    return {
        "mqtt_brokers": list(DEFAULT_BROKERS),  # mqtt://[user:pass@]host[:port], mqtts://
        "mqtt_ca_file": None,  # CA bundle for mqtts:// (None: the system's)
        "mqtt_connect_timeout": 3.0,  # seconds for one broker connection attempt
        "mqtt_keepalive": 15,  # MQTT keep-alive, seconds
        "mqtt_reconnect_initial": 0.5,  # first reconnect delay, doubling...
        "mqtt_reconnect_max": 30.0,  # ...up to this
        "mqtt_ack_timeout": 5.0,  # deadline for a message to be acknowledged, seconds
        "mqtt_retry_initial": 0.25,  # first retransmission after this, doubling...
        "mqtt_retry_max": 2.0,  # ...up to this
        "mqtt_request_timeout": 10.0,  # default deadline of request(), seconds
        "mqtt_envelope": "paired",  # "paired" (pair key, fast) or "signed" (ECDSA per message)
        "mqtt_window": 120.0,  # accepted clock difference with senders, both ways, seconds
        "mqtt_replay_cache": 65536,  # envelopes remembered for replay detection
        "mqtt_max_message": 16384,  # largest envelope sent or accepted, bytes
        "mqtt_max_queued": 10000,  # incoming messages buffered per broker connection
        "mqtt_idle_close": 300.0,  # close connections to other nodes' brokers unused this long
    }


@hookimpl
def warpgate_register_signal_transports() -> list[SignalTransportInfo]:
    return [
        SignalTransportInfo(
            name="mqtt",
            factory=MqttSignal,
            description="signed, encrypted signal messages through MQTT brokers",
        )
    ]
