"""Ledger export (notarium's own): the completed chunk files, for copying and auditing offline.

``GET /app/ledger/chunks`` lists the completed chunks ``ledger_<first>-<last>.committed`` with their
size and SHA-256; ``GET``/``HEAD /app/ledger/chunks/{name}`` serves one, with single byte ranges
(206, 416) and a strong ``ETag`` (the quoted SHA-256) for ``If-Range``. The live chunk is never
served. Completed chunks are immutable (docs/design/durability.md), so the front reads them from
``DIR/ledger`` directly instead of through the engine link, and may cache their digests. The action
needed is ``chunks/read``, which ``ServerConfig.export_role`` (``--export-role``; Administrator by
default) and the roles above it hold, and any user-defined role given it. See docs/design/export.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import stat
import threading
from collections import OrderedDict
from pathlib import Path

from aiohttp import web

from notarium.auth.rbac import Action
from notarium.server.errors import error_response, not_found
from notarium.server.handlers import TXID_HEADER, context, json_response, requires

# exactly a completed chunk: no leading zeros, no other suffix, nothing that could name another file
CHUNK_NAME = re.compile(r"ledger_([1-9][0-9]{0,19})-([1-9][0-9]{0,19})\.committed")
_RANGE = re.compile(r"bytes=([0-9]{0,20})-([0-9]{0,20})")
BLOCK = 256 << 10  # bytes read and sent at a time
_DIGESTS_MAX = 100_000
log = logging.getLogger("notarium.server")


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/app/ledger/chunks", list_chunks)
    router.add_get("/app/ledger/chunks/{name}", get_chunk)  # and HEAD


class DigestCache:
    """SHA-256 of immutable files, keyed by (name, size, mtime): each file is hashed once."""

    def __init__(self, limit: int = _DIGESTS_MAX) -> None:
        self._known: OrderedDict[tuple[str, int, int], str] = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit
        self.computed = 0  # files hashed so far (for tests and curiosity)

    def digest(self, name: str, fd: int, st: os.stat_result) -> str:
        """The hex SHA-256 of the open file ``fd`` (whose stat is ``st``)."""
        key = (name, st.st_size, st.st_mtime_ns)
        with self._lock:
            known = self._known.get(key)
            if known is not None:
                self._known.move_to_end(key)
                return known
        h = hashlib.sha256()
        offset = 0
        while offset < st.st_size:
            block = os.pread(fd, min(BLOCK * 4, st.st_size - offset), offset)
            if not block:
                break
            h.update(block)
            offset += len(block)
        value = h.hexdigest()
        with self._lock:
            self.computed += 1
            self._known[key] = value
            if len(self._known) > self._limit:
                self._known.popitem(last=False)
        return value


DIGESTS = DigestCache()


def parse_chunk_name(name: str) -> tuple[int, int] | None:
    """``(first, last)`` seqno of a completed chunk's file name; ``None`` for any other name."""
    m = CHUNK_NAME.fullmatch(name)
    if m is None:
        return None
    first, last = int(m.group(1)), int(m.group(2))
    return (first, last) if first <= last else None


def _open_chunk(directory: Path, name: str) -> tuple[int, os.stat_result] | None:
    """An open descriptor and stat of a completed chunk file (a regular file, no symlink), or None."""
    try:
        fd = os.open(directory / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return fd, st


def _listing(directory: Path) -> list[dict[str, object]]:
    found: list[tuple[int, int, str]] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        names = []
    for name in names:
        seqnos = parse_chunk_name(name)
        if seqnos is not None:
            found.append((*seqnos, name))
    found.sort()
    chunks: list[dict[str, object]] = []
    for first, last, name in found:
        opened = _open_chunk(directory, name)
        if opened is None:
            continue
        fd, st = opened
        try:
            digest = DIGESTS.digest(name, fd, st)
        finally:
            os.close(fd)
        chunks.append({"name": name, "firstSeqno": first, "lastSeqno": last, "size": st.st_size, "sha256": digest})
    return chunks


@requires(Action.CHUNKS_READ)
async def list_chunks(request: web.Request) -> web.StreamResponse:
    """The completed chunk files, in seqno order (never the live one)."""
    directory = context(request).ledger.facts.ledger_dir
    chunks = await asyncio.get_running_loop().run_in_executor(None, _listing, directory)
    return json_response({"chunks": chunks})


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The ``(start, end)`` (inclusive) that a ``Range`` header asks of ``size`` bytes.

    ``None``: serve the whole file (no usable range: another unit, several ranges or malformed,
    which RFC 9110 §14.2 lets a server ignore). Raises :class:`RangeNotSatisfiableError` when the range
    is well-formed but lies past the end of the file.
    """
    m = _RANGE.fullmatch(header.strip())
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if first:
        start = int(first)
        if last and int(last) < start:
            return None  # an invalid range-spec
        if start >= size:
            raise RangeNotSatisfiableError
        return start, min(int(last), size - 1) if last else size - 1
    if not last:
        return None
    suffix = int(last)
    if suffix == 0:
        raise RangeNotSatisfiableError
    return max(0, size - suffix), size - 1


class RangeNotSatisfiableError(Exception):
    """The requested byte range starts past the end of the file."""


@requires(Action.CHUNKS_READ)
async def get_chunk(request: web.Request) -> web.StreamResponse:
    """One completed chunk file, whole or a byte range of it."""
    ctx = context(request)
    name = request.match_info["name"]
    loop = asyncio.get_running_loop()
    opened = None
    if parse_chunk_name(name) is not None:
        opened = await loop.run_in_executor(None, _open_chunk, ctx.ledger.facts.ledger_dir, name)
    if opened is None:
        raise not_found(f"No completed ledger chunk named {name[:80]!r}.")
    fd, st = opened
    try:
        size = st.st_size
        etag = '"' + await loop.run_in_executor(None, DIGESTS.digest, name, fd, st) + '"'
        headers = {"ETag": etag, "Accept-Ranges": "bytes", TXID_HEADER: str(ctx.ledger.committed)}
        wanted = None
        range_header = request.headers.get("Range")
        # If-Range: a range only of the representation the client holds (a strong ETag, compared exactly)
        if range_header is not None and request.headers.get("If-Range", etag).strip() == etag:
            try:
                wanted = byte_range(range_header, size)
            except RangeNotSatisfiableError:
                refused = error_response(
                    416, "InvalidRange", f"The range {range_header[:60]!r} is not within the {size} bytes of {name}."
                )
                refused.headers.update({"Content-Range": f"bytes */{size}", **headers})
                return refused
        start, end = wanted if wanted is not None else (0, size - 1)
        response = web.StreamResponse(status=200 if wanted is None else 206, headers=headers)
        if wanted is not None:
            response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        response.content_type = "application/octet-stream"
        response.content_length = end - start + 1
        try:
            await response.prepare(request)
            if request.method != "HEAD":
                await _send(request, response, fd, start, end)
            await response.write_eof()
        except ConnectionResetError:
            log.debug("%s: the client went away during the download of %s", request.path, name)
        return response
    finally:
        os.close(fd)


async def _send(request: web.Request, response: web.StreamResponse, fd: int, start: int, end: int) -> None:
    loop = asyncio.get_running_loop()
    offset = start
    while offset <= end:
        block = await loop.run_in_executor(None, os.pread, fd, min(BLOCK, end + 1 - offset), offset)
        if not block:  # an immutable file cannot shrink; never leave the client waiting for the rest
            log.error("%s became shorter while it was being sent; closing the connection", request.path)
            if request.transport is not None:
                request.transport.close()
            raise ConnectionResetError(request.path)
        await response.write(block)
        offset += len(block)
