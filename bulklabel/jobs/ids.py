"""Job ids: generated, or checked when given (a job id names a folder under DEST)."""

from __future__ import annotations

import re
import secrets
import time

from ..errors import ConfigError

JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # matched whole: fullmatch


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise ConfigError(
            "a job id is 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit "
            f"(it names a folder under DEST). Received: {job_id!r}"
        )
    return job_id
