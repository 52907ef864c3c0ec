"""Write reviewed images as a dataset that ``bulklabel train`` takes as it is.

* ``link``: ``DATA/<class>/<name>`` symbolic links to the local images (nothing copied);
* ``copy``: ``DATA/<class>/<name>`` copies, read from local files or ``s3://``;
* ``list``: ``DATA/lists/<class>.txt``, one location per line (for S3-hosted archives:
  nothing is downloaded, training reads the images where they are).

Class names become folder/file names through ``bulklabel.classes.to_path_name`` (which
``train`` decodes). File names keep the image's own name plus a short hash of its location,
so two images called ``IMG_0001.jpg`` in different folders stay two files. DATA must be new
or empty: a stale image from an earlier import would otherwise train under an old label.
"""

from __future__ import annotations

import hashlib
import os
import shutil

from ..classes import to_path_name
from ..errors import ConfigError, ImageError
from ..names import file_uri, local_str
from ..sources import IMAGE_EXTENSIONS

MODES = ("link", "copy", "list")


def _file_name(source: str) -> str:
    tail = source.rstrip("/").rsplit("/", 1)[-1] or "image"
    stem, ext = os.path.splitext(tail)
    if ext.lower() not in IMAGE_EXTENSIONS:
        stem, ext = tail, ".jpg"
    digest = hashlib.blake2b(source.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80].lstrip(".") or "image"
    return f"{safe}-{digest}{ext.lower()}"


class DatasetWriter:
    def __init__(self, root: str, mode: str):
        if mode not in MODES:
            raise ConfigError(f"the dataset mode must be one of {', '.join(MODES)}. Received: {mode!r}")
        self.root = os.path.abspath(os.path.expanduser(root))
        self.mode = mode
        if os.path.exists(self.root) and (not os.path.isdir(self.root) or os.listdir(self.root)):
            raise ConfigError(f"--out {root} exists and is not an empty folder: give a new folder (an earlier "
                              "import's images would mix with this one's)")
        os.makedirs(self.root, exist_ok=True)
        self.counts: dict[str, int] = {}
        self.missing: list[tuple[str, str]] = []
        self._lists: dict[str, list[str]] = {}
        self._reader = None

    def add(self, source: str, label: str) -> bool:
        """Put ``source`` under class ``label``; False (and noted in ``missing``) if it cannot be had."""
        folder = to_path_name(label)
        try:
            if self.mode == "list":
                location = source if "://" in source else os.path.abspath(source)
                if location != location.strip() or any(c in location for c in "\r\n"):
                    location = file_uri(location)  # a list line keeps such a name only as a URI
                self._lists.setdefault(folder, []).append(location)
            else:
                target = os.path.join(self.root, folder, _file_name(source))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if self.mode == "link":
                    self._link(source, target)
                else:
                    self._copy(source, target)
        except (OSError, ImageError, ValueError) as exc:
            self.missing.append((source, getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)))
            return False
        self.counts[label] = self.counts.get(label, 0) + 1
        return True

    def _link(self, source: str, target: str) -> None:
        if source.startswith("s3://") or ("://" in source and not source.startswith("file:")):
            raise ConfigError(f"{source} is not a local file, so it cannot be linked: use --list (train reads "
                              "it where it is) or --copy")
        path = os.path.abspath(local_str(source))
        if not os.path.isfile(path):
            raise FileNotFoundError(2, "no such file", path)
        os.symlink(path, target)

    def _copy(self, source: str, target: str) -> None:
        if "://" not in source:
            shutil.copyfile(local_str(source), target)
            return
        if self._reader is None:
            from ..storage import open_reader

            self._reader = open_reader()
        data = self._reader.read(source)
        with open(target, "wb") as f:
            f.write(data)

    def close(self) -> None:
        if self._lists:
            folder = os.path.join(self.root, "lists")
            os.makedirs(folder, exist_ok=True)
            for name, locations in sorted(self._lists.items()):
                with open(os.path.join(folder, f"{name}.txt"), "w", encoding="utf-8",
                          errors="surrogateescape") as f:
                    f.write("".join(f"{loc}\n" for loc in locations))
