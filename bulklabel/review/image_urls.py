"""How a reviewer's browser reaches each image (``export --image-url``).

* ``s3``: ``s3://`` sources stay ``s3://``; Label Studio presigns them through the project's
  S3 (or MinIO) storage connection.
* ``presign`` / ``presign=SECONDS``: ``s3://`` sources become presigned HTTPS URLs here, valid
  for ``SECONDS`` (default 7 days, the most S3 allows); credentials come from the usual
  ``AWS_*`` settings and never appear in the file beyond the signature.
* ``local-files``: local paths become Label Studio's local file serving URLs,
  ``/data/local-files/?d=<path under the document root>`` (start Label Studio with
  ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and
  ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` = ``--image-root``).
* ``prefix=URL``: local paths become URL + their path under ``--image-root``
  (percent-encoded), for images you serve yourself.
* ``auto`` (the default): ``s3`` for ``s3://`` sources, ``local-files`` for local ones.

A local source outside ``--image-root`` gets no URL (``ImageUrlError``): it is left out and
counted, never exported with a path the server would refuse.
"""

from __future__ import annotations

import os
from urllib.parse import quote

from ..errors import ConfigError
from ..names import local_str

LOCAL_FILES = "/data/local-files/?d="
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
MODES = ("auto", "s3", "presign", "local-files", "prefix=URL")


class ImageUrlError(ValueError):
    """This source has no URL in the chosen mode (the reason is the message)."""


class ImageUrls:
    def __init__(self, spec: str = "auto", root: str = "/"):
        self.spec = spec or "auto"
        self.mode, _, arg = self.spec.partition("=")
        self.root = os.path.abspath(os.path.expanduser(root or "/"))
        self.seconds = MAX_PRESIGN_SECONDS
        self.prefix = ""
        self._client = None
        if self.mode == "presign" and arg:
            try:
                self.seconds = int(arg)
            except ValueError:
                self.seconds = 0
            if not 1 <= self.seconds <= MAX_PRESIGN_SECONDS:
                raise ConfigError(f"--image-url presign=SECONDS: SECONDS must be 1..{MAX_PRESIGN_SECONDS} "
                                  f"(7 days, the S3 limit). Received: {arg!r}")
        elif self.mode == "prefix":
            if not arg:
                raise ConfigError("--image-url prefix=URL needs the URL you serve --image-root at, "
                                  "e.g. prefix=https://images.internal/archive/")
            self.prefix = arg if arg.endswith(("/", "=")) else arg + "/"
        elif self.mode not in ("auto", "s3", "local-files", "presign") or arg:
            raise ConfigError(f"--image-url must be one of {', '.join(MODES)}. Received: {spec!r}")

    def __call__(self, source: str) -> str:
        if source.startswith("s3://"):
            if self.mode == "presign":
                return self._presign(source)
            if self.mode in ("auto", "s3", "prefix"):
                return source
            raise ImageUrlError(f"an s3:// source has no {self.mode} URL (use --image-url s3 or presign)")
        if "://" in source and not source.startswith("file:"):
            return source  # already a URL the browser can open
        if self.mode in ("s3", "presign"):
            raise ImageUrlError("a local file has no S3 URL: use --image-url local-files or prefix=URL")
        relative = self._relative(source)
        if self.mode == "prefix":
            return self.prefix + quote(relative, safe="/")
        return LOCAL_FILES + quote(relative, safe="/")

    def _relative(self, source: str) -> str:
        path = os.path.abspath(local_str(source))
        try:
            inside = os.path.commonpath([path, self.root]) == self.root
        except ValueError:
            inside = False
        if not inside:
            raise ImageUrlError(f"outside --image-root {self.root}")
        return os.path.relpath(path, self.root) if path != self.root else ""

    def _presign(self, source: str) -> str:
        from ..storage.s3 import client, parse_uri

        if self._client is None:
            self._client = client()
        bucket, key = parse_uri(source)
        return self._client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=self.seconds)

    def to_source(self, url: str) -> str | None:
        """The source an image URL of this mode stands for (reading a review export), or None."""
        if url.startswith(("s3://", "file:")) or (url.startswith("/") and not url.startswith("/data/")):
            return url
        from urllib.parse import unquote

        if url.startswith(LOCAL_FILES):
            return os.path.join(self.root, unquote(url[len(LOCAL_FILES):]))
        if self.prefix and url.startswith(self.prefix):
            return os.path.join(self.root, unquote(url[len(self.prefix):]))
        return None
