"""Property tests for the names that reach the file system or S3: job ids, storage keys, chunk
messages and ``--allow-dest``. Whatever text arrives (from a flag, a list file or a queue
message nobody vetted), it is either refused with a ``ConfigError``/``MessageError`` or it
stays inside its root."""

from __future__ import annotations

import os
import string

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bulklabel.chunks import ChunkMessage, MessageError, shard_key, success_key
from bulklabel.errors import ConfigError
from bulklabel.jobs import check_job_id
from bulklabel.names import is_text
from bulklabel.storage import safe_key
from bulklabel.storage.local import LocalStorage
from bulklabel.storage.s3 import S3Storage
from worker.serving.guard import destination_refusal

ID_CHARS = string.ascii_letters + string.digits + "._-"
# Text biased towards what breaks paths: separators, dots, NUL, non-ASCII look-alikes.
NASTY = st.lists(st.sampled_from(list(ID_CHARS + "/\\\x00 \n.:~$*") + ["..", "\u2215", "é", "\udcff"]),
                 max_size=40).map("".join)
ANY_TEXT = st.one_of(st.text(max_size=200), NASTY)
SEGMENTS = st.lists(st.sampled_from(["a", "b", "..", ".", "", "c.d", "..."]), min_size=1, max_size=6)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _expected_job_id(text: str) -> bool:
    return (1 <= len(text) <= 128 and all(c in ID_CHARS for c in text)
            and text[0] in string.ascii_letters + string.digits)


@FAST
@given(ANY_TEXT)
def test_a_job_id_is_accepted_exactly_when_it_is_a_plain_folder_name(text):
    try:
        accepted = check_job_id(text) == text
    except ConfigError as exc:
        assert "Received:" in str(exc)
        accepted = False
    assert accepted == _expected_job_id(text)
    if accepted:
        assert text not in (".", "..") and os.path.basename(text) == text
        for key in (shard_key(text, 0), success_key(text)):
            assert safe_key(key) == key and key.startswith(text + "/")


@FAST
@given(ANY_TEXT, st.integers(min_value=0, max_value=10**9))
def test_keys_built_from_a_job_id_stay_under_the_local_root(tmp_path_factory, text, chunk):
    assume(_expected_job_id(text))
    root = tmp_path_factory.getbasetemp() / "keys-root"
    storage = LocalStorage(root)
    for key in (shard_key(text, chunk), success_key(text)):
        path = os.path.realpath(storage.url(key))
        assert path.startswith(os.path.realpath(root) + os.sep)


@FAST
@given(st.one_of(ANY_TEXT, SEGMENTS.map("/".join), SEGMENTS.map("\\".join)))
def test_a_storage_key_is_refused_or_stays_inside_its_root(tmp_path_factory, key):
    try:
        norm = safe_key(key)
    except ConfigError:
        return
    parts = norm.split("/")
    assert not norm.startswith("/") and "\x00" not in norm
    assert all(p not in ("", ".", "..") for p in parts)
    root = tmp_path_factory.getbasetemp() / "safe-key-root"
    try:
        path = LocalStorage(root).url(norm)
    except ConfigError:
        return  # the resolved-path check refused it (a symlink out of the root)
    assert os.path.normpath(path).startswith(str(root) + os.sep)
    assert S3Storage("s3://bucket/base").url(norm).startswith("s3://bucket/base/")


VALID = st.builds(
    ChunkMessage,
    job_id=st.text(alphabet=ID_CHARS, min_size=1, max_size=20).filter(lambda t: t[0].isalnum()),
    chunk=st.integers(min_value=0, max_value=10**6),
    sources=st.lists(st.text(max_size=30).filter(is_text), max_size=5).map(tuple),
    dest=st.text(min_size=1, max_size=30).filter(is_text),
)


@FAST
@given(VALID)
def test_a_chunk_message_round_trips(message):
    assert ChunkMessage.from_json(message.to_json()) == message


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                    max_size=3),
                       max_leaves=8)


@FAST
@given(VALID, st.sampled_from(["version", "job_id", "chunk", "sources", "dest", "extra"]), JSONISH)
def test_a_tampered_chunk_message_is_refused_cleanly_or_still_valid(message, field, value):
    fields = message.to_json()
    fields[field] = value
    try:
        parsed = ChunkMessage.from_json(fields)
    except MessageError:
        return
    # what passes is a message any worker can act on safely
    check_job_id(parsed.job_id)
    assert isinstance(parsed.chunk, int) and parsed.chunk >= 0
    assert all(isinstance(s, str) and is_text(s) for s in parsed.sources) and is_text(parsed.dest)
    assert safe_key(parsed.shard_key) == parsed.shard_key


@FAST
@given(SEGMENTS)
def test_allow_dest_never_admits_a_path_outside_the_prefix(tmp_path_factory, segments):
    base = tmp_path_factory.getbasetemp() / "allow"
    allowed = base / "labels"
    allowed.mkdir(parents=True, exist_ok=True)
    dest = os.path.join(str(allowed), *segments)
    refusal = destination_refusal(dest, (os.path.realpath(allowed),))
    inside = os.path.realpath(dest) == os.path.realpath(allowed) or os.path.realpath(dest).startswith(
        os.path.realpath(allowed) + os.sep)
    assert (refusal is None) == inside


@FAST
@given(SEGMENTS, st.sampled_from(["s3://bucket/labels", "s3://bucket"]))
def test_allow_dest_s3_matches_whole_key_segments(segments, prefix):
    dest = "s3://bucket/" + "/".join(segments)
    refusal = destination_refusal(dest, (prefix,))
    target = dest.rstrip("/")
    assert (refusal is None) == (target == prefix or target.startswith(prefix + "/"))
    assert destination_refusal("s3://bucket-2/labels", (prefix,)) is not None
    assert destination_refusal("s3://bucket/labelsX", ("s3://bucket/labels",)) is not None
