"""``bulklabel results``: merge a job's shards into one .jsonl/.csv/.parquet file.

Shards are disjoint by construction (one per chunk, replaced on re-run), and the merge
also drops any repeated source, so the output has exactly one record per image. It checks
the shards against the job's counts and says so when they disagree.
"""

from __future__ import annotations

import hashlib
import json
import sys

from bulklabel.chunks import is_shard, shard_prefix
from bulklabel.errors import BulkLabelError, ConfigError
from bulklabel.jobs import open_store
from bulklabel.record_codec import jsonl_lines
from bulklabel.sinks import open_sink, output_format
from bulklabel.storage import open_storage


def merge(url: str, job_id: str, out: str, partial: bool = False) -> dict:
    output_format(out)
    job = open_store(url).get(job_id)
    if job["state"] != "done" and not partial:
        raise ConfigError(
            f"job {job_id} is {job['state']} ({job['done']}/{job['total']} images): wait for it "
            f"(bulklabel status {job_id} --watch) or pass --partial to merge what is there")
    storage = open_storage(job["dest"])
    shards = sorted(k for k in storage.list(shard_prefix(job_id)) if is_shard(k))
    seen: set[bytes] = set()
    written = repeated = errors = 0
    sink = open_sink(out)
    try:
        for key in shards:
            batch = []
            for line in jsonl_lines(storage.read(key)):
                if not line.strip():
                    continue
                record = json.loads(line)
                digest = hashlib.blake2b(record["source"].encode("utf-8"), digest_size=12).digest()
                if digest in seen:
                    repeated += 1
                    continue
                seen.add(digest)
                errors += record["error"] is not None
                batch.append(record)
            sink.write(batch)
            written += len(batch)
    finally:
        sink.close()
    report = {"job_id": job_id, "records": written, "errors": errors, "shards": len(shards),
              "repeated_sources_dropped": repeated, "out": out}
    expected = job["total"] if job["state"] == "done" else None
    if expected is not None and written + repeated != expected:
        raise BulkLabelError(
            f"merged {written} records from {len(shards)} shards but job {job_id} counted {expected} "
            f"images: some shards are missing from {job['dest']}/{job_id}/ (was it moved or "
            f"cleaned up?); {out} holds what was found")
    print(f"merged {written} records ({errors} errors) from {len(shards)} shards into {out}"
          + (f"; dropped {repeated} repeated sources" if repeated else ""), file=sys.stderr)
    return report
