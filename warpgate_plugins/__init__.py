"""warpgate's built-in plugins.

Each sub-module is an ordinary plugin declared under the ``warpgate`` entry-point
group in warpgate's own pyproject, so it is listed, blocked and replaced exactly like
a third-party ``warpgate-plugin-xyz``.  Built-in phase implementations are
``trylast``: a third-party implementation of the same phase runs first.
"""
