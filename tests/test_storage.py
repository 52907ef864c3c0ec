"""Storage: one contract for LocalStorage, MemoryStorage and S3Storage, plus the local specifics."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import pytest

from bulklabel.errors import BulkLabelError, ConfigError, ImageError
from bulklabel.storage import local as local_mod
from bulklabel.storage import open_reader, open_storage, safe_key
from bulklabel.storage.local import LocalReader, LocalStorage
from bulklabel.storage.memory import MemoryStorage

BAD_KEYS = [
    "../x", "a/../../b", "/etc/passwd", "a//b", "", ".", "..", "a/./b", "a/", "..\\x", "a\x00b",
]


@pytest.fixture(params=["local", "memory", "s3"])
def storage(request, tmp_path: Path):
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    if request.param == "s3":
        s3 = request.getfixturevalue("s3_server")
        bucket = s3.new_bucket()
        return open_storage(f"s3://{bucket}/some/prefix")
    return MemoryStorage()


# --- the shared contract ------------------------------------------------------------


def test_write_read_exists(storage) -> None:
    assert not storage.exists("results/part-0000.jsonl")
    storage.write("results/part-0000.jsonl", b'{"a":1}\n')
    assert storage.exists("results/part-0000.jsonl")
    data = storage.read("results/part-0000.jsonl")
    assert type(data) is bytes and data == b'{"a":1}\n'


def test_bytes_like_and_empty(storage) -> None:
    storage.write("ba", bytearray(b"\x00\x01\xff"))
    storage.write("mv", memoryview(b"view"))
    storage.write("empty", b"")
    assert storage.read("ba") == b"\x00\x01\xff"
    assert storage.read("mv") == b"view"
    assert storage.read("empty") == b"" and storage.exists("empty")


def test_read_missing_raises_file_not_found(storage) -> None:
    with pytest.raises(FileNotFoundError):
        storage.read("nope")
    with pytest.raises(FileNotFoundError):
        storage.read("no/such/key")


def test_overwrite_replaces(storage) -> None:
    storage.write("k", b"a much longer first version")
    storage.write("k", b"short")
    assert storage.read("k") == b"short"
    assert list(storage.list()) == ["k"]


def test_folder_like_key_is_not_an_object(storage) -> None:
    storage.write("a/x", b"1")
    assert not storage.exists("a")
    assert storage.exists("a/x")


KEYS = [
    "shards/part-0001.jsonl", "b", "a/x", "ab/y", "a-b", "a/c/d",
    "shards/part-0000.jsonl", "Z", "a.b",
]


def test_list_is_sorted(storage) -> None:
    assert list(storage.list()) == []
    for k in KEYS:
        storage.write(k, k.encode())
    listed = list(storage.list())
    assert listed == sorted(KEYS)
    assert list(storage.list("")) == listed


PREFIXES = [
    "a", "a/", "a/c", "ab", "shards/", "shards/part-", "shards/part-0001", "b", "zz", "q/r/",
]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_list_prefix(storage, prefix: str) -> None:
    for k in KEYS:
        storage.write(k, b"")
    assert list(storage.list(prefix)) == sorted(k for k in KEYS if k.startswith(prefix))


def test_list_is_lazy_iterator(storage) -> None:
    storage.write("k", b"")
    it = storage.list()
    assert iter(it) is it
    assert next(it) == "k"


def test_children_are_immediate_sub_folders(storage) -> None:
    assert list(storage.children()) == []
    for k in KEYS:
        storage.write(k, b"")
    assert list(storage.children()) == ["a", "ab", "shards"]
    assert list(storage.children("")) == ["a", "ab", "shards"]
    assert list(storage.children("a")) == ["c"] == list(storage.children("a/"))
    assert list(storage.children("a/c")) == [] == list(storage.children("shards"))
    assert list(storage.children("b")) == [] == list(storage.children("no/such"))  # a file, nothing


def test_children_is_lazy_and_paged(storage, monkeypatch) -> None:
    from bulklabel.storage.s3 import S3Storage

    monkeypatch.setattr(S3Storage, "page_size", 3)  # several S3 pages
    for i in range(10):
        storage.write(f"jobs/{i:04d}/x", b"")
        storage.write(f"jobs/{i:04d}/y/z", b"")
    storage.write("jobs/file", b"")
    it = storage.children("jobs")
    assert iter(it) is it and next(it) == "0000"
    assert list(it) == [f"{i:04d}" for i in range(1, 10)]


def test_delete(storage) -> None:
    storage.write("a/x", b"1")
    storage.write("a/y", b"2")
    storage.delete("a/x")
    assert not storage.exists("a/x") and storage.read("a/y") == b"2"
    with pytest.raises(FileNotFoundError):
        storage.read("a/x")
    storage.delete("a/x")  # missing: not an error
    storage.delete("never/was")
    assert list(storage.list()) == ["a/y"]
    storage.write("a/x", b"again")
    assert storage.read("a/x") == b"again"


def test_non_ascii_keys(storage) -> None:
    key = "résultats/été 2024/照片.jsonl"
    storage.write(key, "données".encode())
    assert storage.read(key).decode() == "données"
    assert list(storage.list("résultats/")) == [key]


def test_url(storage) -> None:
    storage.write("a/b.jsonl", b"")
    u1, u2 = storage.url("a/b.jsonl"), storage.url("a/c.jsonl")
    assert u1 != u2
    assert u1.endswith("a/b.jsonl")


@pytest.mark.parametrize("key", BAD_KEYS)
def test_unsafe_keys_refused(storage, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        storage.write(key, b"x")
    assert repr(key) in str(exc.value)
    with pytest.raises(ConfigError):
        storage.read(key)
    with pytest.raises(ConfigError):
        storage.exists(key)
    with pytest.raises(ConfigError):
        storage.url(key)
    with pytest.raises(ConfigError):
        storage.delete(key)
    assert list(storage.list()) == []


@pytest.mark.parametrize("prefix", ["../x", "a/../../b", "/etc", "a//b", ".", "..", "a\x00b"])
def test_unsafe_children_refused(storage, prefix: str) -> None:
    with pytest.raises(ConfigError):
        list(storage.children(prefix))


def test_unsafe_write_leaves_nothing_outside(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "root")
    for key in ("../escaped", "a/../../escaped2"):
        with pytest.raises(ConfigError):
            store.write(key, b"x")
    assert sorted(os.listdir(tmp_path)) == []  # not even the root was created


@pytest.mark.parametrize(
    "key,expected",
    [("a", "a"), ("a/b.c", "a/b.c"), ("a\\b", "a/b"), ("..a/b..", "..a/b.."), (".tmp", ".tmp")],
)
def test_safe_key_accepts(key: str, expected: str) -> None:
    assert safe_key(key) == expected


@pytest.mark.parametrize("key", BAD_KEYS)
def test_safe_key_refuses(key: str) -> None:
    with pytest.raises(ConfigError, match="refusing a storage key"):
        safe_key(key)


# --- LocalStorage specifics -----------------------------------------------------------


def test_local_layout_and_url(tmp_path: Path) -> None:
    root = tmp_path / "lazy"
    store = LocalStorage(root)
    assert not root.exists()  # created on first write
    store.write("a/b/c.bin", b"abc")
    assert (root / "a" / "b" / "c.bin").read_bytes() == b"abc"
    assert store.url("a/b/c.bin") == str(root / "a" / "b" / "c.bin")
    assert store.root == str(root) and os.path.isabs(store.root)


def test_local_relative_root_is_made_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = LocalStorage("out")
    monkeypatch.chdir("/")
    store.write("k", b"v")
    assert (tmp_path / "out" / "k").read_bytes() == b"v"


def test_local_write_is_atomic(tmp_path: Path, monkeypatch) -> None:
    store = LocalStorage(tmp_path)
    final = tmp_path / "dir" / "obj.bin"
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        src, dst = os.fspath(src), os.fspath(dst)
        seen.append(
            {
                "dst": dst,
                "tmp_name": os.path.basename(src),
                "same_folder": os.path.dirname(src) == os.path.dirname(dst),
                "tmp_data": Path(src).read_bytes(),
                "final_before": Path(dst).read_bytes() if os.path.exists(dst) else None,
                "listed": list(store.list()),
            }
        )
        real_replace(src, dst)

    monkeypatch.setattr(local_mod.os, "replace", spy)
    store.write("dir/obj.bin", b"x" * 100_000)
    store.write("dir/obj.bin", b"second")
    assert len(seen) == 2
    first, second = seen
    assert first["dst"] == str(final) and first["same_folder"]
    assert first["tmp_name"].startswith(".tmp-")
    assert first["tmp_data"] == b"x" * 100_000  # complete before it takes the name
    assert first["final_before"] is None  # nothing under the key name until then
    assert first["listed"] == []  # the temp file is not listed
    assert second["final_before"] == b"x" * 100_000  # the old version stays whole
    assert second["listed"] == ["dir/obj.bin"]
    assert final.read_bytes() == b"second"
    assert os.listdir(final.parent) == ["obj.bin"]  # no temp file left behind


def test_local_failed_write_leaves_no_trace(tmp_path: Path, monkeypatch) -> None:
    store = LocalStorage(tmp_path)
    store.write("k", b"old")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local_mod.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        store.write("k", b"new")
    with pytest.raises(OSError):
        store.write("fresh", b"new")
    assert store.read("k") == b"old"
    assert not store.exists("fresh")
    assert sorted(os.listdir(tmp_path)) == ["k"]


def test_local_children_and_delete_specifics(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "root")
    assert list(store.children()) == []  # no root folder yet
    store.write("job/part-000000.jsonl", b"")
    store.write("other/x", b"")
    (tmp_path / "root" / "empty").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "root" / "linked").symlink_to(tmp_path / "elsewhere")
    assert list(store.children()) == ["empty", "job", "other"]  # empty folders too; no symlinks
    store.delete("job/part-000000.jsonl")
    assert (tmp_path / "root" / "job").is_dir()  # the folder stays: a concurrent write into it goes on
    with pytest.raises(ConfigError):
        store.delete("linked/../../x")


def test_local_temp_files_not_listed(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    store.write("a/real", b"")
    (tmp_path / ".tmp-abc.part").write_bytes(b"half")
    (tmp_path / "a" / ".tmp-def.part").write_bytes(b"half")
    assert list(store.list()) == ["a/real"]
    assert list(store.list("a/")) == ["a/real"]


def test_local_refuses_symlink_escape(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    os.symlink(outside, root / "link")
    os.symlink(outside / "secret", root / "secret-link")
    store = LocalStorage(root)
    with pytest.raises(ConfigError):
        store.write("link/planted", b"x")
    assert not (outside / "planted").exists()
    for key in ("link/secret", "secret-link"):
        with pytest.raises(ConfigError):
            store.read(key)
        with pytest.raises(ConfigError):
            store.exists(key)
    with pytest.raises(ConfigError):
        list(store.list("link/"))


def test_local_symlink_inside_root_is_fine(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    os.symlink(root / "real", root / "alias")
    store = LocalStorage(root)
    store.write("alias/k", b"v")
    assert (root / "real" / "k").read_bytes() == b"v"
    assert store.read("alias/k") == b"v"


def test_symlink_escape_error_is_a_bulklabel_error(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(tmp_path, root / "up")
    with pytest.raises(BulkLabelError, match="up/x"):
        LocalStorage(root).read("up/x")


# --- LocalReader ----------------------------------------------------------------------


def read_error(location) -> ImageError:
    with pytest.raises(ImageError) as exc:
        LocalReader().read(str(location))
    assert exc.value.reason == str(exc.value)
    assert not isinstance(exc.value, BulkLabelError)  # an image error never ends a job
    return exc.value


def test_reader_reads_bytes(tmp_path: Path) -> None:
    p = tmp_path / "img.jpg"
    p.write_bytes(b"\xff\xd8data")
    assert LocalReader().read(str(p)) == b"\xff\xd8data"


def test_reader_missing_file(tmp_path: Path) -> None:
    assert read_error(tmp_path / "missing.jpg").reason == "file not found"


def test_reader_missing_folder(tmp_path: Path) -> None:
    assert read_error(tmp_path / "no" / "such" / "folder" / "x.jpg").reason == "file not found"


def test_reader_folder(tmp_path: Path) -> None:
    assert read_error(tmp_path).reason == "is a folder, not an image file"


def test_reader_permission_denied(tmp_path: Path, monkeypatch) -> None:
    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied", args[0])

    monkeypatch.setattr(local_mod.os, "open", deny)  # as root, chmod cannot deny a read
    err = read_error(tmp_path / "x.jpg")
    monkeypatch.undo()
    assert err.reason == "permission denied"


def test_reader_other_os_error_is_readable(tmp_path: Path) -> None:
    f = tmp_path / "file.jpg"
    f.write_bytes(b"x")
    err = read_error(f / "child.jpg")  # a file used as a folder
    assert err.reason.startswith("cannot read file: ")
    assert "directory" in err.reason.lower()


def _read_in_thread(location: str, **kw) -> ImageError:
    """Read on a thread, so that a read that blocks fails the test instead of hanging it."""
    box: list = []

    def read():
        try:
            LocalReader(**kw).read(location)
        except ImageError as exc:
            box.append(exc)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), f"reading {location} blocked"
    assert box, f"reading {location} did not fail"
    return box[0]


def test_reader_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    assert _read_in_thread(str(fifo)).reason == "not a regular file (a FIFO)"


def test_reader_refuses_devices(tmp_path: Path) -> None:
    assert _read_in_thread("/dev/zero").reason == "not a regular file (a character device)"
    assert _read_in_thread("/dev/null").reason == "not a regular file (a character device)"


def test_reader_refuses_sockets(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "s.jpg"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        assert _read_in_thread(str(path)).reason == "not a regular file (a socket)"


def test_reader_size_cap_is_checked_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    with open(big, "wb") as f:  # a sparse 3 GiB file: reading it would take the memory
        f.truncate(3 * 1024**3)
    err = _read_in_thread(str(big))
    assert err.reason == ("file too large: 3221225472 bytes is over the limit of 268435456 bytes "
                          "(raise it with --max-bytes)")
    small = tmp_path / "small.jpg"
    small.write_bytes(b"x" * 100)
    assert LocalReader(max_bytes=100).read(str(small)) == b"x" * 100
    assert "101" not in _read_in_thread(str(small), max_bytes=99).reason
    assert _read_in_thread(str(small), max_bytes=99).reason.startswith("file too large: 100 bytes")


def test_reader_follows_symlinks_to_regular_files(tmp_path: Path) -> None:
    target = tmp_path / "t.jpg"
    target.write_bytes(b"data")
    (tmp_path / "l.jpg").symlink_to(target)
    assert LocalReader().read(str(tmp_path / "l.jpg")) == b"data"


def test_reader_reads_file_uris_and_names_that_are_not_utf8(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9 #1.jpg"
    with open(raw, "wb") as f:
        f.write(b"latin-1 name")
    (tmp_path / "été.jpg").write_bytes(b"utf-8 name")
    uri = "file://" + str(tmp_path) + "/caf%E9%20%231.jpg"
    assert LocalReader().read(uri) == b"latin-1 name"
    assert LocalReader().read(os.fsdecode(raw)) == b"latin-1 name"  # the raw name, as os.listdir gives it
    assert LocalReader().read(f"file://localhost{tmp_path}/%C3%A9t%C3%A9.jpg") == b"utf-8 name"
    assert open_reader().read(uri) == b"latin-1 name"
    assert open_reader().io_threads_for(uri) == 0
    assert read_error("file://" + str(tmp_path) + "/caf%E9.jpg").reason == "file not found"
    assert "another host" in read_error(f"file://nas{tmp_path}/x.jpg").reason
    assert "NUL" in read_error(f"file://{tmp_path}/a%00.jpg").reason
    assert read_error(f"{tmp_path}/a\x00.jpg").reason == "not a valid file name"


def test_s3_object_size_cap(s3_server) -> None:
    bucket = s3_server.new_bucket()
    s3_server.client().put_object(Bucket=bucket, Key="big.jpg", Body=b"y" * 5000)
    with pytest.raises(ImageError, match="object too large: 5000 bytes is over the limit of 4096"):
        open_reader(max_bytes=4096).read(f"s3://{bucket}/big.jpg")
    assert open_reader(max_bytes=5000).read(f"s3://{bucket}/big.jpg") == b"y" * 5000


# --- open_storage / open_reader -------------------------------------------------------


def test_open_storage_memory_is_shared_by_name() -> None:
    name = f"memory://test-{uuid.uuid4().hex}"
    a = open_storage(name)
    b = open_storage(name)
    assert isinstance(a, MemoryStorage) and a is b
    a.write("k", b"v")
    assert b.read("k") == b"v"
    other = open_storage(name + "-other")
    assert other is not a and not other.exists("k")
    assert a.url("x/y") == name + "/x/y"


@pytest.mark.parametrize("url", ["gs://bucket/x", "http://host/x"])
def test_open_storage_unknown_schemes_refused(url: str) -> None:
    with pytest.raises(ConfigError) as exc:
        open_storage(url)
    assert url in str(exc.value)


def test_open_storage_local(tmp_path: Path) -> None:
    store = open_storage(str(tmp_path / "out"))
    assert isinstance(store, LocalStorage)
    assert store.root == str(tmp_path / "out")


def test_open_reader_dispatches_by_scheme(tmp_path: Path, s3_server) -> None:
    reader = open_reader()
    local = tmp_path / "a.jpg"
    local.write_bytes(b"local bytes")
    bucket = s3_server.new_bucket()
    s3_server.client().put_object(Bucket=bucket, Key="dir/b.jpg", Body=b"remote bytes")
    assert reader.read(str(local)) == b"local bytes"
    assert reader.read(f"s3://{bucket}/dir/b.jpg") == b"remote bytes"
    assert reader.io_threads_for(str(local)) == 0 and reader.io_threads_for(f"s3://{bucket}/x") >= 32
    with pytest.raises(ImageError, match="object not found"):
        reader.read(f"s3://{bucket}/dir/missing.jpg")
    with pytest.raises(ImageError, match="not found"):
        reader.read("s3://no-such-bucket-here/x.jpg")
    with pytest.raises(ImageError, match="file not found"):
        reader.read(str(tmp_path / "missing.jpg"))


def test_s3_listing_is_lazy_and_filters_images(s3_server) -> None:
    from bulklabel.sources import iter_sources
    from bulklabel.storage import s3_lister

    bucket = s3_server.new_bucket()
    client = s3_server.client()
    names = [f"photos/{i:04d}.JPG" for i in range(1100)] + ["photos/notes.txt", "other/x.jpg"]
    for name in names:
        client.put_object(Bucket=bucket, Key=name, Body=b"x")
    found = iter_sources([f"s3://{bucket}/photos/"], s3_lister=s3_lister())
    first = next(found)  # the first page arrives before the listing is complete
    rest = list(found)
    assert first == f"s3://{bucket}/photos/0000.JPG"
    assert len(rest) == 1099 and all(u.endswith(".JPG") for u in rest)
    # An explicit object with an image extension is taken as is.
    assert list(iter_sources([f"s3://{bucket}/other/x.jpg"], s3_lister=s3_lister())) == [
        f"s3://{bucket}/other/x.jpg"]


def test_s3_storage_keys_never_leave_the_prefix(s3_server) -> None:
    bucket = s3_server.new_bucket()
    store = open_storage(f"s3://{bucket}/out")
    for bad in ("../escape.jsonl", "a/../../b", "/abs"):
        with pytest.raises(ConfigError):
            store.write(bad, b"x")
    store.write("job/part-000000.jsonl", b"{}")
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["out/job/part-000000.jsonl"]


def test_s3_connection_pool_matches_the_read_concurrency(s3_server) -> None:
    from bulklabel.storage import s3 as s3_mod

    bucket = s3_server.new_bucket()
    s3_server.client().put_object(Bucket=bucket, Key="a.jpg", Body=b"x")
    reader = open_reader(io_threads=200)
    assert reader.io_threads_for(f"s3://{bucket}/a.jpg") == 200
    assert reader.read(f"s3://{bucket}/a.jpg") == b"x"
    assert s3_mod.client(200).meta.config.max_pool_connections >= 200
    assert open_reader().io_threads_for(f"s3://{bucket}/a.jpg") == s3_mod.DEFAULT_CONCURRENCY >= 100
