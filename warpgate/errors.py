"""The exceptions warpgate raises.

Every error a user can cause or meet has its own type here, so applications can catch
exactly what they mean to handle.  All of them derive from :class:`WarpgateError`.
"""

from __future__ import annotations

import errno


class WarpgateError(Exception):
    """Base class of every error warpgate raises on purpose."""


class ConfigError(WarpgateError, ValueError):
    """A configuration value (conf dict, environment variable, argument) is invalid."""


class PluginError(WarpgateError):
    """A plugin failed, or the plugin stack asked for cannot be built.

    ``plugin`` and ``distribution`` name the culprit when one is known.
    """

    def __init__(
        self, message: str, *, plugin: str | None = None, distribution: str | None = None
    ) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.distribution = distribution


class PluginValidationError(PluginError):
    """A plugin's hook implementation does not match its specification."""


class PhaseError(WarpgateError):
    """A start-up phase could not complete."""

    def __init__(self, message: str, *, phase: str) -> None:
        super().__init__(message)
        self.phase = phase


class KeystoreError(WarpgateError):
    """The identity keystore cannot be read or written.

    A corrupted key file is reported, never replaced: replacing it would silently
    change the node's identity.
    """


class PortInUseError(WarpgateError, OSError):
    """The listen port asked for is already taken on an address we must bind.

    ``errno`` is ``EADDRINUSE``; ``port`` is the port that was taken.
    """

    def __init__(self, message: str, *, port: int = 0) -> None:
        super().__init__(message)
        self.errno = errno.EADDRINUSE
        self.port = port


class AddressError(WarpgateError, ValueError):
    """Node address bytes (or their text form) are malformed or unsupported."""


class UnavailableError(WarpgateError):
    """A feature was asked for that this installation cannot provide (yet or here)."""
