"""Hypothesis settings shared by the fuzz suite.

CI runs every fuzz test with a modest example count so the whole suite stays under a
minute on a shared 2-core machine.  ``WARPGATE_FUZZ=long`` selects the long profile
(documented in ``docs/fuzzing.md``) for a deliberate hunt; ``WARPGATE_FUZZ_EXAMPLES=N``
sets any count.  The settings are applied per test (``@FUZZ``) rather than loaded as the
global profile, so the rest of the test suite keeps its own hypothesis settings.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILES = {"ci": 200, "long": 20_000}

_profile = os.environ.get("WARPGATE_FUZZ", "ci").strip().lower() or "ci"
if _profile not in PROFILES:
    raise RuntimeError(f"WARPGATE_FUZZ={_profile!r}: choose one of {sorted(PROFILES)}")
MAX_EXAMPLES = int(os.environ.get("WARPGATE_FUZZ_EXAMPLES", PROFILES[_profile]))

FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,  # a failure prints the blob that reproduces it
)

# The memory-bound checks feed this much garbage through each stream parser.
GARBAGE_BYTES = (64 if _profile == "long" else 8) * 1024 * 1024
