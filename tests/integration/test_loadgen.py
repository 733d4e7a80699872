"""The benchmark load generator (bench/loadgen.py): its response parser, and pipelining against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from integration.server import clean_env, running
from notarium.ledger import init_service

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.loadgen import ProtocolError, ResponseParser, parse_txid  # noqa: E402


def _response(status: int, body: bytes, txid: str | None = None) -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    if txid is not None:
        head += f"X-Ms-Ccf-Transaction-Id: {txid}\r\n"
    return head.encode() + b"\r\n" + body


def test_parser_splits_pipelined_responses_at_any_byte() -> None:
    stream = (
        _response(200, b'{"collectionId":"bench"}', "2.17")
        + _response(404, b'{"error":{}}')
        + _response(200, b"", "2.18")
        + _response(200, b'{"state":"Committed"}', "2.19")
    )
    expected = [
        (200, b"2.17", b'{"collectionId":"bench"}'),
        (404, None, b'{"error":{}}'),
        (200, b"2.18", b""),
        (200, b"2.19", b'{"state":"Committed"}'),
    ]
    for step in (1, 2, 7, 64, len(stream)):
        parser = ResponseParser(want_txid=True, want_body=True)
        got = []
        for i in range(0, len(stream), step):
            got += parser.feed(stream[i : i + step])
        assert got == expected, step
        assert not parser.buf
    lean = ResponseParser()
    assert [s for s, _, _ in lean.feed(stream)] == [200, 404, 200, 200]
    assert parse_txid(b"2.18") == (2, 18)
    with pytest.raises(ProtocolError):
        ResponseParser().feed(b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(ProtocolError):
        ResponseParser().feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")


def _loadgen(server_url: str, directory: Path, *args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.loadgen", server_url, *args]
    cmd += ["--cacert", str(directory / "service_cert.pem"), "--cert", str(directory / "user0_combined.pem")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=30, env=clean_env(), check=False)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_pipelined_load_against_a_real_server(tmp_path: Path) -> None:
    d = tmp_path / "svc"
    init_service(d)
    txids = tmp_path / "txids.txt"
    with running(d) as server:
        common = ["--connections", "4", "--window", "8"]
        append = _loadgen(server.url, d, "append", "--requests", "300", "--txids-out", str(txids), *common)
        assert append["requests"] == append["answered"] == append["sent"] == 300
        assert append["statuses"] == {"200": 300}
        assert append["errors"] == 0
        assert append["unanswered"] == 0
        saved = txids.read_text().split()
        assert len(saved) == len(set(saved)) == 300  # every answer carried its own transaction id
        ping = _loadgen(server.url, d, "ping", "--requests", "200", *common)
        assert ping["statuses"] == {"200": 200}
        assert ping["requests"] == 200
        get = _loadgen(server.url, d, "get", "--requests", "200", "--txids", str(txids), "--expect", '"Ready"', *common)
        assert get["statuses"] == {"200": 200}
        assert get["unexpected_bodies"] == 0  # all committed: the appends' signatures came within 10 ms
        commit = _loadgen(
            server.url, d, "commit", "--rate", "200", "--duration", "0.5", "--warmup", "0", "--connections", "4"
        )
        assert commit["errors"] == 0
        assert commit["committed"] == commit["posted"] > 50
        assert commit["not_committed"] == 0
        ratio = _loadgen(
            server.url, d, "ratio", "--phases", "4", "--phase", "0.3", "--settle", "0.1", "--warmup", "0.3",
            "--server-pid", str(server.process.pid), "--txids-out", str(txids), *common,
        )  # fmt: skip
        assert ratio["errors"] == 0
        assert ratio["unanswered"] == 0
        assert ratio["ping_rate"] > 0
        assert ratio["append_rate"] > 0
        assert ratio["ratio"] == round(ratio["append_rate"] / ratio["ping_rate"], 3)
        assert set(ratio["front_cpu_us_per_request"]) == {"ping", "append"}
        # only the appends' answers carry transaction ids, each a new one
        alternated = txids.read_text().split()
        assert alternated
        assert not set(alternated) & set(saved)
        assert server.stop() == 0
