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

Whatever the place, the document is size-checked before it is read — the zip member from
its declared size, a file from ``stat``, the HDF5 attribute from its storage size — and
never more than ``MAX_METADATA_BYTES`` + 1 bytes are read, so a small model file cannot
expand into gigabytes (a zip member's header can lie; the bounded read does not).
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from typing import Any

from bulklabel.errors import ModelError

FORMAT = "bulklabel-model/1"
MEMBER = "bulklabel.json"
H5_ATTR = "bulklabel"

# The most bytes a metadata document (or a --labels file) may have. Real ones are a few
# KiB; even 100,000 class names of 100 characters each fit well within it.
MAX_METADATA_BYTES = 16 << 20  # 16 MiB

# Zip compression methods whose reads are bounded: zipfile inflates at most what is asked
# for, but hands a whole compressed block to bzip2/lzma, which can expand it a millionfold.
_BOUNDED_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def sidecar_path(path: str) -> str:
    return os.fspath(path).rstrip("/\\") + ".bulklabel.json"


def read_metadata(path: str) -> dict[str, Any] | None:
    text = _embedded(path)
    if text is None and os.path.isfile(sidecar_path(path)):
        text = _read_file(sidecar_path(path))
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


def too_large(what: str, size: int | None, cap: int = MAX_METADATA_BYTES) -> str:
    """The message for a document over the cap (``size`` None: found out while reading it)."""
    told = f"is {_size(size)}" if size is not None else f"holds more than {_size(cap)}"
    return f"{what} {told}, over the {_size(cap)} limit for model metadata and label files; refusing to read it"


def read_capped(path: str, what: str, error: type[Exception] = ModelError,
                cap: int = MAX_METADATA_BYTES) -> bytes:
    """The bytes of the file ``path``: its size checked first, never more than ``cap`` + 1 read."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > cap:
                raise error(too_large(what, size, cap))
            data = f.read(cap + 1)  # a file that grows, or has no size (a pipe), stops here
    except OSError as exc:
        raise error(f"cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > cap:
        raise error(too_large(what, None, cap))
    return data


def _read_file(path: str) -> str:
    what = f"the metadata file {path!r}"
    return _text(read_capped(path, what), what)


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelError(f"{what} is not UTF-8 text: {exc}") from None


def _embedded(path: str) -> str | None:
    if os.path.isdir(path):
        member = os.path.join(path, MEMBER)
        if os.path.isfile(member):
            return _read_file(member)
        return None
    if zipfile.is_zipfile(path):
        return _zip_member(path)
    if path.lower().endswith((".h5", ".hdf5")):
        return _h5_attribute(path)
    return None


def _zip_member(path: str) -> str | None:
    what = f"the metadata member {MEMBER!r} of {path!r}"
    try:
        with zipfile.ZipFile(path) as zf:
            try:
                info = zf.getinfo(MEMBER)
            except KeyError:
                return None
            if info.file_size > MAX_METADATA_BYTES:
                raise ModelError(too_large(what, info.file_size))
            if info.compress_type not in _BOUNDED_ZIP_METHODS:
                raise ModelError(f"{what} uses zip compression method {info.compress_type}; "
                                 f"bulklabel reads metadata that is stored or deflated")
            with zf.open(info) as member:
                data = member.read(MAX_METADATA_BYTES + 1)  # inflated a bounded piece at a time
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError) as exc:
        raise ModelError(f"cannot read {what}: {exc}") from None
    if len(data) > MAX_METADATA_BYTES:
        raise ModelError(too_large(what, None))
    return _text(data, what)


def _h5_attribute(path: str) -> str | None:
    import h5py

    what = f"the metadata attribute {H5_ATTR!r} of {path!r}"
    with h5py.File(path, "r") as f:
        if H5_ATTR not in f.attrs:
            return None
        attr = f.attrs.get_id(H5_ATTR)  # opened, not read
        if attr.shape not in ((), (1,)) or h5py.check_string_dtype(attr.dtype) is None:
            raise ModelError(f"{what} is not a string (type {attr.dtype}, shape {attr.shape})")
        # A fixed-length string's bytes are its storage; a variable-length one stores a
        # reference to its bytes, which are kept uncompressed in the file (so no bigger
        # than the file) and are measured after the read below.
        if attr.get_storage_size() > MAX_METADATA_BYTES:
            raise ModelError(too_large(what, attr.get_storage_size()))
        value = f.attrs[H5_ATTR]
    if getattr(value, "shape", ()) == (1,):
        value = value[0]
    data = value if isinstance(value, bytes) else str(value).encode("utf-8")
    if len(data) > MAX_METADATA_BYTES:
        raise ModelError(too_large(what, len(data)))
    return _text(data, what)


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB".replace(".0 MiB", " MiB") if n >= 1 << 20 else f"{n:,} bytes"


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
