"""The producer-worker contract: the chunk message and the shard/summary names (no Redis)."""

from __future__ import annotations

import pytest

from bulklabel.chunks import (
    SUCCESS,
    VERSION,
    ChunkMessage,
    MessageError,
    is_shard,
    shard_key,
    shard_prefix,
    success_key,
)


def fields(**changes):
    base = {"version": VERSION, "job_id": "nightly-1", "chunk": 42,
            "sources": ["/data/a.jpg", "s3://bucket/b.png"], "dest": "s3://out/labels"}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def test_round_trip():
    message = ChunkMessage("nightly-1", 42, ("/data/a.jpg", "s3://bucket/b.png"), "s3://out/labels")
    assert message.version == VERSION == 1
    assert message.to_json() == fields()
    assert ChunkMessage.from_json(message.to_json()) == message
    again = ChunkMessage.from_json(fields(chunk=0, sources=[]))
    assert (again.chunk, again.sources, again.to_json()) == (0, (), fields(chunk=0, sources=[]))


def test_refuses_a_message_without_version():
    with pytest.raises(MessageError) as info:
        ChunkMessage.from_json(fields(version=...))
    assert str(info.value) == (
        "chunk message from an older producer (it has no version field); this worker speaks version 1: "
        "run the same bulklabel version on producers and workers")


@pytest.mark.parametrize("version", [2, 0, "1"])
def test_refuses_another_version(version):
    with pytest.raises(MessageError) as info:
        ChunkMessage.from_json(fields(version=version))
    assert str(info.value) == (
        f"chunk message from a producer speaking version {version!r}; this worker speaks version 1: "
        "run the same bulklabel version on producers and workers")


def test_refuses_unknown_fields():
    with pytest.raises(MessageError, match=r"^chunk message with unknown fields \['model', 'priority'\]$"):
        ChunkMessage.from_json(fields(priority=1, model="x"))


@pytest.mark.parametrize("job_id", [
    "../x", "a/b", "", ".hidden", "-x", "x" * 129, "nightly\n", "a\nb", "x ",
])
def test_refuses_bad_job_ids(job_id):
    with pytest.raises(MessageError) as info:
        ChunkMessage.from_json(fields(job_id=job_id))
    assert str(info.value).startswith("a job id is 1-128 letters, digits, '.', '_' or '-', starting with")
    assert str(info.value).endswith(f"(it names a folder under DEST). Received: {job_id!r}")


@pytest.mark.parametrize("job_id", [None, 7, ["j"]])
def test_refuses_a_job_id_that_is_not_a_string(job_id):
    with pytest.raises(MessageError) as info:
        ChunkMessage.from_json(fields(job_id=job_id))
    assert str(info.value) == f"job_id must be a string. Received: {job_id!r}"


@pytest.mark.parametrize("chunk", [-1, True, False, "3", 2.0, None])
def test_refuses_bad_chunk_numbers(chunk):
    with pytest.raises(MessageError) as info:
        ChunkMessage.from_json(fields(chunk=chunk))
    assert str(info.value) == f"chunk number must be a whole number >= 0. Received: {chunk!r}"


@pytest.mark.parametrize("sources", ["/data/a.jpg", ("/data/a.jpg",), None, ["/data/a.jpg", 3], [b"/data/a.jpg"]])
def test_refuses_bad_sources(sources):
    with pytest.raises(MessageError, match=r"^sources must be a list of strings$"):
        ChunkMessage.from_json(fields(sources=sources))


@pytest.mark.parametrize("dest", ["", None, 5])
def test_refuses_bad_dest(dest):
    with pytest.raises(MessageError) as info:
        ChunkMessage.from_json(fields(dest=dest))
    assert str(info.value) == f"dest must be a non-empty string. Received: {dest!r}"


def test_message_error_is_a_value_error():
    assert issubclass(MessageError, ValueError)


def test_shard_and_success_keys():
    assert shard_key("nightly-1", 42) == "nightly-1/part-000042.jsonl"
    assert shard_key("j", 0) == "j/part-000000.jsonl"
    assert shard_key("j", 1234567) == "j/part-1234567.jsonl"
    assert shard_key("j", 7).startswith(shard_prefix("j")) and shard_prefix("j") == "j/part-"
    assert ChunkMessage.from_json(fields()).shard_key == "nightly-1/part-000042.jsonl"
    assert success_key("nightly-1") == "nightly-1/_SUCCESS" and SUCCESS == "_SUCCESS"


@pytest.mark.parametrize("key, expected", [
    ("j/part-000042.jsonl", True),
    ("prefix/j/part-000000.jsonl", True),
    ("part-000001.jsonl", True),
    ("j/_SUCCESS", False),
    ("j/part-000042.jsonl.tmp", False),
    ("j/part-000042.csv", False),
    ("part-dir/j.jsonl", False),
    ("j/xpart-000001.jsonl", False),
    ("j/partition-1.jsonl", False),
])
def test_is_shard(key, expected):
    assert is_shard(key) is expected
