"""``python -m benchmarks``: every benchmark, one results table (see run_all.py)."""

from __future__ import annotations

import sys

from benchmarks.run_all import main

sys.exit(main())
