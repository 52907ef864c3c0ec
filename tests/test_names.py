"""File names that are not valid UTF-8: written as percent-encoded file:// URIs, read back
to the same bytes, classified like any other image, end to end."""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bulklabel import records
from bulklabel.names import as_text, file_uri, is_file_uri, is_text, local_path, local_str, source_text
from bulklabel.sinks import open_sink, read_records

from conftest import CLASSES, color_photo, encoded, run_cli

# --- the escaping ------------------------------------------------------------------------


def test_valid_utf8_paths_are_unchanged() -> None:
    for path in ["/photos/a.jpg", "/dossier été/照片 01.jpeg", "/a%20b/100%.jpg", "/x/file:name.png",
                 "s3://bucket/caf\u00e9.jpg", "file:///already/a%20uri.jpg", "relative/p.png"]:
        assert source_text(path) == path


def test_non_utf8_paths_become_percent_encoded_file_uris() -> None:
    assert source_text(os.fsdecode(b"/photos/caf\xe9.jpg")) == "file:///photos/caf%E9.jpg"
    # Everything outside the unreserved set and "/" is escaped, so the URI is ASCII and unambiguous.
    assert (source_text(os.fsdecode(b"/a b/%/?#/\xc3\xa9\xff~-_.jpg"))
            == "file:///a%20b/%25/%3F%23/%C3%A9%FF~-_.jpg")
    relative = source_text(os.fsdecode(b"rel/\xff.png"))
    assert relative == file_uri(os.path.join(os.fsencode(os.getcwd()), b"rel/\xff.png"))
    assert relative.startswith("file:///") and relative.isascii()


def test_local_path_reads_every_file_uri_form() -> None:
    assert local_path("file:///photos/caf%E9.jpg") == b"/photos/caf\xe9.jpg"
    assert local_path("file:///photos/caf%e9.jpg") == b"/photos/caf\xe9.jpg"
    assert local_path("file://localhost/p/%C3%A9.jpg") == "/p/é.jpg"
    assert local_path("FILE:/p/x y.jpg") == "/p/x y.jpg"
    assert local_path("file:///p/été#1?.jpg") == "/p/été#1?.jpg"  # no query, no fragment
    assert local_path("/plain/path.jpg") == "/plain/path.jpg"
    assert local_str("file:///p/%FF.jpg") == os.fsdecode(b"/p/\xff.jpg")
    assert not is_file_uri("file:relative/x.jpg") and not is_file_uri("/p/file:///x")
    with pytest.raises(ValueError, match="another host"):
        local_path("file://server/share/x.jpg")
    with pytest.raises(ValueError, match="NUL"):
        local_path("file:///p/a%00b.jpg")


def test_odd_strings_still_give_text() -> None:
    assert as_text(os.fsdecode(b"cannot read \xe9")) == "cannot read \\xe9"
    assert is_text(source_text("/p/\ud800.jpg"))  # a surrogate no file name decodes to (from JSON)
    assert source_text(os.fsdecode(b"s3://bucket/caf\xe9.jpg")) == "s3://bucket/caf\\xe9.jpg"


names = st.binary(min_size=1, max_size=40).filter(lambda b: b"\x00" not in b and b"/" not in b)


@given(folders=st.lists(names, max_size=3), name=names)
@example(folders=[], name=b"caf\xe9.jpg")
@example(folders=[b"%E9"], name=b"%")
@example(folders=[b"."], name=b"..")
@example(folders=[b"..", b"\xff"], name=b".")
def test_every_name_round_trips_through_valid_utf8(folders: list[bytes], name: bytes) -> None:
    raw = b"/" + b"/".join([*folders, name])
    path = os.fsdecode(raw)  # as os.listdir and sys.argv give it
    text = source_text(path)
    assert is_text(text) and text.encode("utf-8")
    back = local_path(text)
    assert (back if isinstance(back, bytes) else os.fsencode(back)) == raw
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        assert text.startswith("file:///") and text.isascii()
        assert set(text[len("file://"):]) <= set(string.ascii_letters + string.digits + "-._~/%")
    else:
        assert text == path  # valid UTF-8: exactly as it was


def test_records_are_always_text() -> None:
    bad = os.fsdecode(b"/p/caf\xe9.jpg")
    assert records.prediction(bad, "m@1", [("red", 0.9)])["source"] == "file:///p/caf%E9.jpg"
    failed = records.failure(bad, "m@1", f"cannot read {bad}")
    assert failed["source"] == "file:///p/caf%E9.jpg" and failed["error"] == "cannot read /p/caf\\xe9.jpg"
    json.dumps(failed, ensure_ascii=False).encode("utf-8")


# --- end to end ----------------------------------------------------------------------------


@pytest.fixture
def odd_photos(tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, bytes]]:
    """photos/ with images named in UTF-8 and not (one in a folder whose name is not either).
    Returns (folder, source text -> class, source text -> raw path)."""
    rng = np.random.default_rng(11)
    folder = tmp_path / "photos"
    base = os.fsencode(folder)
    os.makedirs(base + b"/vacances \xe9t\xe9")
    rel = [b"good 0.jpg", b"caf\xe9 1.jpg", b"\xff\xfe 2.png", b"vacances \xe9t\xe9/plage 3.jpg",
           b"\xc3\xa9t\xc3\xa9 4.png", b"mix\xc3\xa9\xe9 5.jpg"]
    truth, raw = {}, {}
    for i, name in enumerate(rel):
        path = base + b"/" + name
        fmt = "PNG" if name.endswith(b".png") else "JPEG"
        with open(path, "wb") as f:
            f.write(encoded(color_photo(CLASSES[i % 3], rng, (60, 80)), fmt))
        text = source_text(os.fsdecode(path))
        truth[text], raw[text] = CLASSES[i % 3], path
    assert sum(s.startswith("file://") for s in truth) == 4  # the fixture is what it says
    return folder, truth, raw


def test_classify_labels_non_utf8_names_to_parquet(color_model, odd_photos, tmp_path):
    folder, truth, raw = odd_photos
    out = tmp_path / "labels.parquet"
    result = run_cli("classify", str(folder), "--model", color_model.keras_path, "--out", str(out))
    assert result.returncode == 0, result.stderr
    got = read_records(out)
    assert len(got) == len(truth)  # one record per image, the good ones' included
    assert {r["source"]: r["label"] for r in got} == truth
    assert all(r["error"] is None for r in got)
    assert f"classified {len(truth)} images (0 errors)" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("ext", ["jsonl", "csv"])
def test_classify_and_resume_with_non_utf8_names(color_model, odd_photos, tmp_path, ext):
    """JSONL and CSV: the images not done yet (two with names that are not UTF-8) are labeled
    and appended in valid UTF-8; the ones already done are skipped, whatever their name."""
    folder, truth, raw = odd_photos
    out = tmp_path / f"labels.{ext}"
    done = [s for s in truth if s.startswith("file://")][:2] + [s for s in truth if not s.startswith("file://")][:1]
    sink = open_sink(out)  # an interrupted job's output: three records with a label no model gives
    sink.write([records.prediction(s, "colors@earlier", [("hand-made", 1.0)]) for s in done])
    sink.close()
    result = run_cli("classify", str(folder), "--model", color_model.keras_path, "--out", str(out), "--resume")
    assert result.returncode == 0, result.stderr
    assert "3 images already had a record" in result.stdout
    assert f"classified {len(truth) - 3} images (0 errors)" in result.stdout
    got = read_records(out)
    assert sorted(r["source"] for r in got) == sorted(truth)  # each image exactly once
    assert all(r["label"] == ("hand-made" if r["source"] in done else truth[r["source"]]) for r in got)
    assert sum(r["source"].startswith("file://") and r["source"] not in done for r in got) == 2
    assert all(r["error"] is None for r in got) and "Traceback" not in result.stderr
    out.read_bytes().decode("utf-8")  # strict: valid UTF-8 throughout


def test_list_file_with_non_utf8_paths(color_model, odd_photos, tmp_path):
    folder, truth, raw = odd_photos
    order = sorted(truth)
    missing = os.fsencode(folder) + b"/absent \xe9.jpg"
    listing = tmp_path / "todo.txt"
    listing.write_bytes(b"# raw bytes, one path a line\n" + b"\r\n".join(raw[s] for s in order) + b"\n"
                        + missing + b"\n")
    out = tmp_path / "l.jsonl"
    result = run_cli("classify", f"@{listing}", "--model", color_model.keras_path, "--out", str(out))
    assert result.returncode == 0, result.stderr
    got = read_records(out)
    assert [r["source"] for r in got] == [*order, f"file://{folder}/absent%20%E9.jpg"]  # a list's order
    assert [r["label"] for r in got[:-1]] == [truth[s] for s in order]
    assert got[-1]["error"] == "file not found" and got[-1]["label"] is None


def test_engine_takes_raw_names_and_file_uris(color_model, odd_photos):
    """What a worker runs on a chunk: the engine reads file:// URIs (and raw names, from any
    other caller) and every record it hands back is valid UTF-8, one per source."""
    from bulklabel.options import EngineOptions
    from bulklabel.storage import open_reader
    from worker.inference.engine import Engine
    from worker.inference.models import load_model

    folder, truth, raw = odd_photos
    engine = Engine(load_model(color_model.keras_path), open_reader(), EngineOptions(batch_size=2))
    sources = [*sorted(truth), *(os.fsdecode(raw[s]) for s in sorted(truth)), f"file://{folder}/gone%E9.jpg"]
    out: list[dict] = []
    engine.run(sources, out.extend)
    assert [r["source"] for r in out] == [*sorted(truth), *sorted(truth), f"file://{folder}/gone%E9.jpg"]
    assert [r["label"] for r in out[:-1]] == [truth[s] for s in sorted(truth)] * 2
    assert out[-1]["error"] == "file not found"
    json.dumps(out, ensure_ascii=False).encode("utf-8")
