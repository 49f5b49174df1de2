"""Exceptions raised by the NAT lab."""

from __future__ import annotations

from warpgate.errors import WarpgateError


class LabError(WarpgateError):
    """The lab could not be built, used or torn down."""


class LabUnavailable(LabError):
    """This machine cannot run the lab: not Linux, not root, or a tool is missing."""


class MissingBinary(LabUnavailable):
    """A program the lab needs is not installed; ``package`` names the Debian package."""

    def __init__(self, binary: str, package: str) -> None:
        super().__init__(
            f"{binary!r} not found: install the Debian package {package!r} "
            f"(apt-get install {package})"
        )
        self.binary = binary
        self.package = package


class ServerStartError(LabError):
    """A lab server did not start or did not answer in time."""
