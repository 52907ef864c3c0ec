"""The schedule file: TOML, one ``[jobs.<name>]`` table per scheduled job.

The structure is checked by a JSON schema (unknown fields are errors), then what a schema
cannot say: the cron expression (5 fields, Debian cron semantics), the timezone (an IANA
name), the job name (valid job-id text, short enough for ``<name>-YYYYmmddTHHMM``). Every
problem is reported as ``schedule FILE: jobs.<name>.<field>: ...`` (``ConfigError``, exit 2).

Relative local paths in ``sources`` and ``dest`` are relative to the schedule file's folder.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import ConfigError
from ..jobs.ids import JOB_ID
from ..settings import DEFAULT_CHUNK_SIZE, DEFAULT_QUEUE
from . import slots

MAX_NAME = 128 - len("-YYYYmmddTHHMM")  # a run's job id is still a valid job id

FIELDS = ("sources", "dest", "cron", "timezone", "queue", "incremental", "catchup", "chunk_size", "model_id")
JOB_SCHEMA = {
    "type": "object",
    "required": ["sources", "dest", "cron"],
    "additionalProperties": False,
    "properties": {
        "sources": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
        "dest": {"type": "string", "minLength": 1},
        "cron": {"type": "string", "minLength": 1},
        "timezone": {"type": "string", "minLength": 1},
        "queue": {"type": "string", "minLength": 1},
        "incremental": {"type": "boolean"},
        "catchup": {"type": "boolean"},
        "chunk_size": {"type": "integer", "minimum": 1},
        "model_id": {"type": "string", "minLength": 1},
    },
}
SCHEMA = {
    "type": "object",
    "required": ["jobs"],
    "additionalProperties": False,
    "properties": {"jobs": {"type": "object", "minProperties": 1, "additionalProperties": JOB_SCHEMA}},
}
KINDS = {"string": "a string", "array": "a list of strings", "boolean": "true or false",
         "integer": "a whole number", "object": "a table"}


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    sources: tuple[str, ...]
    dest: str
    cron: str
    timezone: str = "UTC"
    queue: str = DEFAULT_QUEUE
    incremental: bool = True
    catchup: bool = True
    chunk_size: int = DEFAULT_CHUNK_SIZE
    model_id: str | None = None

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def job_id(self, slot: datetime | float) -> str:
        """The run's job id for ``slot``: ``<name>-<slot in UTC as YYYYmmddTHHMM>``."""
        return slots.run_id(self.name, slot)


@dataclass(frozen=True)
class Schedule:
    path: str                       # as given (messages name it so)
    jobs: dict[str, ScheduledJob]

    def job(self, name: str) -> ScheduledJob:
        if name not in self.jobs:
            raise ConfigError(f"schedule {self.path}: no job named {name!r} (it has: {', '.join(self.jobs)})")
        return self.jobs[name]


def _read_toml(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"schedule {path}: cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"schedule {path}: not valid TOML: {exc}") from None


def _where(path) -> str:
    """``['jobs', 'x', 'sources', 0]`` → ``jobs.x.sources[0]``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            shown = part if JOB_ID.fullmatch(part) else repr(part)
            text += f".{shown}" if text else shown
    return text or "(top level)"


def _schema_problems(error) -> list[tuple[str, str]]:
    """A jsonschema error → [(where, what)], in the words of a schedule file."""
    where = list(error.absolute_path)
    value = error.instance
    if error.validator == "additionalProperties":
        known = ", ".join(FIELDS) if where else "jobs"
        extra = sorted(set(value) - set(error.schema.get("properties", {})))
        return [(_where([*where, field]), f"unknown field (known: {known})") for field in extra]
    if error.validator == "required":
        return [(_where([*where, field]), "missing (required)") for field in error.validator_value
                if field not in value]
    if error.validator == "type":
        kind = error.validator_value
        return [(_where(where), f"must be {KINDS.get(kind, kind)}. Received: {value!r}")]
    if error.validator == "minimum":
        return [(_where(where), f"must be at least {error.validator_value}. Received: {value!r}")]
    if error.validator in ("minItems", "minProperties", "minLength"):
        return [(_where(where), "must not be empty")]
    return [(_where(where), error.message)]


def check_cron(expr: str, timezone: str = "UTC") -> str | None:
    """What is wrong with ``expr`` as a 5-field cron expression, or None."""
    from cronsim import CronSimError

    fields = expr.split()
    if len(fields) != 5:
        return (f"must have 5 fields (minute hour day-of-month month day-of-week), like \"0 2 * * *\". "
                f"Received: {expr!r} ({len(fields)} fields)")
    try:
        slots.next_slots(expr, ZoneInfo(timezone), 0.0, 1)
    except CronSimError as exc:
        return f"{exc} in {expr!r} (fields: minute hour day-of-month month day-of-week)"
    except StopIteration:
        return f"{expr!r} never matches a date"
    return None


def check_timezone(name: str) -> str | None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown timezone {name!r}: use an IANA name like \"UTC\" or \"Europe/Berlin\""
    return None


def _local(base: str, path: str) -> str:
    """A relative local path → relative to the schedule file's folder (URIs stay as they are)."""
    if "://" in path:
        return path
    if path.startswith("@"):
        return "@" + _local(base, path[1:])
    expanded = os.path.expanduser(path)
    return expanded if os.path.isabs(expanded) else os.path.join(base, expanded)


def parse_schedule(data: dict[str, Any], path: str) -> Schedule:
    import jsonschema

    problems: list[tuple[str, str]] = []
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for error in validator.iter_errors(data):
        problems += _schema_problems(error)
    tables = data.get("jobs") if isinstance(data.get("jobs"), dict) else {}
    for name, table in tables.items():
        if not JOB_ID.fullmatch(name) or len(name) > MAX_NAME:
            problems.append((_where(["jobs", name]), f"a job name is 1-{MAX_NAME} letters, digits, '.', '_' or "
                                                     "'-', starting with a letter or digit (its runs are named "
                                                     "<name>-YYYYmmddTHHMM)"))
        if not isinstance(table, dict):
            continue
        timezone = table.get("timezone", "UTC")
        if isinstance(timezone, str) and timezone and (problem := check_timezone(timezone)):
            problems.append((_where(["jobs", name, "timezone"]), problem))
            timezone = "UTC"
        cron = table.get("cron")
        if isinstance(cron, str) and cron and (problem := check_cron(cron, timezone)):
            problems.append((_where(["jobs", name, "cron"]), problem))
    if problems:
        unique = sorted(set(problems))
        raise ConfigError("\n".join(f"schedule {path}: {where}: {what}" for where, what in unique))
    base = os.path.dirname(os.path.abspath(path))
    jobs = {}
    for name, table in tables.items():
        jobs[name] = ScheduledJob(
            name=name, sources=tuple(_local(base, s) for s in table["sources"]),
            dest=_local(base, table["dest"]), cron=" ".join(table["cron"].split()),
            timezone=table.get("timezone", "UTC"), queue=table.get("queue", DEFAULT_QUEUE),
            incremental=table.get("incremental", True), catchup=table.get("catchup", True),
            chunk_size=int(table.get("chunk_size", DEFAULT_CHUNK_SIZE)), model_id=table.get("model_id"))
    return Schedule(path, jobs)


def load_schedule(path: str) -> Schedule:
    """Read and check the schedule file at ``path``; ``ConfigError`` names every problem."""
    return parse_schedule(_read_toml(path), path)
