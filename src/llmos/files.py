"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every writer goes through a temp file in the target's own folder (same file system, so the
final ``os.replace`` is an atomic rename) and removes it when the write fails:

- :func:`atomic_write` for bytes or text already in memory;
- :func:`atomic_write_json` for a JSON document (UTF-8, indented, trailing newline);
- :func:`atomic_path`, a context manager yielding a temp path, for callers that write a file
  by name themselves (``np.save``, ``fig.savefig``, ``tokenizer.save``); the temp name keeps
  the target's suffix, because those writers pick a format or append one from it;
- :func:`atomic_directory` for a whole directory (a checkpoint) filled by a callback.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temp_sibling(path: Path) -> Path:
    """A fresh hidden name beside ``path`` with the same suffix (``.name.tmp-<pid>-<hex>.png``);
    unique per process and call, so concurrent writers of one target never share a temp."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path to write; on a clean exit it replaces ``path``, on an error it is
    removed and ``path`` is left as it was. The parent folder is created if needed.

    Example::

        with atomic_path(out_png) as tmp:
            fig.savefig(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone after a rename; removed after a failure


def atomic_write(path: str | Path, data: bytes | str, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text is encoded with ``encoding``) to ``path`` atomically."""
    raw = data.encode(encoding) if isinstance(data, str) else data
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(raw)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented UTF-8 JSON (non-ASCII kept as is) to ``path`` atomically."""
    return atomic_write(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def atomic_directory(target: str | Path, fill: Callable[[Path], None]) -> Path:
    """Create ``target`` by filling a temp directory and renaming it into place.

    An existing ``target`` is replaced: it is moved aside first and removed only once the new
    directory is in place. Files are fsynced before the rename, so a crash right after it does
    not leave empty files under the final name.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        fill(tmp)
        _fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".old-{target.name}-{os.getpid()}"
        os.replace(target, old)
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
