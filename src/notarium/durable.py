"""Small, durable file operations (docs/design/durability.md)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from notarium.errors import ServiceError


def lock_exclusive(path: Path, busy: str) -> int:
    """Take an exclusive lock on ``path`` (created if missing) for as long as the returned file
    descriptor stays open; ``ServiceError(busy)`` if another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ServiceError(busy) from None
    return fd


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries (created, renamed, removed files) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` (refusing to overwrite) and write ``data`` durably."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Atomically and durably replace ``path``: temp file, fsync, rename, fsync of the directory."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    write_new(tmp, data, mode)
    os.rename(tmp, path)
    fsync_dir(path.parent)
