"""Defaults, value parsers and the environment: what every option is built from.

Every command-line option can also be given as an environment variable
``BULKLABEL_<OPTION>`` (upper case, dashes as underscores): the flag wins over the
variable, the variable over the built-in default. The options themselves are declared in
``bulklabel.options``; this module holds what they share: defaults, parsers that turn text
into values (raising ``ConfigError`` that names the flag or variable and what it received),
and the settings of the distributed mode that only the environment sets.
"""

from __future__ import annotations

import os
import re

from .errors import ConfigError

ENV_PREFIX = "BULKLABEL_"

# --- defaults ---------------------------------------------------------------------------

PREPROCESS_MODES = ("none", "rescale", "tf", "caffe", "torch")
DEFAULT_MAX_PIXELS = 90_000_000
DEFAULT_MAX_BYTES = 256 * 1024**2
DEFAULT_TOP_K = 5
# Images per chunk (task): a few seconds of a GPU's work. Each chunk costs Redis a fixed ~40
# commands, so the chunk size sets how many GPUs one Redis feeds (docs/benchmarks.md, "The
# control-plane limit"); smaller chunks spread a small job over more workers.
DEFAULT_CHUNK_SIZE = 4096
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "bulklabel"
# Seconds a delivered chunk may stay unacknowledged before Redis hands it to another
# worker. Keep it well above the slowest chunk: a chunk still running when it expires is
# processed twice (harmlessly: shards are replaced, counts are idempotent, but work is lost).
DEFAULT_VISIBILITY_TIMEOUT = 3600
# Deliveries after which a chunk whose workers keep dying gets error records instead.
DEFAULT_MAX_DELIVERIES = 3


# --- the environment --------------------------------------------------------------------


def env_name(option: str) -> str:
    return ENV_PREFIX + option.lstrip("-").replace("-", "_").upper()


def env_default(option: str, default=None):
    """The environment's value for ``option`` (a flag like ``--batch-size``), else ``default``."""
    return os.environ.get(env_name(option), default)


class FromEnv(str):
    """A raw option value that came from environment variable ``variable`` (so errors name it)."""

    variable: str

    def __new__(cls, text: str, variable: str) -> FromEnv:
        value = super().__new__(cls, text)
        value.variable = variable
        return value

    def __getnewargs__(self) -> tuple[str, str]:  # copy and pickle keep the variable
        return str(self), self.variable


def origin(raw, flag: str) -> str:
    """How to name where ``raw`` came from in an error: its variable, else the flag."""
    return raw.variable if isinstance(raw, FromEnv) else flag


# --- parsers: (text, name) → value ------------------------------------------------------


def whole_number(text: str | int, what: str, minimum: int = 1) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a whole number. Received: {what}={text!r}") from None
    if value < minimum:
        raise ConfigError(f"{what} must be at least {minimum}. Received: {what}={value}")
    return value


def positive_int(text: str | int, what: str) -> int:
    return whole_number(text, what, 1)


def non_negative_int(text: str | int, what: str) -> int:
    return whole_number(text, what, 0)


def auto_or_positive(text: str | int, what: str) -> int:
    """``auto`` → 0, meaning "choose for me"; otherwise a whole number ≥ 1."""
    if str(text).strip().lower() == "auto":
        return 0
    return positive_int(text, what)


def auto_or_count(text: str | int, what: str) -> int | None:
    """``auto`` → None, meaning "choose for me"; otherwise a whole number ≥ 0."""
    if str(text).strip().lower() == "auto":
        return None
    return non_negative_int(text, what)


def optional_positive(text: str | int | None, what: str) -> int | None:
    return None if text in (None, "") else positive_int(text, what)


_UNITS = {"": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
          "g": 1024**3, "gb": 1024**3, "gib": 1024**3}


def byte_size(text: str | int, what: str) -> int:
    """Bytes: a whole number, or with a unit (``256M``, ``1GiB``, ``512k``: powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS or int(match.group(1)) == 0:
        raise ConfigError(f"{what} takes a size in bytes, like 268435456, 256M or 1G. "
                          f"Received: {what}={text!r}")
    return int(match.group(1)) * _UNITS[unit]


def number(text: str | float, what: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number. Received: {what}={text!r}") from None


def text(value: str | None, what: str) -> str | None:
    return None if value in (None, "") else str(value)


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def boolean(value: str | bool | None, what: str) -> bool | None:
    """Strictly: 1/true/yes/on or 0/false/no/off, any case; anything else is an error."""
    if value is None or isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{what} takes {'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)}. "
                      f"Received: {what}={value!r}")


def parse_image_size(value: str | int | None, what: str = "--image-size") -> tuple[int, int] | None:
    """``N`` or ``HxW`` (at least 8) → (H, W); empty → None."""
    if value is None or value == "":
        return None
    raw = str(value).lower().replace(",", "x")
    try:
        parts = [int(p) for p in raw.split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 8:
        raise ConfigError(f"{what} takes N or HxW (at least 8). Received: {value!r}")
    return parts[0], parts[1]


def size_list(value: str | None, what: str) -> list[int]:
    """``150,299`` → [150, 299]; empty → []."""
    if value in (None, ""):
        return []
    try:
        sizes = [int(x) for x in str(value).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{what} takes sizes like 150,299. Received: {value!r}") from None
    if not sizes:
        raise ConfigError(f"{what} takes sizes like 150,299. Received: {value!r}")
    return sizes


def weights(value: str | None, what: str = "--weights") -> str | None:
    """``imagenet``, ``none`` (random weights) or a weights file; empty → None (imagenet)."""
    if value in (None, ""):
        return None
    return value.lower() if value.lower() in ("imagenet", "none") else value


def choice(choices: tuple[str, ...]):
    def parse(value: str | None, what: str) -> str | None:
        if value in (None, ""):
            return None
        if value not in choices:
            raise ConfigError(f"{what} takes one of {', '.join(choices)}. Received: {what}={value!r}")
        return value

    return parse


# --- distributed mode: set by the environment (or --redis) ------------------------------


def redis_url(flag: str | None = None) -> str:
    url = flag or os.environ.get("BULKLABEL_REDIS_URL") or DEFAULT_REDIS_URL
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"the Redis URL must start with redis://, rediss:// or unix://. Received: {redact_url(url)!r}"
        )
    return url


def allowed_destinations(value, what: str) -> tuple[str, ...]:
    """``--allow-dest`` prefixes: repeated flags (a list) or one comma-separated string, each a
    local folder (made absolute) or ``s3://bucket[/prefix]``; none means any destination."""
    import os

    if value in (None, ""):
        return ()
    items = value if isinstance(value, list) else str(value).split(",")
    found = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item.startswith("s3://"):
            if not item[5:].strip("/"):
                raise ConfigError(f"{what}: {item!r} names no bucket; use s3://bucket or s3://bucket/prefix")
            found.append(item.rstrip("/"))
        elif "://" in item:
            raise ConfigError(f"{what} takes local folders and s3://bucket/prefix. Received: {item!r}")
        else:
            found.append(os.path.realpath(os.path.expanduser(item)))
    return tuple(found)


def visibility_timeout() -> int:
    return positive_int(
        os.environ.get("BULKLABEL_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT),
        "BULKLABEL_VISIBILITY_TIMEOUT",
    )


def max_deliveries() -> int:
    return positive_int(
        os.environ.get("BULKLABEL_MAX_DELIVERIES", DEFAULT_MAX_DELIVERIES), "BULKLABEL_MAX_DELIVERIES"
    )


_QUERY_SECRET = re.compile(r"(?i)([?&;](?:password|pass|pwd|secret|token)=)[^&;#]*")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to print or log): the one in the
    user-info part, and ``?password=`` style query parameters (as redis-py accepts)."""
    from urllib.parse import urlsplit, urlunsplit

    url = _QUERY_SECRET.sub(r"\1***", url)
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
