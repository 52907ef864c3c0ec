"""Content fingerprints: what says that an image is the one already labeled.

An incremental job (``submit --incremental``) skips a source labeled before by the same
model into the same DEST only if its fingerprint is unchanged:

- a local file: ``<size>:<mtime in ns>`` (``os.stat``, following symlinks);
- an S3 object: ``<ETag>:<size>``, taken from the listing itself (no request per object).

A fingerprint that cannot be known (a missing file, an S3 object named one by one) is
``None``: such a source is never skipped. Fingerprints travel with the chunk message and
are written into each record of the shard (``fingerprint``), where the index reads them.
"""

from __future__ import annotations

import os
import stat


def local(path: str) -> str | None:
    """The fingerprint of a local regular file, or None when it cannot be read."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def s3(etag: str | None, size: int | None) -> str | None:
    """The fingerprint of an S3 object from its listing entry (ETag without its quotes)."""
    if not etag or size is None:
        return None
    return f"{etag.strip(chr(34))}:{int(size)}"
