"""Write, then rename: a file a reader can see is always complete. One helper for every results file, record,
table, plot and generated data file (the streaming ListOps writer, which also hashes, has its own)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (a hidden name no ``*.json`` / ``*.png`` glob matches; writers that
    infer a format from the suffix must be told it, e.g. ``savefig(tmp, format="png")``); rename it over
    ``path`` when the block succeeds, remove it when the block raises."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path | str, data: str | bytes) -> None:
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
