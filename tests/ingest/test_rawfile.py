"""medtl.io.rawfile: whole and partial reads with few system calls, and links refused by the open itself."""

from __future__ import annotations

import os

import pytest

from medtl.io.rawfile import IsLink, file_size, open_file, read_head, read_rest


def _read(path, head: int | None = None) -> bytes:
    fd = open_file(path)
    try:
        size = file_size(fd)
        return read_head(fd, head, size) if head is not None else read_rest(fd, size)
    finally:
        os.close(fd)


@pytest.mark.parametrize("length", [0, 1, 100, 65_536, 65_537, 300_000])
def test_whole_and_head_reads_give_the_files_bytes(tmp_path, length):
    data = os.urandom(length)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert _read(path) == data
    assert _read(path, head=65_536) == data[:65_536]


def test_a_file_that_grew_after_its_size_was_taken_is_still_read_whole(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"a" * 1000)
    fd = open_file(path)
    try:
        size = file_size(fd)
        with open(path, "ab") as more:  # another writer appends between the size and the read
            more.write(b"b" * 200_000)
        assert read_rest(fd, size) == b"a" * 1000 + b"b" * 200_000
    finally:
        os.close(fd)


def test_a_link_is_refused_when_links_are_not_followed_and_read_when_they_are(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"content")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(IsLink):
        open_file(link, follow_links=False)
    assert _read(link) == b"content"
    fd = open_file(target, follow_links=False)  # a plain file opens either way
    os.close(fd)
    with pytest.raises(FileNotFoundError):
        open_file(tmp_path / "missing", follow_links=False)
