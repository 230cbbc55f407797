"""A re-run lists the sources in pieces spread over the workers: put back together, the pieces must list exactly
what one walk lists (same files, same order, each real file once), whatever links and overlapping sources do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
from medtl.ingest.discover import walk_parts, walk_sources
from medtl.ingest.incremental import iter_listed, list_parts, merged_listing

PSEUDO = Pseudonymizer(DEVELOPMENT_KEY, key_id="development")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """An archive with nested folders, files beside folders, and links of every kind; `elsewhere` lies outside."""
    src = tmp_path / "src"
    for folder, names in {
        "a/s1": ["1.dcm", "2.dcm"],
        "a/s2": ["1.dcm"],
        "b/p/q/s3": ["1.dcm", "2.dcm", "3.dcm"],
        "b": ["b.dcm"],
        "z": ["target.dcm"],
        "": ["top.txt"],
    }.items():
        (src / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            (src / folder / name).write_bytes(name.encode() * 3)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "out.dcm").write_bytes(b"x")
    (src / "links").mkdir()
    os.symlink(src / "z" / "target.dcm", src / "links" / "inside.dcm")  # walked before its target
    os.symlink(src / "z" / "target.dcm", src / "links" / "inside_again.dcm")
    os.symlink(elsewhere / "out.dcm", src / "links" / "outside.dcm")
    os.symlink(tmp_path / "missing.dcm", src / "links" / "dangling.dcm")
    os.symlink(elsewhere, src / "linked_out")
    os.symlink(src / "a", src / "linked_in")
    return tmp_path


def _one_walk(sources: list[Path]) -> list[tuple]:
    return [tuple(item) for item in iter_listed(walk_sources(sources), PSEUDO)]


def _in_pieces(sources: list[Path], pieces: int, per_job: int) -> list[tuple]:
    parts = walk_parts(sources, pieces=pieces)
    jobs = [parts[i : i + per_job] for i in range(0, len(parts), per_job)]
    return merged_listing(sources, [list_parts(job, PSEUDO) for job in jobs])


@pytest.mark.parametrize(
    "layout",
    [
        ["src"],
        ["src", "src/a"],  # a source inside another: its files once, where the first walk met them
        ["src/b", "src/b"],  # the same source twice
        ["src/top.txt", "src"],  # a file named as a source, then its folder
        ["elsewhere", "src"],  # the outside link's target is a source of its own
        ["src/links/inside.dcm", "src/z"],  # a linked file named as a source, then its target's folder
    ],
)
def test_pieces_put_back_together_list_what_one_walk_lists(tree, layout):
    sources = [tree / name for name in layout]
    expected = _one_walk(sources)
    assert len(expected) > 0
    for pieces, per_job in ((1, 1), (3, 1), (50, 1), (50, 2), (50, 1000)):
        assert _in_pieces(sources, pieces, per_job) == expected, (pieces, per_job)


def test_an_archive_is_cut_into_pieces_that_follow_the_walk_order(tree):
    sources = [tree / "src"]
    parts = walk_parts(sources, pieces=6)
    assert len(parts) > 6 and [part.kind for part in parts].count("own") >= 2  # split at two levels at least
    assert [part.kind for part in walk_parts(sources)] == ["tree"]  # unsplit when one piece is asked for
    listed = _one_walk(sources)
    # every file once; the link to a file inside the source stands for it (walked first), its twin and the target
    # are left out; links out of the source and broken ones are kept, to be recorded as skipped
    relatives = [item[2] for item in listed]
    assert len(relatives) == len(set(relatives))
    assert "links/inside.dcm" in relatives and "z/target.dcm" not in relatives
    assert "links/inside_again.dcm" not in relatives
    assert {"links/outside.dcm", "links/dangling.dcm", "linked_out"} <= set(relatives)
    assert not any(relative.startswith("linked_in") for relative in relatives)


@pytest.mark.parametrize("named", ["x.dcm", "./x.dcm", "sub/y.dcm"])
def test_a_file_named_by_a_relative_path_keeps_its_name_as_its_relative_path(tmp_path, monkeypatch, named):
    (tmp_path / "sub").mkdir()
    (tmp_path / "x.dcm").write_bytes(b"x")
    (tmp_path / "sub" / "y.dcm").write_bytes(b"y")
    monkeypatch.chdir(tmp_path)
    [(index, path, relative, base)] = walk_sources([Path(named)])
    assert (index, relative) == (0, Path(named).name)
    assert os.path.samefile(path, tmp_path / named) and os.path.samefile(Path(base) / relative, tmp_path / named)
    assert _in_pieces([Path(named)], 4, 1) == _one_walk([Path(named)])


def test_a_missing_source_stops_before_anything_is_walked(tree):
    from medtl.errors import IngestError

    with pytest.raises(IngestError, match="source #2"):
        walk_parts([tree / "src", tree / "nowhere"], pieces=8)
