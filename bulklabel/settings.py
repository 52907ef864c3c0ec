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


# --- distributed mode ---------------------------------------------------------------

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "bulklabel"
# Seconds a delivered chunk may stay unacknowledged before Redis hands it to another
# worker. Keep it well above the slowest chunk: a chunk still running when it expires is
# processed twice (harmlessly: shards are replaced, counts are idempotent, but work is lost).
DEFAULT_VISIBILITY_TIMEOUT = 3600
# Deliveries after which a chunk whose workers keep dying gets error records instead.
DEFAULT_MAX_DELIVERIES = 3


def redis_url(flag: str | None = None) -> str:
    url = flag or os.environ.get("BULKLABEL_REDIS_URL") or DEFAULT_REDIS_URL
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"the Redis URL must start with redis://, rediss:// or unix://. Received: {redact_url(url)!r}"
        )
    return url


def visibility_timeout() -> int:
    return positive_int(
        os.environ.get("BULKLABEL_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT),
        "BULKLABEL_VISIBILITY_TIMEOUT",
    )


def max_deliveries() -> int:
    return positive_int(
        os.environ.get("BULKLABEL_MAX_DELIVERIES", DEFAULT_MAX_DELIVERIES), "BULKLABEL_MAX_DELIVERIES"
    )


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to print or log)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
