"""The producer–worker contract: the chunk message and where its results go.

``producer.submit`` builds a ``ChunkMessage`` per chunk and sends ``to_json()`` as the
Celery task's keyword arguments; ``worker.serving.tasks`` rebuilds it with ``from_json``,
which validates every field. The message carries ``version``: a worker meeting a message of
another version (a producer older or newer than itself, during a rolling upgrade) refuses
it with a clear reason instead of guessing at its meaning.

Each chunk's records go to ``shard_key(job, chunk)`` under the job's destination, and the
job's summary to ``success_key(job)`` (and the submit's request to ``manifest_key(job)``);
``producer.results`` and ``producer.snapshot`` read them back by the same names. A message
may carry each source's content fingerprint (``bulklabel.fingerprints``), copied into
its record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .jobs import check_job_id
from .names import is_text

TASK_NAME = "bulklabel.classify_chunk"
VERSION = 1
SUCCESS = "_SUCCESS"
MANIFEST = "_JOB"


class MessageError(ValueError):
    """A task message that is not a chunk message this version of bulklabel understands."""


@dataclass(frozen=True)
class ChunkMessage:
    job_id: str
    chunk: int
    sources: tuple[str, ...]
    dest: str
    version: int = VERSION
    fingerprints: tuple[str | None, ...] | None = None  # one per source (bulklabel.fingerprints)

    def to_json(self) -> dict[str, Any]:
        fields = {"version": self.version, "job_id": self.job_id, "chunk": self.chunk,
                  "sources": list(self.sources), "dest": self.dest}
        if self.fingerprints is not None:
            fields["fingerprints"] = list(self.fingerprints)
        return fields

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> ChunkMessage:
        """The message in ``fields`` (a task's keyword arguments), or ``MessageError`` saying why not."""
        version = fields.get("version")
        if type(version) is not int or version != VERSION:
            who = ("an older producer (it has no version field)" if version is None
                   else f"a producer speaking version {version!r}")
            raise MessageError(f"chunk message from {who}; this worker speaks version {VERSION}: "
                               "run the same bulklabel version on producers and workers")
        unknown = sorted(set(fields) - {"version", "job_id", "chunk", "sources", "dest", "fingerprints"})
        if unknown:
            raise MessageError(f"chunk message with unknown fields {unknown}")
        job_id, chunk = fields.get("job_id"), fields.get("chunk")
        sources, dest = fields.get("sources"), fields.get("dest")
        if not isinstance(job_id, str):
            raise MessageError(f"job_id must be a string. Received: {job_id!r}")
        try:
            check_job_id(job_id)
        except ConfigError as exc:
            raise MessageError(str(exc)) from None
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0:
            raise MessageError(f"chunk number must be a whole number >= 0. Received: {chunk!r}")
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise MessageError("sources must be a list of strings")
        for text in (*sources, dest):
            if isinstance(text, str) and not is_text(text):
                raise MessageError(f"{text!r} is not valid Unicode (a lone surrogate): producers send "
                                   "every name in valid UTF-8 (see bulklabel.names)")
        if not isinstance(dest, str) or not dest:
            raise MessageError(f"dest must be a non-empty string. Received: {dest!r}")
        prints = fields.get("fingerprints")
        if prints is not None:
            if (not isinstance(prints, list) or len(prints) != len(sources)
                    or not all(p is None or (isinstance(p, str) and is_text(p)) for p in prints)):
                raise MessageError("fingerprints must be a list of strings or nulls, one per source")
            prints = tuple(prints)
        return cls(job_id, chunk, tuple(sources), dest, fingerprints=prints)

    @property
    def shard_key(self) -> str:
        return shard_key(self.job_id, self.chunk)


def shard_prefix(job_id: str) -> str:
    return f"{job_id}/part-"


def shard_key(job_id: str, chunk: int) -> str:
    """Where chunk ``chunk`` of job ``job_id`` writes its records, relative to the destination."""
    return f"{shard_prefix(job_id)}{chunk:06d}.jsonl"


def is_shard(key: str) -> bool:
    return key.rsplit("/", 1)[-1].startswith("part-") and key.endswith(".jsonl")


def success_key(job_id: str) -> str:
    return f"{job_id}/{SUCCESS}"


def manifest_key(job_id: str) -> str:
    """What the submit asked for (sources, queue, time, incremental): ``DEST/<job_id>/_JOB``."""
    return f"{job_id}/{MANIFEST}"
