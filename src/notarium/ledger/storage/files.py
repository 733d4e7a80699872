"""Local chunk files: the embedded storage backend (docs/design/durability.md).

Layout under ``DIR/ledger``: ``ledger_<a>-<b>.committed`` (complete, immutable, ends on a
signature) and at most one ``ledger_<a>`` being written (its 8-byte header is 0). Writes are
appended with ``os.write``; :meth:`ChunkFiles.sync` makes them durable; a chunk is completed by
writing its positions table, then its header, ``fsync``, an atomic rename, and an ``fsync`` of
the directory.

This module moves bytes and knows the file layout; it does not judge them. Recovery decisions
(where a valid prefix ends) are the engine's, made with the verification core.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from notarium.durable import fsync_dir
from notarium.errors import ServiceError
from notarium.ledger.encoding import chunk_positions_table
from notarium.verify.entry import CHUNK_HEADER_SIZE, ChunkName

_MAX_OPEN_READERS = 32


@dataclass
class Chunk:
    start: int
    end: int | None  # None while being written
    path: Path


class ChunkFiles:
    """The chunk files of one ledger directory."""

    def __init__(self, directory: Path, *, fsync: bool = True) -> None:
        self.directory = directory
        self.fsync = fsync
        directory.mkdir(parents=True, exist_ok=True)
        self.chunks: list[Chunk] = []
        self._fd: int | None = None  # the chunk being written
        self._size = 0
        self._offsets: list[int] = []
        self._readers: OrderedDict[Path, int] = OrderedDict()
        self._lock = threading.RLock()  # readers (any thread) vs. the writer renaming chunks
        self._scan()

    # --- discovery ---

    def _scan(self) -> None:
        found: list[tuple[ChunkName, Path]] = []
        for path in self.directory.iterdir():
            name = ChunkName.parse(path.name)
            if name is None:
                continue
            if name.end is not None and not name.committed:
                raise ServiceError(f"{path} is a complete but uncommitted chunk; notarium never writes these")
            found.append((name, path))
        found.sort(key=lambda item: item[0].start)
        expected = None
        for i, (name, path) in enumerate(found):
            if expected is not None and name.start != expected:
                raise ServiceError(
                    f"ledger chunks are not contiguous at {path.name} (expected a chunk starting at {expected}); "
                    "run `notarium audit` on this directory"
                )
            if name.end is None and i != len(found) - 1:
                raise ServiceError(f"{path.name} is unfinished but is not the last chunk")
            self.chunks.append(Chunk(name.start, name.end, path))
            expected = (name.end or 0) + 1

    @property
    def current(self) -> Chunk | None:
        """The chunk being written, if any."""
        return self.chunks[-1] if self.chunks and self.chunks[-1].end is None else None

    def committed_end(self) -> int:
        """Last seqno of the last complete chunk (0 if none)."""
        for c in reversed(self.chunks):
            if c.end is not None:
                return c.end
        return 0

    # --- the chunk being written ---

    def open_current(self, valid_length: int, offsets: list[int]) -> None:
        """Reopen the unfinished chunk for appending, cutting it to ``valid_length`` bytes.

        Also undoes an interrupted completion (a positions table written but no rename).
        """
        cur = self.current
        if cur is None:
            raise ValueError("no unfinished chunk to reopen")
        fd = os.open(cur.path, os.O_RDWR)
        os.ftruncate(fd, valid_length)
        os.pwrite(fd, bytes(CHUNK_HEADER_SIZE), 0)
        if self.fsync:
            os.fsync(fd)
        os.lseek(fd, valid_length, os.SEEK_SET)
        self._fd, self._size, self._offsets = fd, valid_length, list(offsets)

    def drop_current(self) -> None:
        """Delete an unfinished chunk that holds no valid entry."""
        with self._lock:
            cur = self.current
            if cur is None:
                return
            self._close_writer()
            cur.path.unlink()
            self.chunks.pop()
            self._sync_dir()

    def append(self, first_seqno: int, entries: list[bytes]) -> list[tuple[int, int]]:
        """Append entries (seqnos ``first_seqno``…); return ``(chunk_start, offset)`` of each."""
        with self._lock:
            if self._fd is None:
                path = self.directory / f"ledger_{first_seqno}"
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, bytes(CHUNK_HEADER_SIZE))
                self.chunks.append(Chunk(first_seqno, None, path))
                self._fd, self._size, self._offsets = fd, CHUNK_HEADER_SIZE, []
                self._sync_dir()
            start = self.chunks[-1].start
            locations = []
            off = self._size
            for e in entries:
                locations.append((start, off))
                self._offsets.append(off)
                off += len(e)
            data = b"".join(entries)
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            self._size = off
            return locations

    @property
    def current_size(self) -> int:
        return self._size if self._fd is not None else 0

    def sync(self) -> None:
        """Make everything appended so far durable."""
        if self._fd is not None and self.fsync:
            os.fsync(self._fd)

    def complete_current(self, last_seqno: int) -> None:
        """Finish the chunk being written: positions table, header, fsync, rename to ``.committed``."""
        with self._lock:
            cur = self.current
            if cur is None or self._fd is None:
                return
            if len(self._offsets) != last_seqno - cur.start + 1:
                raise ValueError("chunk entry count does not match its seqno range")
            table = chunk_positions_table(self._offsets)
            os.write(self._fd, table)
            os.pwrite(self._fd, struct.pack("<Q", self._size), 0)
            if self.fsync:
                os.fsync(self._fd)
            self._close_writer()
            final = self.directory / str(ChunkName(cur.start, last_seqno, committed=True))
            os.rename(cur.path, final)
            self._sync_dir()
            self._forget_reader(cur.path)
            cur.end, cur.path = last_seqno, final

    def _close_writer(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._size = 0
            self._offsets = []

    def _sync_dir(self) -> None:
        if self.fsync:
            fsync_dir(self.directory)

    # --- reading ---

    def chunk_for(self, seqno: int) -> Chunk:
        lo, hi = 0, len(self.chunks)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.chunks[mid].start <= seqno:
                lo = mid + 1
            else:
                hi = mid
        if lo == 0:
            raise KeyError(seqno)
        return self.chunks[lo - 1]

    def path_of(self, chunk_start: int) -> Path:
        return self.chunk_for(chunk_start).path

    def read(self, chunk_start: int, offset: int, size: int) -> bytes:
        with self._lock:
            path = self.path_of(chunk_start)
            fd = self._readers.get(path)
            if fd is None:
                fd = os.open(path, os.O_RDONLY)
                self._readers[path] = fd
                if len(self._readers) > _MAX_OPEN_READERS:
                    _p, old = self._readers.popitem(last=False)
                    os.close(old)
            else:
                self._readers.move_to_end(path)
            data = os.pread(fd, size, offset)
            if len(data) != size:
                raise ServiceError(f"short read from {path.name} at offset {offset}")
            return data

    def _forget_reader(self, path: Path) -> None:
        fd = self._readers.pop(path, None)
        if fd is not None:
            os.close(fd)

    def total_bytes(self) -> int:
        with self._lock:
            done = sum(c.path.stat().st_size for c in self.chunks if c.end is not None)
            return done + self.current_size

    def iter_files(self, from_seqno: int = 1) -> Iterator[tuple[Chunk, bytes]]:
        """Yield ``(chunk, bytes)`` of every chunk that may hold seqnos ≥ ``from_seqno``."""
        for c in list(self.chunks):
            if c.end is not None and c.end < from_seqno:
                continue
            yield c, c.path.read_bytes()

    def close(self) -> None:
        self._close_writer()
        for fd in self._readers.values():
            os.close(fd)
        self._readers.clear()
