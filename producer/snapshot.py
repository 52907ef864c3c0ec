"""``bulklabel snapshot``: the standing "labels as of now" table of a destination.

One record per source: its latest successful label across every job in DEST (by the
model asked for), or, for a source no job labeled successfully, its latest error. Jobs
are read newest first (``_JOB``'s ``submitted_at``, else ``_SUCCESS``'s); a source seen in
a newer job hides it in older ones. Reads storage only: no Redis needed. Memory holds a
16-byte digest per source (sorted numpy runs), plus the error records still pending.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

from bulklabel.chunks import is_shard, manifest_key, shard_prefix, success_key
from bulklabel.errors import ConfigError
from bulklabel.index import DigestSet, digest_pairs, job_folders
from bulklabel.record_codec import jsonl_lines
from bulklabel.sinks import open_sink, output_format
from bulklabel.storage import open_storage


def _submitted_at(storage, job_id: str) -> float:
    for key in (manifest_key(job_id), success_key(job_id)):
        try:
            value = json.loads(storage.read(key)).get("submitted_at")
        except (FileNotFoundError, ValueError, AttributeError):  # missing, or not a JSON object
            continue
        if isinstance(value, (int, float)):
            return float(value)
    return 0.0


def newest_first(storage) -> list[str]:
    """Job folders of DEST, the most recently submitted first (job id breaks ties)."""
    jobs = [(_submitted_at(storage, job), job) for job in job_folders(storage)]
    return [job for _, job in sorted(jobs, reverse=True)]


def _records(storage, job_id: str) -> Iterator[list[dict]]:
    for key in sorted(k for k in storage.list(shard_prefix(job_id)) if is_shard(k)):
        yield [json.loads(line) for line in jsonl_lines(storage.read(key)) if line.strip()]


def _newest_model(storage, jobs: list[str]) -> str:
    for job in jobs:
        for batch in _records(storage, job):
            for record in batch:
                if record.get("model"):
                    return record["model"]
    raise ConfigError(f"no labeled records under {storage.url('')}: nothing to snapshot")


def snapshot(dest: str, out: str, model: str | None = None) -> dict:
    output_format(out)
    storage = open_storage(dest)
    jobs = newest_first(storage)
    if not jobs:
        raise ConfigError(f"no job results under {dest}: give the DEST that submit wrote to (--out)")
    if model is None:
        model = _newest_model(storage, jobs)
        print(f"bulklabel: snapshot of the labels of model {model} (the newest job's; choose with --model)",
              file=sys.stderr)
    seen = DigestSet()            # sources with a successful label written already
    failed: dict[str, dict] = {}  # source -> its newest error record, while no success is known
    written = used_jobs = 0
    sink = open_sink(out)
    try:
        for job in jobs:
            used = False
            for batch in _records(storage, job):
                mine = [r for r in batch if r.get("model") == model]
                if not mine:
                    continue
                used = True
                ok = [r for r in mine if r.get("error") is None]
                if ok:
                    digests = digest_pairs([r["source"] for r in ok], [""] * len(ok))
                    fresh = ~seen.contains(digests)
                    keep, kept = [], set()
                    for record, new, digest in zip(ok, fresh, digests):
                        if new and digest not in kept:
                            kept.add(digest)
                            keep.append(dict(record, job_id=job))
                    seen.add(digests)
                    sink.write(keep)
                    written += len(keep)
                for record in mine:
                    if record.get("error") is not None and record["source"] not in failed:
                        failed[record["source"]] = dict(record, job_id=job)
            used_jobs += used
        pending = list(failed.values())
        if pending:
            digests = digest_pairs([r["source"] for r in pending], [""] * len(pending))
            errors = [r for r, labeled in zip(pending, seen.contains(digests)) if not labeled]
            sink.write(errors)
            written += len(errors)
        else:
            errors = []
    finally:
        sink.close()
    print(f"bulklabel: snapshot: {written} sources ({len(errors)} with errors only) from {used_jobs} of "
          f"{len(jobs)} jobs into {out}", file=sys.stderr)
    return {"records": written, "errors": len(errors), "jobs": used_jobs, "model": model, "out": out}
