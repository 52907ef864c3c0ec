"""Log lines as text or as JSON (``--log-format``), with the job and chunk they belong to.

``json`` writes one object per line, for log shippers::

    {"time": "2026-01-05T10:01:02.345Z", "level": "INFO", "logger": "bulklabel.worker",
     "message": "job j chunk 3: 500 images, 0 errors, 4.1 s", "worker": "bulklabel-0-41@gpu1",
     "device": "0", "job_id": "j", "chunk": 3}

``time`` is ISO 8601 in UTC; ``exc_info`` (a traceback, as text) appears when there is one.
Fields that are known process-wide are set once with ``bind`` (the worker's name); fields of
one piece of work with ``context`` (a ``contextvars`` scope: the chunk being labeled), so
every line logged inside it carries them. Lines from threads that the work starts (the
engine's read and decode pools) carry only the bound fields. With ``json``, Python warnings
are logged too (logger ``py.warnings``); output that does not go through ``logging`` at all
(TensorFlow's C++ messages, Celery's shutdown notice) stays as it is.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

FORMATS = ("text", "json")
FIELDS = ("worker", "device", "job_id", "chunk")  # the context fields, in the order they are written

_bound: dict[str, Any] = {}
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("bulklabel_log", default=None)


def bind(**fields: Any) -> None:
    """Fields every later line of this process carries (all threads)."""
    _bound.update({k: v for k, v in fields.items() if v is not None})


@contextlib.contextmanager
def context(**fields: Any) -> Iterator[None]:
    """Fields every line logged inside the ``with`` block carries (this thread or task)."""
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current() -> dict[str, Any]:
    """The fields a line logged here and now would carry."""
    return {**_bound, **(_context.get() or {})}


class ContextFilter(logging.Filter):
    """Copies the bound and context fields onto each record (``extra=`` given by the caller wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context fields, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
                    + f"{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup(log_format: str = "text", text_format: str = "%(asctime)s %(levelname)s %(name)s: %(message)s",
          level: int = logging.INFO, stream=None) -> logging.Handler:
    """Send the root logger's records to ``stream`` (stderr) as ``text`` or ``json``; replaces
    the root's handlers, so calling it again switches the format."""
    if log_format not in FORMATS:
        raise ValueError(f"unknown log format {log_format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(text_format))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(log_format == "json")  # warnings become records too (logger py.warnings)
    return handler
