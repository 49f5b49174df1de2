"""Refuse a plugin name warpgate would reject at registration, before writing files."""

import re
import sys

NAME = "{{ cookiecutter.provider_name }}"

if not re.fullmatch(r"[a-z][a-z0-9_-]{0,39}", NAME):
    print(
        f"error: {NAME!r} is not a valid provider name: use 1-40 characters of a-z, 0-9, "
        "'-' or '_', starting with a letter",
        file=sys.stderr,
    )
    sys.exit(1)
