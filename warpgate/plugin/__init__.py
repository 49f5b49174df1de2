"""warpgate's plugin framework: the ``hookimpl`` marker and the names plugin authors need.

A plugin is a module (or object) with functions marked ``@hookimpl``, published under
the ``warpgate`` entry-point group::

    [project.entry-points.warpgate]
    my-method = "warpgate_plugin_my_method"

The hooks are specified, with examples, in :mod:`warpgate.plugin.spec`.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "warpgate"
ENTRY_POINT_GROUP = "warpgate"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marks a function as the implementation of a warpgate hook (``@hookimpl``)."""

__all__ = ["ENTRY_POINT_GROUP", "PROJECT_NAME", "hookimpl"]
