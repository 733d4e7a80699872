"""Copy a ledger's history for an offline audit: download its completed chunk files, verifying each.

:func:`export_ledger` lists ``GET /app/ledger/chunks`` and brings ``OUT/ledger/`` up to date:

- a chunk already there under its final name with the listed size and SHA-256 is kept (it was
  verified when it arrived); one that differs stops the export (the ledger's history changed, or
  the copy was damaged: either way a human must look);
- any other chunk is downloaded into ``OUT/ledger/.<name>.partial``, resuming a partial file with
  ``Range: bytes=<have>-`` and ``If-Range: "<sha256>"``, then checked: size, SHA-256, and
  :func:`notarium.verify.chunk.scan_chunk` with the pinned service key (entries parse, seqnos
  follow on, every signature's COSE root signature verifies with the pinned service key and its
  node signature with a node certificate the service endorsed, the chunk ends on a signature,
  and it starts where the previous one ended). Only then is it renamed to its final name;
- ``OUT/service_cert.pem`` is the pinned certificate, never one the server sent.

Nothing under a final name is unverified. A chunk that fails a check is kept as
``.<name>.rejected`` (evidence) and the export raises :class:`ChunkVerificationError`. What the
per-chunk checks cannot see (that each signed Merkle root is the root of all entries before it)
is what ``notarium audit OUT`` checks, from the exported files alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import re
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from notarium.client.chunkcheck import (
    ChunkChecker,
    ChunkVerificationError,
    RemoteChunk,
    digest_and_scan,
    scanned_result,
)
from notarium.client.errors import ApiError, UnreachableError
from notarium.errors import ServiceError, VerificationError
from notarium.verify.chunk import ChunkScan
from notarium.verify.entry import CHUNK_HEADER_SIZE
from notarium.verify.keys import ec_public_key, load_pem_cert, spki_der

__all__ = [
    "CHUNKS_PATH",
    "ChunkVerificationError",
    "ExportEvent",
    "ExportResult",
    "Progress",
    "RemoteChunk",
    "export_ledger",
    "parse_listing",
]

CHUNKS_PATH = "/app/ledger/chunks"
BLOCK = 1 << 20
_CHUNK_NAME = re.compile(r"ledger_([1-9][0-9]{0,19})-([1-9][0-9]{0,19})\.committed")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ExportEvent:
    """Progress of an export, for a progress bar.

    ``kind``: ``"listed"`` (once, ``chunk`` is None), then per chunk ``"skipped"`` (already there),
    or ``"downloading"`` (``chunk_bytes`` resumed from a partial file), ``"progress"`` (after each
    block received) and ``"verified"`` (checked and in place).
    """

    kind: str
    chunk: str | None
    chunk_bytes: int  # bytes of this chunk on disk so far
    chunk_size: int
    done_bytes: int  # bytes of all chunks on disk so far (complete ones and this one)
    total_bytes: int  # bytes of all listed chunks
    chunks: int  # chunks listed


@dataclass(frozen=True, slots=True)
class ExportResult:
    downloaded: int  # chunks downloaded (or completed) and verified by this export
    skipped: int  # chunks already exported, left as they were
    bytes: int  # bytes received from the ledger by this export
    seconds: float
    resumed_bytes: int  # bytes of earlier partial downloads that were reused
    total_bytes: int  # size of all exported chunks
    last_seqno: int  # last seqno of the last exported chunk (0 if none)
    chunks: tuple[str, ...]  # names of the chunks this export downloaded, in order

    @property
    def mb_per_s(self) -> float:
        """Export throughput: bytes received and verified per second, in MB (10^6 bytes)."""
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


Progress = Callable[[ExportEvent], None]
PARALLEL_MIN_BYTES = 16 << 20  # below this, worker start-up costs more than it saves


def export_ledger(
    http: httpx.Client,
    out: Path,
    service_cert_pem: bytes,
    *,
    progress: Progress | None = None,
) -> ExportResult:
    """Bring ``out`` (``out/ledger/`` and ``out/service_cert.pem``) up to date with the ledger.

    ``http`` is configured for the ledger: ``base_url`` its URL, TLS pinned to the service
    certificate, a client certificate of a user allowed to export. Raises
    :class:`ChunkVerificationError` (a :class:`~notarium.errors.VerificationError`) when a chunk
    fails a check, ``VerificationError`` for a malformed listing or a history that changed,
    :class:`~notarium.client.errors.ApiError` when the ledger refuses,
    :class:`~notarium.client.errors.UnreachableError` when it cannot be reached (run again to
    resume), and :class:`~notarium.errors.ServiceError` when ``out`` holds another service's export.
    """
    start = time.perf_counter()
    pinned = load_pem_cert(service_cert_pem, "pinned service certificate")
    key_der = spki_der(ec_public_key(pinned, "pinned service certificate"))
    folder = out / "ledger"
    folder.mkdir(parents=True, exist_ok=True)
    _write_service_cert(out, pinned)

    chunks = _list(http)
    _check_history(folder, chunks)
    total = sum(c.size for c in chunks)
    done = 0

    def event(kind: str, chunk: RemoteChunk | None, have: int = 0) -> None:
        if progress is not None:
            size = chunk.size if chunk is not None else 0
            name = chunk.name if chunk is not None else None
            progress(ExportEvent(kind, name, have, size, done + have, total, len(chunks)))

    event("listed", None)
    checker = ChunkChecker(pinned, key_der)
    downloaded: list[str] = []
    received = resumed = skipped = 0
    to_fetch = sum(c.size for c in chunks if not (folder / c.name).exists())
    workers = min(os.cpu_count() or 1, 4)
    # Chunks are verified in worker processes while the next ones download, and linked (Merkle
    # frontier, signatures) and renamed into place here, in order. Small exports stay in-process.
    pool = (
        ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
        if workers > 1 and to_fetch >= PARALLEL_MIN_BYTES
        else None
    )
    window: deque[tuple[RemoteChunk, Path, Future[tuple[str, int, ChunkScan]]]] = deque()

    def finish_next() -> None:
        nonlocal done
        chunk, partial, future = window.popleft()
        try:
            checker.link(chunk, *scanned_result(chunk.name, future))
        except ChunkVerificationError:
            os.replace(partial, folder / f".{chunk.name}.rejected")  # evidence, never under the final name
            raise
        os.replace(partial, folder / chunk.name)
        _fsync_dir(folder)
        downloaded.append(chunk.name)
        event("verified", chunk, chunk.size)
        done += chunk.size

    try:
        for chunk in chunks:
            final = folder / chunk.name
            if _already_exported(final, chunk):
                while window:
                    finish_next()
                skipped += 1
                checker.skipped(final)
                event("skipped", chunk, chunk.size)
                done += chunk.size
                continue
            partial = folder / f".{chunk.name}.partial"
            got, reused = _download(http, chunk, partial, event)
            received += got
            resumed += reused
            future: Future[tuple[str, int, ChunkScan]] = Future()
            if pool is not None:
                future = pool.submit(digest_and_scan, str(partial), key_der)
            else:
                try:
                    future.set_result(digest_and_scan(str(partial), key_der))
                except BaseException as exc:  # kept for finish_next, which reports it in order
                    future.set_exception(exc)
            window.append((chunk, partial, future))
            while len(window) > (workers if pool is not None else 0):
                finish_next()
        while window:
            finish_next()
    finally:
        for _c, _p, f in window:
            f.cancel()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return ExportResult(
        downloaded=len(downloaded),
        skipped=skipped,
        bytes=received,
        seconds=time.perf_counter() - start,
        resumed_bytes=resumed,
        total_bytes=total,
        last_seqno=chunks[-1].last_seqno if chunks else 0,
        chunks=tuple(downloaded),
    )


# --- the listing -----------------------------------------------------------------------------------------


def _list(http: httpx.Client) -> list[RemoteChunk]:
    try:
        r = http.get(CHUNKS_PATH)
    except httpx.HTTPError as exc:
        raise UnreachableError(f"GET {CHUNKS_PATH}: {exc}") from None
    if r.status_code != 200:
        raise _api_error(r, "GET", CHUNKS_PATH)
    try:
        body = json.loads(r.content)
    except (ValueError, RecursionError):
        raise VerificationError("the chunk listing is not JSON", check="export-listing") from None
    return parse_listing(body)


def parse_listing(body: Any) -> list[RemoteChunk]:
    """The chunks of a ``GET /app/ledger/chunks`` answer, checked: well-formed, contiguous from seqno 1."""
    items = body.get("chunks") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise VerificationError("the chunk listing has no list of chunks", check="export-listing")
    chunks: list[RemoteChunk] = []
    expected = 1
    for item in items:
        chunk = _listed_chunk(item)
        if chunk.first_seqno != expected:
            raise VerificationError(
                f"the chunk listing is not contiguous: {chunk.name} where a chunk starting at {expected} was expected",
                check="export-listing",
            )
        chunks.append(chunk)
        expected = chunk.last_seqno + 1
    return chunks


def _listed_chunk(item: Any) -> RemoteChunk:
    if not isinstance(item, dict):
        raise VerificationError("a chunk in the listing is not an object", check="export-listing")
    name = item.get("name")
    m = _CHUNK_NAME.fullmatch(name) if isinstance(name, str) else None
    if m is None:
        raise VerificationError(f"the listing names a chunk {str(name)[:80]!r}", check="export-listing")
    first, last = int(m.group(1)), int(m.group(2))
    size, digest = item.get("size"), item.get("sha256")
    if (
        item.get("firstSeqno") != first
        or item.get("lastSeqno") != last
        or first > last
        or not isinstance(size, int)
        or isinstance(size, bool)
        or size < CHUNK_HEADER_SIZE
        or not isinstance(digest, str)
        or _SHA256.fullmatch(digest) is None
    ):
        raise VerificationError(f"the listing entry of {m.group(0)} is malformed", check="export-listing")
    return RemoteChunk(m.group(0), first, last, size, digest)


def _check_history(folder: Path, chunks: list[RemoteChunk]) -> None:
    """Every chunk exported before is still listed: a ledger's completed chunks never change or vanish."""
    listed = {c.name for c in chunks}
    for p in folder.iterdir():
        if _CHUNK_NAME.fullmatch(p.name) and p.name not in listed:
            raise VerificationError(
                f"{p.name} was exported before but the ledger no longer lists it: its history changed "
                f"(or {folder} holds another ledger's export)",
                check="export-history",
            )


def _already_exported(final: Path, chunk: RemoteChunk) -> bool:
    try:
        size = final.stat().st_size
    except FileNotFoundError:
        return False
    if size == chunk.size and _sha256_file(final) == chunk.sha256:
        return True
    raise ChunkVerificationError(
        chunk.name,
        f"the ledger now lists it with {chunk.size} bytes and SHA-256 {chunk.sha256}, but the copy exported "
        f"before ({size} bytes) differs: the ledger's history changed, or the copy was damaged "
        f"(keep it as evidence; remove it to export the ledger's version)",
        check="export-history",
    )


# --- downloading -----------------------------------------------------------------------------------------


def _download(
    http: httpx.Client, chunk: RemoteChunk, partial: Path, event: Callable[[str, RemoteChunk, int], None]
) -> tuple[int, int]:
    """Fetch the rest of ``chunk`` into ``partial``; return (bytes received, bytes resumed)."""
    try:
        have = partial.stat().st_size
    except FileNotFoundError:
        have = 0
    if have > chunk.size:
        have = 0  # not a prefix of this chunk
    resumed = have
    event("downloading", chunk, have)
    if have == chunk.size:
        return 0, resumed
    path = f"{CHUNKS_PATH}/{chunk.name}"
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers.update({"Range": f"bytes={have}-", "If-Range": f'"{chunk.sha256}"'})
    received = 0
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        with http.stream("GET", path, headers=headers) as r:
            if r.status_code == 206 and have:
                wanted = f"bytes {have}-{chunk.size - 1}/{chunk.size}"
                if r.headers.get("Content-Range", "").strip() != wanted:
                    raise VerificationError(
                        f"{chunk.name}: asked for bytes {have}- but the ledger answered "
                        f"{r.headers.get('Content-Range', 'no Content-Range')[:80]!r}",
                        check="export-range",
                    )
            elif r.status_code == 200:
                have = resumed = 0  # the whole file (the ledger ignored the range)
            else:
                r.read()
                raise _api_error(r, "GET", path)
            os.ftruncate(fd, have)
            for block in r.iter_bytes():  # as it arrives: what came before a failure is kept
                if have + len(block) > chunk.size:
                    os.ftruncate(fd, 0)
                    raise ChunkVerificationError(
                        chunk.name, f"the ledger sent more than the {chunk.size} bytes it listed", check="chunk-size"
                    )
                os.pwrite(fd, block, have)
                have += len(block)
                received += len(block)
                event("progress", chunk, have)
        os.fsync(fd)
    except httpx.HTTPError as exc:
        # what arrived stays in the partial file: the next export resumes from there
        raise UnreachableError(
            f"GET {path}: {exc} (after {have} of {chunk.size} bytes; run the export again to resume)"
        ) from None
    finally:
        os.close(fd)
    if have != chunk.size:
        raise UnreachableError(
            f"GET {path}: the download ended after {have} of {chunk.size} bytes; run the export again to resume"
        )
    return received, resumed


def _api_error(r: httpx.Response, method: str, path: str) -> ApiError:
    code, message = "HttpError", r.content[:200].decode(errors="replace")
    with contextlib.suppress(ValueError, AttributeError, RecursionError):
        err = json.loads(r.content).get("error")
        if isinstance(err, dict):
            code, message = str(err.get("code", code)), str(err.get("message", message))
    return ApiError(r.status_code, code, message, method=method, path=path)


# --- files -----------------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()


def _write_service_cert(out: Path, pinned: x509.Certificate) -> None:
    """``out/service_cert.pem`` := the pinned certificate; refuse an export of another service."""
    target = out / "service_cert.pem"
    pem = pinned.public_bytes(Encoding.PEM)
    try:
        existing = target.read_bytes()
    except FileNotFoundError:
        existing = None
    if existing is not None:
        try:
            same = load_pem_cert(existing, str(target)) == pinned
        except VerificationError:
            same = False
        if not same:
            raise ServiceError(
                f"{out} holds an export of another service: its service_cert.pem is not the pinned certificate"
            )
        return
    tmp = out / ".service_cert.pem.tmp"
    with tmp.open("wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    _fsync_dir(out)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
