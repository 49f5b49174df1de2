"""``{{ cookiecutter.provider_name }}``: a start-up phase override.

{{ cookiecutter.description }}.

An override of the ``start_maintenance_tasks`` start-up phase (phase 6).  Phase hooks
are ``firstresult``: warpgate's built-in implementation is ``trylast``, so this one runs
first.  Returning ``None`` lets the built-in run as well (extend the phase); returning
anything else ends the phase there (replace it).  This skeleton extends it: it starts a
background task that logs how many links the node holds every
``{{ cookiecutter.conf_prefix }}_report_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from warpgate import hookimpl

log = logging.getLogger(__name__)
NAME = "{{ cookiecutter.provider_name }}"
INTERVAL_KEY = "{{ cookiecutter.conf_prefix }}_report_interval"


async def _report(node: Any, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        log.info("%s holds %d link(s)", node.node_id[:16], len(getattr(node, "links", ())))


@hookimpl
async def warpgate_start_maintenance_tasks(node: Any) -> None:
    interval = float(node.conf[INTERVAL_KEY])
    if interval > 0:
        # node.spawn: the node cancels the task when it closes.
        node.spawn(_report(node, interval), name=f"{NAME} link report")
    return None  # the built-in maintenance runs too


@hookimpl
def warpgate_conf_defaults() -> Mapping[str, Any]:
    return {INTERVAL_KEY: 60.0}  # seconds; 0 turns the report off
