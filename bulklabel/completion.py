"""What happens once when a job is done: index its labels, then write its ``_SUCCESS``.

Whoever completes the job (the worker counting the last chunk, or the submit finishing a
listing whose chunks were all done) calls ``finish_job``. The index (``DEST/_index/``,
``bulklabel.index``) is derived from the shards, so a failure to update it is logged, not
fatal: the next incremental submit into DEST indexes every ended job it finds unindexed.
"""

from __future__ import annotations

import logging
from typing import Any

from .jobs import write_success

log = logging.getLogger("bulklabel.completion")


def finish_job(jobs, storage, job_id: str) -> dict[str, Any]:
    """Index ``job_id``'s labels in its destination, then write ``<job_id>/_SUCCESS``."""
    index_labels(storage, job_id, jobs.get(job_id).get("models") or ())
    return write_success(jobs, storage, job_id)


def index_labels(storage, job_id: str, models) -> dict[str, int]:
    """Add the job's labels to each model's index; {} (and a warning) when that fails."""
    from .index import index_job

    try:
        return index_job(storage, job_id, models=list(models))
    except Exception as exc:  # the next incremental submit catches up from the shards
        log.warning("job %s: could not update the label index under %s (%s: %s); the next "
                    "incremental submit will index it", job_id, storage.url("_index"), type(exc).__name__, exc)
        return {}
