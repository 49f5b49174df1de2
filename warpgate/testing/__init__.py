"""Test helpers for warpgate and its plugins.

The pytest plugin (:mod:`warpgate.testing.pytest_plugin`) is registered through the
``pytest11`` entry point, so installing warpgate gives every project the ``lab`` and
``lab_factory`` fixtures; :func:`nat_pairs` and :func:`nat_modes` parametrise over the
NAT matrix.
"""

from __future__ import annotations

from warpgate.testing.pytest_plugin import lab_unavailable_reason, nat_modes, nat_pairs

__all__ = ["lab_unavailable_reason", "nat_modes", "nat_pairs"]
