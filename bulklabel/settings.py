"""Settings that come from the environment.

Every command-line option can also be given as an environment variable
``BULKLABEL_<OPTION>`` (upper case, dashes as underscores): the flag wins over the
variable, the variable over the built-in default.
"""

from __future__ import annotations

import os

from .errors import ConfigError

ENV_PREFIX = "BULKLABEL_"


def env_name(option: str) -> str:
    return ENV_PREFIX + option.lstrip("-").replace("-", "_").upper()


def env_default(option: str, default=None):
    """The environment's value for ``option`` (a flag like ``--batch-size``), else ``default``."""
    return os.environ.get(env_name(option), default)


def positive_int(text: str | int, what: str) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a whole number. Received: {what}={text!r}") from None
    if value <= 0:
        raise ConfigError(f"{what} must be at least 1. Received: {what}={value}")
    return value
