"""Atomic, durable file writes: a temporary file beside the target, fsynced, then renamed over it.

Every file the harness writes that a later run trusts (checkpoints, cache entries, manifests,
reports) goes through here, so a crash, a kill or a full disk leaves either the old file or
the new one, never a torn one, and no temporary debris. The fsync before the rename keeps a
power loss from leaving a renamed but empty file; the fsync of the folder makes the rename last.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path` for any writer; on success it replaces `path`.

    `suffix` ends the temporary name (some writers pick the format from it, e.g. ".png").
    If the block raises, the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data is on disk before the name points at it
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@contextmanager
def building_folder(dest: str | os.PathLike, prefix: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside `dest` to build in; on success it replaces `dest`
    (`replace_folder`), world-readable like any cache folder; if the block raises it is removed and
    `dest` is untouched. `prefix` names the temporary folder (default `.<dest name>.tmp-`), so a
    later run can recognise and sweep what a killed one left."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix or f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        replace_folder(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful swap


def replace_folder(built: Path, dest: Path) -> None:
    """Put a fully built folder in place of `dest` (rename-based: a reader sees the old or the new one).

    The old folder is moved aside first and removed after; `built` must sit beside `dest` (same filesystem).
    """
    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    if dest.exists():
        os.replace(dest, old)
    os.replace(built, dest)
    _fsync_folder(dest.parent)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable; best effort (some platforms and filesystems refuse it)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
