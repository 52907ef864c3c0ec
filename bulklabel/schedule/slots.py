"""Cron slots: when a job runs, and what a scheduler does with the slots due since the last.

Pure functions of a cron expression, a timezone and ``now`` (epoch seconds). Cron follows
Debian cron (``cronsim``): in the timezone given, a fixed-time job (``30 2 * * *``) that
falls into a spring-forward gap runs when the gap ends (03:00), one in a repeated
fall-back hour runs once (the first time); ``* * * * *`` and ``0 * * * *`` follow real time.

A slot is named by its time in UTC (``YYYYmmddTHHMM``): unambiguous in a repeated hour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo

UTC = timezone.utc
MISSED_CAP = 100        # missed slots listed one by one (the newest); more are only counted as "more"
FORWARD_CAP = 10_000    # forward steps when correcting a backward search (a few per day in practice)


def to_datetime(epoch: float, tz: tzinfo = UTC) -> datetime:
    return datetime.fromtimestamp(epoch, tz)


def slot_text(slot: datetime | float) -> str:
    """The slot in UTC as ``YYYYmmddTHHMM`` (the run's job id ends with it)."""
    when = to_datetime(slot) if isinstance(slot, (int, float)) else slot.astimezone(UTC)
    return when.strftime("%Y%m%dT%H%M")


def run_id(name: str, slot: datetime | float) -> str:
    return f"{name}-{slot_text(slot)}"


def local_text(slot: float, tz: tzinfo) -> str:
    """``2026-11-22 02:00 CET (01:00 UTC)``."""
    local, utc = to_datetime(slot, tz), to_datetime(slot)
    if local.utcoffset() == utc.utcoffset():
        return utc.strftime("%Y-%m-%d %H:%M UTC")
    day = "" if local.date() == utc.date() else utc.strftime("%Y-%m-%d ")
    return f"{local:%Y-%m-%d %H:%M %Z} ({day}{utc:%H:%M} UTC)"


def iso_utc(slot: float) -> str:
    return to_datetime(slot).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cron(expr: str, start: datetime, reverse: bool = False):
    from cronsim import CronSim

    return CronSim(expr, start, reverse=reverse)


def next_slots(expr: str, tz: tzinfo, after: float, count: int) -> list[datetime]:
    """The ``count`` slots strictly after ``after``, in ``tz``."""
    found = []
    it = _cron(expr, to_datetime(after, tz))
    for when in it:
        found.append(when)
        if len(found) >= count:
            break
    return found


def latest_slot(expr: str, tz: tzinfo, now: float) -> int | None:
    """The newest slot at or before ``now`` (epoch seconds), None if none in 50 years.

    A backward search from ``now`` can land early inside a repeated fall-back hour (cronsim
    reads the local time without its fold), never late; a short forward walk corrects it."""
    try:
        found = next(_cron(expr, to_datetime(math.floor(now) + 1, tz), reverse=True))
    except StopIteration:
        return None
    latest = int(found.timestamp())
    for _, when in zip(range(FORWARD_CAP), _cron(expr, to_datetime(latest, tz))):
        if when.timestamp() > now:
            break
        latest = int(when.timestamp())
    return latest


def slots_between(expr: str, tz: tzinfo, after: float, before: float, cap: int = MISSED_CAP) -> tuple[list[int], bool]:
    """Slots strictly between ``after`` and ``before`` (a slot), oldest first: the newest
    ``cap`` of them, and whether there were more."""
    found: list[int] = []
    for when in _cron(expr, to_datetime(before, tz), reverse=True):
        epoch = int(when.timestamp())
        if epoch <= after:
            return found[::-1], False
        if epoch >= before:
            continue
        if len(found) >= cap:
            return found[::-1], True
        found.append(epoch)
    return found[::-1], False


@dataclass(frozen=True)
class Decision:
    """What to do at one tick with the slots due since the last one handled."""

    latest: int | None          # the newest slot due (epoch seconds); None: nothing is due
    fire: bool                  # run ``latest`` now
    catchup: bool               # ...as the catch-up of a slot that passed while no scheduler ran
    missed: tuple[int, ...]     # slots passed over, oldest first (the newest MISSED_CAP of them)
    more_missed: bool           # more slots than ``missed`` lists were passed over


NOTHING = Decision(None, False, False, (), False)


def decide(expr: str, tz: tzinfo, catchup: bool, last: float, now: float, grace: float,
           cap: int = MISSED_CAP) -> Decision:
    """The slots due in (``last``, ``now``]: the newest runs if it became due less than
    ``grace`` seconds ago (whatever ``catchup`` says), or, older (no scheduler ran then),
    once if ``catchup``; every other one is missed. Cost: bounded by ``cap``, not by the
    length of the downtime."""
    latest = latest_slot(expr, tz, now)
    if latest is None or latest <= last:
        return NOTHING
    earlier, more = slots_between(expr, tz, last, latest, cap)
    recent = now - latest < grace
    fire = recent or catchup
    missed = tuple(earlier) if fire else (*earlier, latest)[-cap:]
    return Decision(latest, fire, fire and not recent, missed, more or (not fire and len(earlier) >= cap))


def parse_slot(text: str, tz: tzinfo, what: str = "--slot") -> float:
    """``--slot``: epoch seconds, or ISO 8601 (``2026-11-22T02:00+01:00``, ``...Z``; without an
    offset, in ``tz``), truncated to the minute."""
    from ..errors import ConfigError

    raw = str(text).strip()
    try:
        epoch = float(raw)
    except ValueError:
        try:
            when = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw)
        except ValueError:
            raise ConfigError(f"{what} takes a time like 2026-11-22T02:00 (in the job's timezone), "
                              f"2026-11-22T01:00Z or epoch seconds. Received: {text!r}") from None
        epoch = (when if when.tzinfo else when.replace(tzinfo=tz)).timestamp()
    if not math.isfinite(epoch) or not 0 <= epoch < 253402300800:  # 1970 to 9999
        raise ConfigError(f"{what} takes a time. Received: {text!r}")
    return float(math.floor(epoch / 60) * 60)
