"""Errors every layer may raise; this module imports nothing of the package."""
from __future__ import annotations


class ConfigError(ValueError):
    """A config value that cannot work, or a run directory that cannot be used; raised before
    any work is done. The command line prints it on one line and exits with status 2."""


def fail(key: str, value: object, allowed: str) -> None:
    """Raise the one-line error for ``key=value``: what was wrong and what is allowed."""
    raise ConfigError(f"invalid config: {key}={value!r}; allowed: {allowed}")
