"""Model metadata: what a saved model needs to be served with no extra flags.

A bulklabel model carries a small JSON document::

    {"format": "bulklabel-model/1", "name": "flowers", "class_names": [...],
     "preprocess": "tf", "image_size": [299, 299], "resize": "bilinear"}

Where it lives depends on the model format:

* ``.keras`` archive: an extra member ``bulklabel.json`` inside the zip;
* legacy ``.h5``: the root attribute ``bulklabel`` inside the file;
* SavedModel directory: ``<dir>/bulklabel.json``;
* any format: a sidecar file ``<model path>.bulklabel.json`` beside it.

The first one found wins, in that order.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

from bulklabel.errors import ModelError

FORMAT = "bulklabel-model/1"
MEMBER = "bulklabel.json"
H5_ATTR = "bulklabel"


def sidecar_path(path: str) -> str:
    return os.fspath(path).rstrip("/\\") + ".bulklabel.json"


def read_metadata(path: str) -> dict[str, Any] | None:
    text = _embedded(path)
    if text is None and os.path.isfile(sidecar_path(path)):
        with open(sidecar_path(path), encoding="utf-8") as f:
            text = f.read()
    if text is None:
        return None
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise ModelError(f"the bulklabel metadata stored with {path!r} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(
            f"the bulklabel metadata stored with {path!r} has an unknown format "
            f"(expected {FORMAT!r}); was it written by a newer bulklabel?"
        )
    return meta


def _embedded(path: str) -> str | None:
    if os.path.isdir(path):
        member = os.path.join(path, MEMBER)
        if os.path.isfile(member):
            with open(member, encoding="utf-8") as f:
                return f.read()
        return None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if MEMBER in zf.namelist():
                return zf.read(MEMBER).decode("utf-8")
        return None
    if path.lower().endswith((".h5", ".hdf5")):
        import h5py

        with h5py.File(path, "r") as f:
            value = f.attrs.get(H5_ATTR)
        if value is None:
            return None
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    return None


def write_metadata(path: str, meta: dict[str, Any], sidecar: bool = False) -> None:
    """Store ``meta`` inside the model at ``path`` (and beside it when ``sidecar``)."""
    meta = {"format": FORMAT, **meta}
    text = json.dumps(meta, indent=2, ensure_ascii=False)
    if os.path.isdir(path):
        with open(os.path.join(path, MEMBER), "w", encoding="utf-8") as f:
            f.write(text)
    elif zipfile.is_zipfile(path):
        _replace_zip_member(path, MEMBER, text.encode("utf-8"))
    elif path.lower().endswith((".h5", ".hdf5")):
        import h5py

        with h5py.File(path, "a") as f:
            f.attrs[H5_ATTR] = text
    else:
        sidecar = True
    if sidecar:
        with open(sidecar_path(path), "w", encoding="utf-8") as f:
            f.write(text)


def _replace_zip_member(path: str, member: str, data: bytes) -> None:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    if member not in names:
        with zipfile.ZipFile(path, "a") as zf:
            zf.writestr(member, data)
        return
    tmp = path + ".tmp"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename != member:
                dst.writestr(info, src.read(info.filename))
        dst.writestr(member, data)
    os.replace(tmp, path)
