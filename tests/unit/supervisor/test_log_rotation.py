"""Logs rotated by size (supervisor/log_rotation.py): a file over the limit is copied to .1
and truncated in place, older copies shift and the oldest goes; a writer that keeps its file
open for appending carries on at the new end and loses nothing."""

from __future__ import annotations

from pathlib import Path

from ragmeshd.supervisor.log_rotation import rotate_folder, rotate_if_large


def test_a_large_log_is_rotated_and_its_writer_carries_on(tmp_path: Path) -> None:
    log = tmp_path / "search-0.log"
    with log.open("ab", buffering=0) as writer:  # as a child holds its log
        writer.write(b"a" * 100 + b"\n")
        assert not rotate_if_large(log, max_bytes=1000, keep=2)
        writer.write(b"b" * 1000 + b"\n")
        assert rotate_if_large(log, max_bytes=1000, keep=2)
        writer.write(b"after rotation\n")
    assert log.read_bytes() == b"after rotation\n"
    assert (tmp_path / "search-0.log.1").read_bytes() == b"a" * 100 + b"\n" + b"b" * 1000 + b"\n"


def test_older_copies_shift_and_only_keep_remain(tmp_path: Path) -> None:
    log = tmp_path / "envoy.log"
    for generation in range(4):
        log.write_bytes(str(generation).encode() * 20)
        rotate_folder(tmp_path, max_bytes=10, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["envoy.log", "envoy.log.1", "envoy.log.2"]
    assert (tmp_path / "envoy.log.1").read_bytes() == b"3" * 20
    assert (tmp_path / "envoy.log.2").read_bytes() == b"2" * 20
    assert log.read_bytes() == b""
