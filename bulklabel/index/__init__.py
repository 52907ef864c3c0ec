"""The label index: what each model has labeled into a destination, for incremental jobs.

``submit --incremental`` skips every source whose (source, fingerprint) the same model
already labeled into the same DEST. The index lives beside the results, in
``DEST/_index/<model_key>/``: it outlives Redis, every producer host shares it, and it is
derived from the shards, so it can always be rebuilt from them.

- ``digests``: 16-byte digests of (source, fingerprint); ``DigestSet``, sorted runs
- ``segment``: the immutable segment file, checked on reading
- ``layout``: folder and segment names (``model_key``)
- ``compaction``: which segments to merge (size-tiered)
- ``store``: ``LabelIndex`` (load, write_segment, compact) and ``IndexView``
- ``catchup``: index a job from its shards; index every finished job not covered yet
- ``skip``: ``Skipper``, filtering a listing against a view
"""

from .catchup import catch_up, index_job, job_digests, job_folders
from .digests import DIGEST, DigestSet, digest_pairs
from .layout import INDEX_DIR, model_key
from .skip import Skipper
from .store import IndexView, LabelIndex

__all__ = [
    "DIGEST", "INDEX_DIR", "DigestSet", "IndexView", "LabelIndex", "Skipper", "catch_up", "digest_pairs",
    "index_job", "job_digests", "job_folders", "model_key",
]
