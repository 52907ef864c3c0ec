"""Sources: folders, files, globs, @lists and s3:// turned into a lazy stream of locations."""

from __future__ import annotations

import inspect
import itertools
import os
import signal
import tracemalloc
from pathlib import Path

import pytest

from bulklabel import globs, sources
from bulklabel.errors import SourceError
from bulklabel.sources import check_sources, iter_sources, walk_images

IMAGE_NAMES = ["a.JPG", "b.Jpeg", "c.PNG", "d.gif", "e.bmp", "f.tif", "g.tiff", "h.webp"]


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def collect(*specs: str, **kwargs) -> list[str]:
    return list(iter_sources(list(specs), **kwargs))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ with images at several depths, non-images, dot-files and a dot-folder."""
    root = tmp_path / "root"
    for i, name in enumerate(IMAGE_NAMES):
        sub = root if i % 2 == 0 else root / "sub" / ("deep" if i % 4 == 3 else "")
        touch(sub / name)
    touch(root / "notes.txt")
    touch(root / "sub" / "meta.json")
    touch(root / "README")
    touch(root / ".hidden.jpg")
    touch(root / ".git" / "inside.jpg")
    touch(root / "sub" / ".cache" / "thumb.png")
    return root


def expected_images(root: Path) -> set[str]:
    return {
        str(p)
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in sources.IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


# --- folders -------------------------------------------------------------------------


def test_folder_yields_only_images_case_insensitive(tree: Path) -> None:
    found = collect(str(tree))
    assert sorted(os.path.basename(p) for p in found) == sorted(IMAGE_NAMES)
    assert set(found) == expected_images(tree)
    assert len(found) == len(set(found)) == 8


def test_folder_ignores_non_images_and_dot_entries(tree: Path) -> None:
    names = {os.path.basename(p) for p in collect(str(tree))}
    for ignored in ("notes.txt", "meta.json", "README", ".hidden.jpg", "inside.jpg", "thumb.png"):
        assert ignored not in names


def test_folder_paths_are_absolute_even_from_relative_spec(tree: Path, monkeypatch) -> None:
    monkeypatch.chdir(tree.parent)
    found = collect("root")
    assert found and all(os.path.isabs(p) for p in found)
    assert set(found) == expected_images(tree)


@pytest.mark.parametrize("ext", sorted(sources.IMAGE_EXTENSIONS))
def test_has_image_extension_all_cases(ext: str) -> None:
    assert sources.has_image_extension("x" + ext)
    assert sources.has_image_extension("x" + ext.upper())
    assert not sources.has_image_extension("x" + ext + ".txt")


@pytest.mark.parametrize("name", ["x.txt", "x.json", "x", "jpg", "x.jpg.bak", "x.heic"])
def test_has_image_extension_rejects(name: str) -> None:
    assert not sources.has_image_extension(name)


def test_symlink_loop_does_not_hang(tmp_path: Path) -> None:
    root = tmp_path / "loopy"
    touch(root / "one.jpg")
    touch(root / "sub" / "two.png")
    os.symlink(root, root / "sub" / "back")  # sub/back -> root: a cycle
    os.symlink(".", root / "self")  # root/self -> root
    # Bounded: a walker that followed the loop would yield the same images again and again.
    found = list(itertools.islice(iter_sources([str(root)]), 100))
    assert sorted(found) == sorted([str(root / "one.jpg"), str(root / "sub" / "two.png")])


def test_unlistable_folder_is_a_source_error(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "r"
    root.mkdir()

    def refuse(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(sources.os, "scandir", refuse)
    with pytest.raises(SourceError, match="cannot list folder"):
        list(walk_images(str(root)))


# --- explicit files, odd names --------------------------------------------------------


def test_explicit_files_yielded_whatever_the_extension(tree: Path) -> None:
    specs = [str(tree / "notes.txt"), str(tree / "README"), str(tree / ".hidden.jpg")]
    assert collect(*specs) == specs


def test_explicit_relative_file_becomes_absolute(tree: Path, monkeypatch) -> None:
    monkeypatch.chdir(tree)
    assert collect("notes.txt", "sub/meta.json") == [
        str(tree / "notes.txt"),
        str(tree / "sub" / "meta.json"),
    ]


def test_missing_explicit_file_is_yielded_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert collect("nope.jpg") == [str(tmp_path / "nope.jpg")]


def test_names_with_spaces_and_non_ascii(tmp_path: Path) -> None:
    root = tmp_path / "dossier été"
    names = ["with space.jpg", "ünïcødé.PNG", "照片 01.jpeg", "emoji 🐱.webp", "comma,quote'\".gif"]
    for n in names:
        touch(root / "sous dossier" / n)
    found = collect(str(root))
    assert sorted(found) == sorted(str(root / "sous dossier" / n) for n in names)
    # and each one named explicitly, and through a glob
    for n in names:
        assert collect(str(root / "sous dossier" / n)) == [str(root / "sous dossier" / n)]
    assert sorted(collect(str(root / "*" / "*"))) == sorted(found)


def test_order_of_specs_is_kept(tree: Path) -> None:
    a, b = str(tree / "notes.txt"), str(tree / "a.JPG")
    assert collect(b, a) == [b, a]
    assert collect(a, b) == [a, b]


# --- globs ----------------------------------------------------------------------------


def test_glob_non_recursive(tree: Path) -> None:
    found = collect(str(tree / "*.*"))
    # top-level images only: notes.txt filtered out, dot-files not matched by '*'
    assert sorted(found) == sorted(str(tree / n) for n in ("a.JPG", "c.PNG", "e.bmp", "g.tiff"))


def test_glob_recursive_double_star(tree: Path) -> None:
    found = collect(str(tree / "**" / "*"))
    assert sorted(found) == sorted(expected_images(tree))


def test_glob_recursive_extension_filter(tree: Path) -> None:
    found = collect(str(tree / "**" / "*.PNG"))
    assert found == [str(tree / "c.PNG")]  # glob itself is case-sensitive on Linux


def test_glob_double_star_alone_yields_each_image_once(tree: Path) -> None:
    found = collect(str(tree / "**"))
    assert len(found) == len(set(found))
    assert set(found) == expected_images(tree)


def test_glob_matching_folders_walks_them(tree: Path) -> None:
    found = collect(str(tree / "su?"))
    assert set(found) == {p for p in expected_images(tree) if "/sub/" in p}
    assert len(found) == len(set(found))


def test_glob_relative_results_are_absolute(tree: Path, monkeypatch) -> None:
    monkeypatch.chdir(tree)
    found = collect("**/*.gif")
    assert found == [str(tree / "sub" / "deep" / "d.gif")]


def test_existing_name_with_glob_chars_is_a_file(tmp_path: Path) -> None:
    weird = touch(tmp_path / "photo[1].txt")
    assert not sources.is_glob(str(weird))
    assert collect(str(weird)) == [str(weird)]


# --- @lists ---------------------------------------------------------------------------


def test_list_file(tree: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "list.txt").write_text(
        "\n".join([
            "# a comment",
            "",
            "root/a.JPG",  # relative to the current directory, not to the list's folder
            "   ",
            "  # indented comment",
            "root/notes.txt",  # named explicitly: yielded though not an image
            "missing/ghost.jpg",  # missing: still yielded, absolute
            "  root/sub  ",  # a folder: expanded (and stripped)
            str(tree / "*.bmp"),  # a glob
            "",
        ]),
        encoding="utf-8",
    )
    found = collect("@lists/list.txt")
    sub = sorted(p for p in expected_images(tree) if "/sub/" in p)
    missing = str(tmp_path / "missing" / "ghost.jpg")
    assert found[:3] == [str(tree / "a.JPG"), str(tree / "notes.txt"), missing]
    assert sorted(found[3:-1]) == sub
    assert found[-1] == str(tree / "e.bmp")
    assert all(os.path.isabs(p) for p in found)
    assert not any("#" in p for p in found)


def test_list_file_non_ascii_and_spaces(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    img = touch(tmp_path / "mes photos" / "été 2024.jpg")
    (tmp_path / "l.txt").write_text("mes photos/été 2024.jpg\n", encoding="utf-8")
    assert collect("@l.txt") == [str(img)]


def test_list_cannot_name_another_list(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "l.txt").write_text("@other.txt\n", encoding="utf-8")
    with pytest.raises(SourceError, match="cannot name another list"):
        collect("@l.txt")


def test_list_with_s3_entries_delegates(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "l.txt").write_text("s3://bucket/prefix/\n", encoding="utf-8")
    calls = []

    def lister(uri):
        calls.append(uri)
        yield "s3://bucket/prefix/x.jpg"

    assert collect("@l.txt", s3_lister=lister) == ["s3://bucket/prefix/x.jpg"]
    assert calls == ["s3://bucket/prefix/"]


# --- s3 -------------------------------------------------------------------------------


def test_s3_without_lister_raises() -> None:
    with pytest.raises(SourceError, match="S3 sources are not supported"):
        collect("s3://bucket/photos/")
    with pytest.raises(SourceError, match="s3://bucket/x.jpg"):
        collect("s3://bucket/x.jpg")


def test_s3_prefix_delegates_to_lister() -> None:
    calls = []

    def lister(uri):
        calls.append(uri)
        return iter([uri + "a.jpg", uri + "b/c.png"])

    assert collect("s3://bucket/photos/", s3_lister=lister) == [
        "s3://bucket/photos/a.jpg",
        "s3://bucket/photos/b/c.png",
    ]
    assert calls == ["s3://bucket/photos/"]


def test_s3_explicit_object_yielded_without_listing() -> None:
    def lister(uri):
        raise AssertionError("should not list an explicitly named object")

    assert collect("s3://bucket/one.JPG", s3_lister=lister) == ["s3://bucket/one.JPG"]


# --- check_sources --------------------------------------------------------------------


def test_check_sources_accepts_valid(tree: Path, tmp_path: Path) -> None:
    lst = tmp_path / "l.txt"
    lst.write_text("whatever\n", encoding="utf-8")
    glob_spec = str(tree / "**" / "*.gif")
    check_sources([str(tree), str(tree / "notes.txt"), glob_spec, "@" + str(lst), "s3://b/p"])


def test_check_sources_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="source not found") as exc:
        check_sources([str(tmp_path / "nope.jpg")])
    assert "nope.jpg" in str(exc.value)


def test_check_sources_glob_matching_nothing(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="matches no file"):
        check_sources([str(tmp_path / "**" / "*.jpg")])


def test_check_sources_missing_list(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="list file not found") as exc:
        check_sources(["@" + str(tmp_path / "absent.txt")])
    assert "absent.txt" in str(exc.value)


def test_check_sources_missing_list_relative(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here.txt").write_text("x\n")
    check_sources(["@here.txt"])
    with pytest.raises(SourceError):
        check_sources(["@there.txt"])


@pytest.mark.parametrize("empty", [[], (), iter([])])
def test_check_sources_empty(empty) -> None:
    with pytest.raises(SourceError, match="no SOURCE given"):
        check_sources(empty)


def test_check_sources_stops_at_first_bad_one(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="gone"):
        check_sources([str(tree), str(tmp_path / "gone")])


# --- laziness and memory --------------------------------------------------------------

N_DIRS, PER_DIR = 4, 5_000


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("big")
    for d in range(N_DIRS):
        folder = root / f"d{d}"
        folder.mkdir()
        base = str(folder) + os.sep
        for i in range(PER_DIR):
            os.close(os.open(f"{base}img_{i:05d}.jpg", os.O_CREAT | os.O_WRONLY, 0o644))
    return root


def test_iter_sources_is_a_generator(big_tree: Path) -> None:
    assert inspect.isgenerator(iter_sources([str(big_tree)]))
    assert inspect.isgenerator(walk_images(str(big_tree)))


def test_first_item_without_listing_everything(big_tree: Path, monkeypatch) -> None:
    real_scandir = os.scandir
    scanned: list[str] = []
    pulled = [0]

    class CountingIterator:
        def __init__(self, inner):
            self._inner = inner

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._inner.close()

        def __iter__(self):
            return self

        def __next__(self):
            entry = next(self._inner)
            pulled[0] += 1
            return entry

    def spy(path="."):
        scanned.append(os.fspath(path))
        return CountingIterator(real_scandir(path))

    monkeypatch.setattr(sources.os, "scandir", spy)
    it = iter_sources([str(big_tree)])
    assert scanned == []  # nothing happens before the first item is asked for
    first = next(it)
    assert first.startswith(str(big_tree)) and first.endswith(".jpg")
    assert len(scanned) == 2  # the root, then the first sub-folder only
    assert pulled[0] < N_DIRS + 100  # the sub-folders of root and a handful of entries
    it.close()


def test_memory_stays_flat(big_tree: Path) -> None:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        n = 0
        for _ in iter_sources([str(big_tree)]):
            n += 1
        _, lazy_peak = tracemalloc.get_traced_memory()

        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        everything = list(iter_sources([str(big_tree)]))
        _, list_peak = tracemalloc.get_traced_memory()
        list_peak -= base
    finally:
        tracemalloc.stop()
    assert n == len(everything) == N_DIRS * PER_DIR
    assert lazy_peak < 5 * 2**20
    assert lazy_peak * 5 < list_peak, (lazy_peak, list_peak)


# --- symlink loops under ** -------------------------------------------------------------


@pytest.fixture
def loopy(tmp_path: Path) -> tuple[Path, list[str]]:
    """root/ with four images, a link back up (sub/up -> ..), a link to itself (self -> .)
    and a cycle of two (x/to_y -> ../y, y/to_x -> ../x)."""
    root = tmp_path / "root"
    images = [touch(root / "top.png"), touch(root / "sub" / "s.png"), touch(root / "x" / "x.png"),
              touch(root / "y" / "y.png")]
    os.symlink("..", root / "sub" / "up")
    os.symlink(".", root / "self")
    os.symlink(os.path.join("..", "y"), root / "x" / "to_y")
    os.symlink(os.path.join("..", "x"), root / "y" / "to_x")
    return root, sorted(str(p) for p in images)


def listed_quickly(spec: str, seconds: float = 2.0, most: int = 1000) -> list[str]:
    """At most ``most`` locations of ``spec``, or TimeoutError after ``seconds``: following
    symlink loops, glob.iglob yields an image tens of thousands of times (or, under ``**/*``,
    goes round for hours)."""
    def stop(signum, frame):
        raise TimeoutError(f"listing {spec!r} took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return list(itertools.islice(iter_sources([spec]), most))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("pattern", ["**/*.png", "**/*", "**", "*", "**/*.p?g", "*/../**/*.png"])
def test_glob_double_star_visits_a_symlink_loop_once(loopy, pattern: str) -> None:
    root, images = loopy
    found = listed_quickly(f"{root}/{pattern}")
    assert len(found) == len(images), found
    assert sorted(os.path.realpath(p) for p in found) == images
    assert all(p.startswith(str(root) + os.sep) for p in found)


def test_glob_below_the_first_level_skips_links_back_up(loopy) -> None:
    root, images = loopy
    found = listed_quickly(f"{root}/*/**/*.png")
    assert len(found) == 3
    assert sorted(os.path.realpath(p) for p in found) == [p for p in images if not p.endswith("top.png")]


def test_glob_through_a_named_symlink_still_works(loopy) -> None:
    root, images = loopy
    # Named literally, a link is followed: only links the glob itself would go round are cut.
    found = listed_quickly(f"{root}/self/**/*.png")
    assert len(found) == 4 and all(p.startswith(f"{root}/self/") for p in found)
    assert sorted(os.path.realpath(p) for p in found) == images


def test_glob_double_star_loop_in_a_big_tree_is_fast(tmp_path: Path) -> None:
    root = tmp_path / "r"
    for i in range(20):
        touch(root / f"d{i}" / f"img{i}.png")
        os.symlink(str(root), root / f"d{i}" / "home")  # every folder links back to the top
    found = listed_quickly(f"{root}/**/*.png", most=10_000)
    assert sorted(found) == sorted(str(root / f"d{i}" / f"img{i}.png") for i in range(20))
    check_sources([f"{root}/**/*.png"])


def test_iglob_matches_the_standard_glob_without_loops(tree: Path, monkeypatch) -> None:
    import glob

    monkeypatch.chdir(tree.parent)
    for pattern in ["root/**/*", "root/*/", "root/**/*.PNG", "root/s?b/*", "root/[sx]*/**/*.gif",
                    "root/**/.*", "root/.git/*", "**/*.jpg", "root/*/deep", "root/**/", "nothing/*"]:
        expected = [p.rstrip("/") for p in glob.glob(pattern, recursive=True)]
        got = list(globs.iglob(pattern))
        if pattern.endswith("**/"):  # a final ** gives the folder itself, walked by the caller
            assert got == ["root"]
        else:
            assert sorted(got) == sorted(expected), pattern


# --- names that are not valid UTF-8 ---------------------------------------------------


@pytest.fixture
def mixed(tmp_path: Path) -> tuple[Path, bytes]:
    """mixed/ holding good.jpg, caf\\xe9.jpg and a folder named b"dossier \\xff" with inner.png."""
    root = tmp_path / "mixed"
    touch(root / "good.jpg")
    base = os.fsencode(root)
    assert base.decode("ascii") == str(root)  # the expected URIs below need no escape for it
    with open(base + b"/caf\xe9.jpg", "wb"):
        pass
    os.mkdir(base + b"/dossier \xff")
    with open(base + b"/dossier \xff/inner.png", "wb"):
        pass
    return root, base


def uris(root: Path) -> tuple[str, str]:
    return f"file://{root}/caf%E9.jpg", f"file://{root}/dossier%20%FF/inner.png"


def assert_text(locations: list[str]) -> None:
    for location in locations:
        location.encode("utf-8")  # strict: a lone surrogate would raise


def test_folder_walk_writes_non_utf8_names_as_file_uris(mixed) -> None:
    root, base = mixed
    found = collect(str(root))
    assert_text(found)
    assert sorted(found) == sorted([str(root / "good.jpg"), *uris(root)])


def test_non_utf8_names_round_trip_to_their_bytes(mixed) -> None:
    from bulklabel.names import local_path

    root, base = mixed
    paths = sorted(local_path(p) for p in collect(str(root)) if p.startswith("file:"))
    assert paths == [base + b"/caf\xe9.jpg", base + b"/dossier \xff/inner.png"]


def test_explicit_glob_and_bad_folder_with_non_utf8_names(mixed) -> None:
    root, base = mixed
    bad_file, bad_inner = uris(root)
    assert collect(os.fsdecode(base + b"/caf\xe9.jpg")) == [bad_file]  # as argv gives it
    assert collect(os.fsdecode(base + b"/dossier \xff")) == [bad_inner]
    assert sorted(collect(f"{root}/*.jpg")) == sorted([str(root / "good.jpg"), bad_file])
    assert collect(f"{root}/**/*.png") == [bad_inner]
    check_sources([os.fsdecode(base + b"/caf\xe9.jpg"), f"{root}/**/*.png"])


def test_file_uris_are_sources(mixed) -> None:
    root, base = mixed
    bad_file, bad_inner = uris(root)
    assert collect(bad_file) == [bad_file]
    assert collect(f"file://{root}/dossier%20%ff") == [bad_inner]  # a folder is walked
    assert collect(f"file://localhost{root}/good.jpg", f"file:{root}/good.jpg") == [str(root / "good.jpg")] * 2
    assert sorted(collect(f"file://{root}")) == sorted([str(root / "good.jpg"), bad_file, bad_inner])
    assert collect(f"file://{root}/ca*.jpg") == [f"{root}/ca*.jpg"]  # never a glob: a missing file
    check_sources([bad_file, f"file://{root}/dossier%20%FF"])
    with pytest.raises(SourceError, match="source not found"):
        check_sources([f"file://{root}/nope.jpg"])
    with pytest.raises(SourceError, match="another host"):
        check_sources([f"file://elsewhere{root}/good.jpg"])


def test_list_file_with_non_utf8_paths(mixed, tmp_path: Path, monkeypatch) -> None:
    root, base = mixed
    bad_file, bad_inner = uris(root)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "l.txt").write_bytes(b"\n".join([
        b"\xef\xbb\xbf# a byte order mark, then a comment",
        base + b"/caf\xe9.jpg",                       # raw bytes, absolute
        b"mixed/caf\xe9.jpg\r",                       # raw bytes, relative, CRLF
        b"  mixed/dossier \xff  ",                    # a folder, walked
        b"mixed/gh\xf4st.jpg",                        # missing: still yielded, as its URI
        bad_file.encode(),                            # a file:// URI
        b"mixed/good.jpg",
        b"",
    ]))
    found = collect("@l.txt")
    assert_text(found)
    assert found == [bad_file, bad_file, bad_inner, f"file://{root}/gh%F4st.jpg", bad_file, str(root / "good.jpg")]


def test_list_file_s3_uri_must_be_utf8(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "l.txt").write_bytes(b"s3://bucket/caf\xe9.jpg\n")
    with pytest.raises(SourceError, match="line 1 .*not valid UTF-8"):
        collect("@l.txt", s3_lister=lambda uri: iter([]))
    with pytest.raises(SourceError, match="not valid UTF-8|must be valid UTF-8"):
        check_sources([os.fsdecode(b"s3://bucket/caf\xe9.jpg")])


def test_chunk_messages_carry_non_utf8_names(mixed) -> None:
    import json

    from bulklabel.chunks import ChunkMessage

    root, base = mixed
    message = ChunkMessage("job1", 0, tuple(collect(str(root))), "/tmp/dest")
    wire = json.dumps(message.to_json(), ensure_ascii=False).encode("utf-8")  # strict
    assert ChunkMessage.from_json(json.loads(wire)).sources == message.sources
