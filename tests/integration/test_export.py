"""Ledger export: ``/app/ledger/chunks`` on a real ``notarium serve``, and the verifying downloader.

One private ledger is pre-filled in-process (small chunks: many completed chunk files) and served
with ``--chunk-size``. The endpoints are checked against the files on disk (listing, whole files,
byte ranges, HEAD, 404s, roles); :func:`notarium.client.export.export_ledger` is run through an
httpx transport that records every request and the body bytes received, and can cut a download
short or alter bytes on the way. Every export must pass ``notarium audit`` and the ``ccf``
package's LedgerValidator; altered chunks must be refused and never appear under their final name.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration.oracle import ccf_validate
from integration.server import Server, new_identity, running
from notarium.auditing import audit, find_target
from notarium.client.errors import ApiError, UnreachableError
from notarium.client.export import (
    ChunkVerificationError,
    ExportEvent,
    ExportResult,
    export_ledger,
    parse_listing,
)
from notarium.errors import ServiceError, VerificationError
from notarium.ledger import EngineConfig, init_service, open_ledger
from notarium.server.routes.export import DigestCache, RangeNotSatisfiableError, byte_range
from notarium.verify.entry import parse_entry, read_positions

CHUNK_SIZE = 16_000
PREFILL = 2_000
CHUNK = re.compile(r"^ledger_(\d+)-(\d+)\.committed$")
LISTING = "/app/ledger/chunks"


# --------------------------------------------------------------------------- the wire


@dataclass
class Seen:
    """One request as the transport saw it, and the body bytes that came back."""

    method: str
    path: str
    range: str | None
    if_range: str | None
    status: int
    received: int = 0

    @property
    def chunk(self) -> str | None:
        return self.path.rsplit("/", 1)[1] if self.path.startswith(LISTING + "/") else None


class _Body(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, seen: Seen, offset: int, cut: int | None, flip: int | None):
        self._inner, self._seen, self._offset, self._cut, self._flip = inner, seen, offset, cut, flip

    def __iter__(self) -> Iterator[bytes]:
        for block in self._inner:
            data = block
            if self._cut is not None and self._offset + len(data) > self._cut:
                data = data[: self._cut - self._offset]
                self._seen.received += len(data)
                yield data
                raise httpx.ReadError("connection lost (simulated)")
            if self._flip is not None and self._offset <= self._flip < self._offset + len(data):
                i = self._flip - self._offset
                data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
            self._offset += len(data)
            self._seen.received += len(data)
            yield data

    def close(self) -> None:
        self._inner.close()


@dataclass
class Wire(httpx.BaseTransport):
    """Records requests and bytes received; ``cut[name] = n`` breaks the connection after byte n of
    that chunk file, ``flip[name] = i`` flips byte i of it, ``patch`` rewrites the chunk listing."""

    inner: httpx.BaseTransport
    log: list[Seen] = field(default_factory=list)
    cut: dict[str, int] = field(default_factory=dict)
    flip: dict[str, int] = field(default_factory=dict)
    patch: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        seen = Seen(
            request.method,
            request.url.path,
            request.headers.get("Range"),
            request.headers.get("If-Range"),
            response.status_code,
        )
        self.log.append(seen)
        if request.url.path == LISTING and self.patch is not None:
            response.read()
            body = httpx.Response(200, content=response.content).json()
            content = httpx.Response(200, json=self.patch(body)).content
            seen.received = len(content)
            headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
            return httpx.Response(response.status_code, headers=headers, content=content)
        offset = 0
        if response.status_code == 206:
            offset = int(response.headers["Content-Range"].split()[1].split("-")[0])
        name = seen.chunk or ""
        stream = response.stream
        if not isinstance(stream, httpx.SyncByteStream):
            raise TypeError("a synchronous transport answers with a synchronous stream")
        body = _Body(stream, seen, offset, self.cut.get(name), self.flip.get(name))
        return httpx.Response(
            response.status_code, headers=response.headers, stream=body, extensions=response.extensions
        )

    def close(self) -> None:
        self.inner.close()

    def chunk_requests(self) -> list[Seen]:
        return [s for s in self.log if s.chunk is not None]


def pinned_context(server: Server, pem: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(server.service_cert))  # the service certificate only
    ctx.load_cert_chain(str(pem))
    return ctx


@dataclass
class Caller:
    http: httpx.Client
    wire: Wire


@pytest.fixture
def connect(ledger: Server) -> Iterator[Callable[..., Caller]]:
    clients: list[httpx.Client] = []

    def make(pem: Path | None = None, server: Server | None = None, **wire: Any) -> Caller:
        srv = server or ledger
        w = Wire(httpx.HTTPTransport(verify=pinned_context(srv, pem or srv.admin_pem)), **wire)
        client = httpx.Client(base_url=srv.url, transport=w, timeout=30)
        clients.append(client)
        return Caller(client, w)

    yield make
    for c in clients:
        c.close()


# --------------------------------------------------------------------------- the ledger


def prefill(directory: Path, entries: int, chunk_size: int) -> None:
    """Append ``entries`` entries in-process (the server is not running yet); a signature every 100."""
    ledger = open_ledger(directory, EngineConfig(chunk_size=chunk_size, signature_tx_count=100))
    try:
        last = None
        for i in range(entries):
            last = ledger.append_entry(f"entry {i} " + "x" * 48, f"c{i % 4}")
        if last is not None:
            ledger.wait_committed(last)
    finally:
        ledger.close()


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("export") / "service"
    init_service(directory)
    prefill(directory, PREFILL, CHUNK_SIZE)
    with pytest.MonkeyPatch.context() as mp:
        for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            mp.delenv(name, raising=False)
        with running(directory, "--chunk-size", str(CHUNK_SIZE)) as server:
            yield server
            assert server.stop() == 0, "".join(server.output[-50:])


def completed(directory: Path) -> list[Path]:
    """The completed chunk files of a ledger folder, in seqno order."""
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CHUNK.match(p.name))]
    return [p for _s, p in sorted(found)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def append(caller: Caller, count: int) -> str:
    """Append ``count`` entries over HTTP; wait until the last one is committed (so on disk)."""
    txid = ""
    for i in range(count):
        r = caller.http.post("/app/transactions", json={"contents": f"appended {i} " + "y" * 64})
        assert r.status_code == 200, r.text
        txid = r.headers["x-ms-ccf-transaction-id"]
    deadline = time.monotonic() + 10
    while caller.http.get(f"/app/transactions/{txid}/status").json()["state"] != "Committed":
        assert time.monotonic() < deadline, f"{txid} was not committed within 10 s"
        time.sleep(0.01)
    return txid


def grow(caller: Caller, server: Server, chunks: int) -> list[str]:
    """Append until at least ``chunks`` more chunks are completed; the new chunk names."""
    before = [c["name"] for c in caller.http.get(LISTING).json()["chunks"]]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        append(caller, 40)
        now = [c["name"] for c in caller.http.get(LISTING).json()["chunks"]]
        if len(now) >= len(before) + chunks:
            assert now[: len(before)] == before
            return now[len(before) :]
    pytest.fail("the ledger completed no new chunk within 30 s")


def export(caller: Caller, server: Server, out: Path, events: list[ExportEvent] | None = None) -> ExportResult:
    return export_ledger(
        caller.http, out, server.service_cert.read_bytes(), progress=events.append if events is not None else None
    )


def audited(out: Path) -> int:
    """``notarium audit OUT``'s verdict, in-process: the last signed seqno."""
    report = audit(find_target(out))
    assert report.service_cert_pinned
    assert report.unsigned_tail == 0
    assert report.last_signed is not None
    return report.last_signed.seqno


# --------------------------------------------------------------------------- the endpoints


def test_listing_is_the_completed_chunks_on_disk(ledger: Server, connect: Callable[..., Caller]) -> None:
    caller = connect()
    append(caller, 3)  # something in the live chunk
    folder = ledger.directory / "ledger"
    live = [p.name for p in folder.iterdir() if re.fullmatch(r"ledger_\d+", p.name)]
    assert len(live) == 1, sorted(p.name for p in folder.iterdir())

    r = caller.http.get(LISTING)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert re.fullmatch(r"\d+\.\d+", r.headers["x-ms-ccf-transaction-id"])
    chunks = r.json()["chunks"]
    on_disk = completed(folder)
    assert len(on_disk) >= 5, "the pre-filled ledger should span several chunks"
    assert [c["name"] for c in chunks] == [p.name for p in on_disk]
    assert live[0] not in {c["name"] for c in chunks}
    expected_first = 1
    for c, p in zip(chunks, on_disk, strict=True):
        m = CHUNK.match(c["name"])
        assert m is not None
        assert (c["firstSeqno"], c["lastSeqno"]) == (int(m.group(1)), int(m.group(2)))
        assert c["firstSeqno"] == expected_first
        expected_first = c["lastSeqno"] + 1
        assert c["size"] == p.stat().st_size
        assert c["sha256"] == sha256(p)
    assert caller.http.get(LISTING).json() == r.json()  # stable (and served from the digest cache)


def test_chunk_download_ranges_and_head(ledger: Server, connect: Callable[..., Caller]) -> None:
    http = connect().http
    chunk = http.get(LISTING).json()["chunks"][1]
    path = f"{LISTING}/{chunk['name']}"
    data = (ledger.directory / "ledger" / chunk["name"]).read_bytes()
    etag = f'"{chunk["sha256"]}"'
    size = len(data)

    whole = http.get(path)
    assert whole.status_code == 200
    assert whole.content == data
    assert whole.headers["content-type"] == "application/octet-stream"
    assert whole.headers["etag"] == etag
    assert whole.headers["accept-ranges"] == "bytes"
    assert int(whole.headers["content-length"]) == size
    assert "content-range" not in whole.headers

    cases = {
        "bytes=10-99": (10, 99),
        "bytes=100-": (100, size - 1),
        "bytes=-50": (size - 50, size - 1),
        f"bytes=0-{size + 1000}": (0, size - 1),
        f"bytes={size - 1}-{size - 1}": (size - 1, size - 1),
    }
    for header, (lo, hi) in cases.items():
        r = http.get(path, headers={"Range": header})
        assert r.status_code == 206, (header, r.status_code)
        assert r.headers["content-range"] == f"bytes {lo}-{hi}/{size}", header
        assert r.content == data[lo : hi + 1], header
        assert r.headers["etag"] == etag

    for header in (f"bytes={size}-", f"bytes={size + 5}-{size + 10}", "bytes=-0"):
        r = http.get(path, headers={"Range": header})
        assert r.status_code == 416, (header, r.status_code)
        assert r.headers["content-range"] == f"bytes */{size}"
        assert r.json()["error"]["code"] == "InvalidRange"

    # a range the server may ignore (malformed, another unit, several ranges): the whole file
    for header in ("bytes=50-10", "items=0-10", "bytes=0-1,5-6", "bytes=abc"):
        r = http.get(path, headers={"Range": header})
        assert (r.status_code, r.content) == (200, data), header

    # If-Range: the range only while the client holds this very file
    r = http.get(path, headers={"Range": "bytes=5-", "If-Range": etag})
    assert (r.status_code, r.content) == (206, data[5:])
    for other in (f'"{"0" * 64}"', f"W/{etag}", "Wed, 21 Oct 2015 07:28:00 GMT"):
        r = http.get(path, headers={"Range": "bytes=5-", "If-Range": other})
        assert (r.status_code, r.content) == (200, data), other

    head = http.head(path)
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == size
    assert head.headers["etag"] == etag
    assert head.headers["accept-ranges"] == "bytes"
    head = http.head(path, headers={"Range": "bytes=8-15"})
    assert head.status_code == 206
    assert head.headers["content-range"] == f"bytes 8-15/{size}"
    assert head.content == b""


def test_only_completed_chunks_are_served(ledger: Server, connect: Callable[..., Caller]) -> None:
    caller = connect()
    append(caller, 2)
    folder = ledger.directory / "ledger"
    (live,) = [p.name for p in folder.iterdir() if re.fullmatch(r"ledger_\d+", p.name)]
    first = completed(folder)[0].name
    link = folder / "ledger_900000001-900000002.committed"
    link.symlink_to(ledger.directory / "secrets" / "ledger_secret.sealed")
    try:
        names = [
            live,  # being written
            "ledger_900000003-900000004.committed",  # well-formed, no such chunk
            link.name,  # a symbolic link out of the ledger
            first.removesuffix(".committed"),
            first + ".partial",
            "." + first,
            "ledger_01-2.committed",
            "ledger_2-1.committed",
            "notarium.json",
            "..%2Fnotarium.json",
            "..%2F..%2Fservice%2Fsecrets%2Fledger_secret.sealed",
            "%2e%2e%2fservice_cert.pem",
            "ledger_1-2.committed%00",
            "ledger_1-2.committed%2F",
        ]
        for name in names:
            for method in ("GET", "HEAD"):
                r = caller.http.request(method, httpx.URL(f"{ledger.url}{LISTING}/{name}"))
                assert r.status_code == 404, (method, name, r.status_code)
                if method == "GET":
                    assert r.json()["error"]["code"] == "ResourceNotFound", name
                    assert b"BEGIN" not in r.content
        assert link.name not in {c["name"] for c in caller.http.get(LISTING).json()["chunks"]}
    finally:
        link.unlink()


def test_export_needs_the_export_role(ledger: Server, connect: Callable[..., Caller], tmp_path: Path) -> None:
    admin = connect()
    first = admin.http.get(LISTING).json()["chunks"][0]["name"]
    people: dict[str, Path] = {}
    for role in ("Reader", "Contributor"):
        pem, user_id = new_identity(tmp_path, role)
        r = admin.http.patch(
            f"/app/users/{user_id}",
            content=f'{{"assignedRole": "{role}"}}',
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert r.status_code == 200, r.text
        people[role] = pem
    stranger, _ = new_identity(tmp_path, "stranger")
    for who, pem, status, code in (
        ("Reader", people["Reader"], 403, "NotAllowed"),
        ("Contributor", people["Contributor"], 403, "NotAllowed"),
        ("stranger", stranger, 401, "InvalidAuthenticationInfo"),
    ):
        caller = connect(pem)
        for method, path in (("GET", LISTING), ("GET", f"{LISTING}/{first}"), ("GET", f"{LISTING}/nonsense")):
            r = caller.http.request(method, path)
            assert r.status_code == status, (who, path, r.text)
            assert r.json()["error"]["code"] == code
            assert "sha256" not in r.text
        assert caller.http.head(f"{LISTING}/{first}").status_code == status
        with pytest.raises(ApiError) as refused:
            export(caller, ledger, tmp_path / f"out-{who}")
        assert refused.value.status == status
        assert not any((tmp_path / f"out-{who}" / "ledger").iterdir())


def test_export_role_can_be_lowered(tmp_path: Path) -> None:
    directory = tmp_path / "service"
    init_service(directory)
    with running(directory, "--export-role", "Reader") as server:
        pem, user_id = new_identity(tmp_path, "auditor")
        with httpx.Client(base_url=server.url, verify=pinned_context(server, server.admin_pem)) as admin:
            r = admin.patch(
                f"/app/users/{user_id}",
                content='{"assignedRole": "Reader"}',
                headers={"Content-Type": "application/merge-patch+json"},
            )
            assert r.status_code == 200, r.text
            assert admin.get(LISTING).status_code == 200  # a higher role still may
        with httpx.Client(base_url=server.url, verify=pinned_context(server, pem)) as auditor:
            chunks = auditor.get(LISTING).json()["chunks"]
            assert chunks
            assert auditor.get(f"{LISTING}/{chunks[0]['name']}").status_code == 200
            result = export_ledger(auditor, tmp_path / "out", server.service_cert.read_bytes())
            assert auditor.post("/app/transactions", json={"contents": "no"}).status_code == 403  # still a Reader
        assert result.downloaded == len(chunks)
        assert audited(tmp_path / "out") == chunks[-1]["lastSeqno"]
        assert server.stop() == 0


# --------------------------------------------------------------------------- the downloader


def test_export_audit_and_incremental_exports(ledger: Server, connect: Callable[..., Caller], tmp_path: Path) -> None:
    out = tmp_path / "out"
    caller = connect()
    listed = caller.http.get(LISTING).json()["chunks"]
    events: list[ExportEvent] = []

    result = export(caller, ledger, out, events)

    names = [c["name"] for c in listed]
    assert result.downloaded == len(names)
    assert list(result.chunks) == names
    assert result.skipped == 0
    assert result.bytes == result.total_bytes == sum(p.stat().st_size for p in completed(out / "ledger"))
    assert result.resumed_bytes == 0
    assert result.seconds > 0
    assert result.mb_per_s == pytest.approx(result.bytes / result.seconds / 1e6)
    assert [p.name for p in completed(out / "ledger")] == list(result.chunks)
    for p in completed(out / "ledger"):
        assert p.read_bytes() == (ledger.directory / "ledger" / p.name).read_bytes()
    assert (out / "service_cert.pem").read_bytes() == ledger.service_cert.read_bytes()
    assert sorted(p.name for p in (out / "ledger").iterdir()) == sorted(result.chunks)  # no partial files left
    assert audited(out) == result.last_seqno
    # progress: listed first, each chunk verified in order, the byte count reaches the total
    assert events[0].kind == "listed"
    assert events[0].total_bytes == result.total_bytes
    assert [e.chunk for e in events if e.kind == "verified"] == list(result.chunks)
    assert events[-1].done_bytes == result.total_bytes
    assert all(e.chunk_bytes <= e.chunk_size for e in events if e.chunk is not None)

    # again: nothing new, nothing downloaded
    caller.wire.log.clear()
    again = export(caller, ledger, out)
    assert (again.downloaded, again.skipped, again.bytes, again.chunks) == (0, len(names), 0, ())
    assert caller.wire.chunk_requests() == []

    # after more appends: only the new chunks
    new = grow(caller, ledger, 2)
    caller.wire.log.clear()
    third = export(caller, ledger, out)
    fetched = [s.chunk for s in caller.wire.chunk_requests()]
    assert fetched == list(third.chunks)
    assert set(new) <= set(third.chunks)
    assert third.skipped == len(result.chunks)
    assert third.bytes == sum((out / "ledger" / n).stat().st_size for n in third.chunks)
    assert all(s.range is None for s in caller.wire.chunk_requests())
    assert audited(out) == third.last_seqno


def test_interrupted_export_resumes(ledger: Server, connect: Callable[..., Caller], tmp_path: Path) -> None:
    out = tmp_path / "out"
    listed = connect().http.get(LISTING).json()["chunks"]
    victim = listed[2]
    cut_at = victim["size"] // 2
    broken = connect(cut={victim["name"]: cut_at})
    with pytest.raises(UnreachableError, match="resume"):
        export(broken, ledger, out)
    folder = out / "ledger"
    partial = folder / f".{victim['name']}.partial"
    original = (ledger.directory / "ledger" / victim["name"]).read_bytes()
    assert partial.read_bytes() == original[:cut_at]
    assert [p.name for p in completed(folder)] == [c["name"] for c in listed[:2]]  # verified before the cut

    caller = connect()
    result = export(caller, ledger, out)
    requests = {s.chunk: s for s in caller.wire.chunk_requests()}
    assert list(requests) == list(result.chunks)
    assert result.chunks[0] == victim["name"]
    resumed = requests[victim["name"]]
    assert resumed.range == f"bytes={cut_at}-"
    assert resumed.if_range == f'"{victim["sha256"]}"'
    assert resumed.status == 206
    assert resumed.received == victim["size"] - cut_at  # only the rest came over the wire
    assert result.resumed_bytes == cut_at
    assert result.skipped == 2
    assert result.bytes == sum(s.received for s in requests.values())
    assert not partial.exists()
    assert (folder / victim["name"]).read_bytes() == original
    assert audited(out) == result.last_seqno


def test_a_partial_file_longer_than_its_chunk_is_discarded(
    ledger: Server, connect: Callable[..., Caller], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    caller = connect()
    listed = caller.http.get(LISTING).json()["chunks"]
    (out / "ledger").mkdir(parents=True)
    first = listed[0]
    # a "partial" longer than the chunk itself cannot be a prefix of it: it is discarded
    (out / "ledger" / f".{first['name']}.partial").write_bytes(b"\0" * (first["size"] + 10))
    result = export(caller, ledger, out)
    seen = caller.wire.chunk_requests()[0]
    assert (seen.chunk, seen.range, seen.status) == (first["name"], None, 200)
    assert result.resumed_bytes == 0
    assert audited(out) == result.last_seqno


def test_altered_bytes_are_refused(ledger: Server, connect: Callable[..., Caller], tmp_path: Path) -> None:
    out = tmp_path / "out"
    listed = connect().http.get(LISTING).json()["chunks"]
    victim = listed[3]["name"]
    caller = connect(flip={victim: listed[3]["size"] // 2})
    with pytest.raises(ChunkVerificationError) as refused:
        export(caller, ledger, out)
    assert refused.value.chunk == victim
    assert refused.value.check == "chunk-digest"
    assert victim in str(refused.value)
    assert isinstance(refused.value, VerificationError)
    folder = out / "ledger"
    assert not (folder / victim).exists()
    assert (folder / f".{victim}.rejected").exists()
    assert [p.name for p in completed(folder)] == [c["name"] for c in listed[:3]]
    # an honest answer completes the export
    result = export(connect(), ledger, out)
    assert result.chunks[0] == victim
    assert audited(out) == result.last_seqno


def _private_entry_offset(data: bytes) -> int:
    """The offset of the last byte of an encrypted entry near the middle of a chunk file."""
    _end, positions = read_positions(data)
    assert positions is not None
    for off in positions[len(positions) // 2 :]:
        entry = parse_entry(data, off)
        if entry.has_private:
            return entry.end - 1
    pytest.fail("no encrypted entry in the second half of the chunk")


def test_consistently_altered_chunk_fails_the_signed_root(
    ledger: Server, connect: Callable[..., Caller], tmp_path: Path
) -> None:
    """A server that lists the digest of the bytes it alters: the signed Merkle root refuses them."""
    out = tmp_path / "out"
    listed = connect().http.get(LISTING).json()["chunks"]
    target = listed[2]
    data = bytearray((ledger.directory / "ledger" / target["name"]).read_bytes())
    at = _private_entry_offset(bytes(data))
    data[at] ^= 0x01
    forged = hashlib.sha256(data).hexdigest()

    def lie(body: dict[str, Any]) -> dict[str, Any]:
        for c in body["chunks"]:
            if c["name"] == target["name"]:
                c["sha256"] = forged
        return body

    caller = connect(flip={target["name"]: at}, patch=lie)
    with pytest.raises(ChunkVerificationError) as refused:
        export(caller, ledger, out)
    assert refused.value.chunk == target["name"]
    assert refused.value.check == "signature-root"
    assert not (out / "ledger" / target["name"]).exists()
    assert (out / "ledger" / f".{target['name']}.rejected").read_bytes() == bytes(data)
    assert [p.name for p in completed(out / "ledger")] == [c["name"] for c in listed[:2]]

    # the same forgery after chunks exported in an earlier run (the tree is rebuilt from the last one)
    out2 = tmp_path / "out2"
    partial = connect(cut={target["name"]: 0})
    with pytest.raises(UnreachableError):
        export(partial, ledger, out2)
    assert [p.name for p in completed(out2 / "ledger")] == [c["name"] for c in listed[:2]]
    with pytest.raises(ChunkVerificationError) as refused:
        export(connect(flip={target["name"]: at}, patch=lie), ledger, out2)
    assert refused.value.check == "signature-root"
    assert not (out2 / "ledger" / target["name"]).exists()
    result = export(connect(), ledger, out2)
    assert result.skipped == 2
    assert audited(out2) == result.last_seqno


def test_a_changed_history_stops_the_export(ledger: Server, connect: Callable[..., Caller], tmp_path: Path) -> None:
    out = tmp_path / "out"
    caller = connect()
    export(caller, ledger, out)
    second = completed(out / "ledger")[1]
    data = bytearray(second.read_bytes())
    data[len(data) // 2] ^= 0x01
    second.write_bytes(bytes(data))
    with pytest.raises(ChunkVerificationError) as refused:
        export(caller, ledger, out)
    assert refused.value.chunk == second.name
    assert refused.value.check == "export-history"
    assert second.read_bytes() == bytes(data)  # kept: it is evidence

    # a chunk exported before that the ledger no longer lists
    second.unlink()
    (out / "ledger" / "ledger_900000001-900000002.committed").write_bytes(b"x" * 16)
    with pytest.raises(VerificationError, match="no longer lists"):
        export(caller, ledger, out)


def test_the_pinned_certificate_decides(ledger: Server, connect: Callable[..., Caller], tmp_path: Path) -> None:
    other = tmp_path / "other"
    init_service(other)
    foreign = (other / "service_cert.pem").read_bytes()
    # the connection is pinned to the right service, but the export pins another: nothing verifies
    with pytest.raises(ChunkVerificationError) as refused:
        export_ledger(connect().http, tmp_path / "out", foreign)
    assert refused.value.check in ("signature-cose", "signature-node")
    assert not completed(tmp_path / "out" / "ledger")
    assert (tmp_path / "out" / "service_cert.pem").read_bytes() == foreign  # never the server's word
    # an export directory of another service is refused before anything is downloaded
    caller = connect()
    with pytest.raises(ServiceError, match="another service"):
        export(caller, ledger, tmp_path / "out")
    assert caller.wire.log == []


def test_ccf_validator_accepts_the_export(ledger: Server, connect: Callable[..., Caller], tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = export(connect(), ledger, out)
    report = ccf_validate(out / "ledger", out / "service_cert.pem")
    assert report.ok, report.error
    assert report.chunks == list(result.chunks)
    assert report.transactions == result.last_seqno
    assert report.last_verified_txid.endswith(f".{result.last_seqno}")
    assert report.service_cert_matches


def test_large_ledger_round_trip(tmp_path: Path) -> None:
    """Export and audit of a ledger of more than 100,000 transactions."""
    directory = tmp_path / "big"
    init_service(directory)
    prefill(directory, 100_000, 2_000_000)
    chunk_files = completed(directory / "ledger")
    with (
        running(directory) as server,
        httpx.Client(base_url=server.url, verify=pinned_context(server, server.admin_pem), timeout=60) as http,
    ):
        result = export_ledger(http, tmp_path / "out", server.service_cert.read_bytes())
        assert server.stop() == 0
    assert result.downloaded >= len(chunk_files) >= 10
    assert result.last_seqno > 100_000
    assert result.bytes == result.total_bytes > 30_000_000
    report = audit(find_target(tmp_path / "out"))
    assert report.transactions == result.last_seqno
    assert report.last_signed is not None
    assert report.last_signed.seqno == result.last_seqno
    print(f"exported {result.bytes / 1e6:.1f} MB in {result.seconds:.2f} s: {result.mb_per_s:.1f} MB/s")


# --------------------------------------------------------------------------- pieces


def test_listing_is_checked() -> None:
    good = {"name": "ledger_1-4.committed", "firstSeqno": 1, "lastSeqno": 4, "size": 100, "sha256": "a" * 64}
    nxt = {"name": "ledger_5-9.committed", "firstSeqno": 5, "lastSeqno": 9, "size": 100, "sha256": "b" * 64}
    assert [c.name for c in parse_listing({"chunks": [good, nxt]})] == [good["name"], nxt["name"]]
    assert parse_listing({"chunks": []}) == []
    bad: Iterable[Any] = [
        [],
        {"chunks": None},
        {"chunks": [nxt]},  # does not start at 1
        {"chunks": [good, good]},  # not contiguous
        {"chunks": [{**good, "name": "../ledger_1-4.committed"}]},
        {"chunks": [{**good, "name": "ledger_1"}]},
        {"chunks": [{**good, "lastSeqno": 5}]},
        {"chunks": [{**good, "size": True}]},
        {"chunks": [{**good, "size": 3}]},
        {"chunks": [{**good, "size": "100"}]},
        {"chunks": [{**good, "sha256": "A" * 64}]},
        {"chunks": [{**good, "sha256": "a" * 63}]},
        {"chunks": ["ledger_1-4.committed"]},
    ]
    for body in bad:
        with pytest.raises(VerificationError):
            parse_listing(body)


def test_byte_ranges() -> None:
    assert byte_range("bytes=0-9", 100) == (0, 9)
    assert byte_range("bytes=90-", 100) == (90, 99)
    assert byte_range("bytes=-10", 100) == (90, 99)
    assert byte_range("bytes=-1000", 100) == (0, 99)
    assert byte_range("bytes=99-5000", 100) == (99, 99)
    for ignored in ("bytes=9-0", "bytes=-", "bytes=0-1,2-3", "lines=0-1", "bytes=x-1", ""):
        assert byte_range(ignored, 100) is None, ignored
    for unsatisfiable in ("bytes=100-", "bytes=100-200", "bytes=-0"):
        with pytest.raises(RangeNotSatisfiableError):
            byte_range(unsatisfiable, 100)


def test_digests_are_computed_once_per_file_version(tmp_path: Path) -> None:
    cache = DigestCache()
    path = tmp_path / "ledger_1-2.committed"
    path.write_bytes(b"one")

    def digest() -> str:
        fd = os.open(path, os.O_RDONLY)
        try:
            return cache.digest(path.name, fd, os.fstat(fd))
        finally:
            os.close(fd)

    assert digest() == hashlib.sha256(b"one").hexdigest()
    assert digest() == hashlib.sha256(b"one").hexdigest()
    assert cache.computed == 1
    path.write_bytes(b"two!")  # another size: another version
    assert digest() == hashlib.sha256(b"two!").hexdigest()
    assert cache.computed == 2
