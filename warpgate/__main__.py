"""``python -m warpgate`` is the ``warpgate`` command."""

import sys

from warpgate.cli import main

sys.exit(main())
