"""Text for the report page: escaping (everything from records is untrusted) and number,
duration and time formats."""

from __future__ import annotations

import html
import math
import time

# C0 controls (tab, newline and carriage return apart) and DEL are not text: shown as U+FFFD.
_CONTROLS = {c: "\ufffd" for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)}
NA = "n/a"


def esc(value) -> str:
    """``value`` as HTML text, safe in an element and in a quoted attribute."""
    return html.escape(str(value).translate(_CONTROLS), quote=True)


def short(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (not escaped)."""
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "\u2026"


def number(value) -> str:
    """An integer with thousands separators, or ``n/a``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return NA
    return f"{int(value):,}"


def decimal(value, places: int = 1) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return NA
    return f"{value:,.{places}f}"


def score(value) -> str:
    return decimal(value, 3)


def percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else NA


def duration(seconds) -> str:
    """``seconds`` as ``12.3 s``, ``4 min 05 s`` or ``2 h 03 min``."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
            or seconds < 0:
        return NA
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours:,} h {minutes:02d} min"


def timestamp(value) -> str:
    """A unix time as ``2024-05-01 12:00:00 UTC``; any other value as its text."""
    if value is None:
        return NA
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(value))
        except (OverflowError, OSError, ValueError):
            return NA
    return str(value)
