"""lra.atomic: a file appears whole or not at all; a failed write leaves neither a half file nor a temporary."""
from __future__ import annotations

import pytest

from lra.atomic import atomic_path, write_atomic


def test_write_atomic_text_and_bytes_replace_whole(tmp_path):
    p = tmp_path / "r.json"
    write_atomic(p, "old")
    write_atomic(p, "new")
    assert p.read_text() == "new"
    write_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["b.bin", "r.json"]


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "table.md"
    p.write_text("complete")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert p.read_text() == "complete" and [x.name for x in tmp_path.iterdir()] == ["table.md"]
