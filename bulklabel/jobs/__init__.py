"""Job state in Redis, shared by the producer, the workers and ``status``.

Counting is idempotent: a chunk's images are added to the totals only by the first
completion of that chunk (``SADD chunks_done`` gates the increments inside one Lua
script), so a redelivered chunk never counts twice. The transition to ``done`` happens in
the same atomic step, whoever completes it last — a worker finishing the final chunk, or
the producer finishing the listing after every chunk already finished — so exactly one
party writes the ``_SUCCESS`` summary.

The Lua scripts live in ``lua/`` (package data); ``scripts`` loads them.
"""

from .ids import JOB_ID, check_job_id, new_job_id
from .store import (
    ENDED,
    KEEP_SECONDS,
    MAX_AGE_SECONDS,
    Delivery,
    JobNotFound,
    JobStore,
    connect,
    describe_connection_error,
    open_store,
)
from .view import job_view, success_summary, write_success

__all__ = [
    "ENDED", "JOB_ID", "KEEP_SECONDS", "MAX_AGE_SECONDS", "Delivery", "JobNotFound", "JobStore",
    "check_job_id", "connect",
    "describe_connection_error", "job_view", "new_job_id", "open_store", "success_summary",
    "write_success",
]
