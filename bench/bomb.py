"""Compressed request bodies (issue #15): what a gzip bomb costs the HTTP front, and its clients.

Against one fresh ``notarium serve`` (default settings), from this process:

- ``cpu``: ``BOMBS`` requests, one at a time, each on a new TLS connection without a client
  certificate: ``POST /app/transactions`` with ``Content-Encoding: gzip`` and a 2 MiB body that
  inflates to 2 GiB of zeros. Reported: the front process's CPU seconds per request (user + system,
  from /proc, until the front is quiet again), and the statuses it answered;
- ``latency``: an Administrator's appends (256-byte entries, one keep-alive connection, one at a
  time) for ``LATENCY_S`` seconds (at least 3, at most 200 requests): alone, then while
  ``BOMB_CLIENTS`` processes send bombs back to back. Reported: median and p90 milliseconds, how
  many bombs were sent meanwhile, and the cores the front kept busy. The bomb clients run on the
  same machine: on a small one they compete with the server for its cores (TLS encryption of 2 MiB
  per bomb), whatever the server does with the bombs.

Run it against other code (e.g. the tree before a change) with ``PYTHONPATH=that/src``: the server is
started with the same interpreter and environment.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import socket
import ssl
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import httpx

from bench.http import Service, init_service_cli, start_server, stop_server
from bench.loadgen import process_name, server_processes

ROOT = Path(__file__).resolve().parent.parent
BOMB_INFLATED = 2 << 30  # 2 GiB of zeros...
BOMBS = 20  # one at a time; before the change each took seconds of CPU
BOMB_CLIENTS = 4
LATENCY_S = 10.0
API = "api-version=2024-01-26-preview"
IO_TIMEOUT_S = 60.0


def make_bomb(inflated: int = BOMB_INFLATED) -> bytes:
    """``inflated`` zero bytes, gzip-compressed (about 1/1000 of it)."""
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    parts = [gz.compress(block) for _ in range(inflated // len(block))]
    parts.append(gz.flush())
    return b"".join(parts)


def _front(svc: Service) -> int:
    for pid in server_processes(svc.pid):
        if process_name(pid) == "front":
            return pid
    raise RuntimeError("no HTTP front process")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def quiet_cpu(pid: int, window: float = 0.5, still: float = 0.02, max_wait: float = 120.0) -> float:
    """The process's CPU seconds once it has used less than ``still`` over ``window`` seconds."""
    deadline = time.monotonic() + max_wait
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = cpu_seconds(pid)
        if now - last < still:
            return now
        last = now
    return last


def send_bomb(url: str, cacert: Path, bomb: bytes) -> int:
    """One bomb on a new TLS connection without a client certificate: the status answered (0: none)."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(cacert))
    head = (
        f"POST /app/transactions?{API} HTTP/1.1\r\nHost: notarium\r\nContent-Type: application/json\r\n"
        f"Content-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n\r\n"
    ).encode()
    with (
        socket.create_connection((host, int(port)), timeout=IO_TIMEOUT_S) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as sock,
    ):
        with contextlib.suppress(OSError):  # a server that stops reading may reset the connection
            sock.sendall(head + bomb)
        answer = b""
        with contextlib.suppress(OSError):
            while b"\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def cpu_per_bomb(svc: Service, bomb: bytes, bombs: int) -> dict[str, Any]:
    front = _front(svc)
    before = quiet_cpu(front)
    statuses = [send_bomb(svc.url, svc.cacert, bomb) for _ in range(bombs)]
    used = quiet_cpu(front) - before
    return {"bombs": bombs, "statuses": sorted(set(statuses)), "front_cpu_s_per_bomb": round(used / bombs, 4)}


def append_latencies(svc: Service, seconds: float) -> list[float]:
    """Milliseconds of an Administrator's appends, one at a time on one connection, for ``seconds``."""
    out: list[float] = []
    ctx = ssl.create_default_context(cafile=str(svc.cacert))
    ctx.load_cert_chain(str(svc.user_pem))
    with httpx.Client(base_url=svc.url, verify=ctx, timeout=IO_TIMEOUT_S * 2, trust_env=False) as client:
        client.post(f"/app/transactions?{API}", json={"contents": "warm-up"}).raise_for_status()
        deadline = time.monotonic() + seconds
        while len(out) < 200 and (len(out) < 3 or time.monotonic() < deadline):
            start = time.perf_counter()
            r = client.post(f"/app/transactions?{API}", json={"contents": "x" * 256})
            out.append((time.perf_counter() - start) * 1000)
            r.raise_for_status()
    return out


def _summary(ms: list[float]) -> dict[str, Any]:
    ordered = sorted(ms)
    return {
        "requests": len(ms),
        "median_ms": round(statistics.median(ordered), 1),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))], 1),
    }


def _bomber(url: str, cacert: Path, bomb: bytes, stop: Any, sent: Any) -> None:
    """One bomb client (its own process): bombs back to back until ``stop`` is set."""
    while not stop.is_set():
        with contextlib.suppress(OSError):
            send_bomb(url, cacert, bomb)
        with sent.get_lock():
            sent.value += 1


def latency_under_bombs(svc: Service, bomb: bytes, clients: int, seconds: float) -> dict[str, Any]:
    """The appends' latency while ``clients`` processes send bombs (processes: not this one's GIL)."""
    mp = multiprocessing.get_context("spawn")
    stop, sent = mp.Event(), mp.Value("i", 0)
    args = (svc.url, svc.cacert, bomb, stop, sent)
    bombers = [mp.Process(target=_bomber, args=args, daemon=True) for _ in range(clients)]
    for p in bombers:
        p.start()
    front = _front(svc)
    try:
        time.sleep(2.0)  # the bombs under way
        cpu, start = cpu_seconds(front), time.monotonic()
        ms = append_latencies(svc, seconds)
        share = (cpu_seconds(front) - cpu) / (time.monotonic() - start)
    finally:
        stop.set()
        for p in bombers:
            p.join(IO_TIMEOUT_S)
            if p.is_alive():
                p.kill()
    return {**_summary(ms), "bomb_clients": clients, "bombs_sent": sent.value, "front_cores_busy": round(share, 2)}


def bench_bomb(quick: bool) -> dict[str, Any]:
    bomb = make_bomb()
    scratch = Path(tempfile.mkdtemp(prefix="notarium-bomb-", dir=ROOT / "bench" / "out"))
    results: dict[str, Any] = {"bomb_bytes": len(bomb), "inflated_bytes": BOMB_INFLATED}
    try:
        directory = scratch / "ledger"
        init_service_cli(directory)
        svc = start_server(directory)
        try:
            results["cpu"] = cpu_per_bomb(svc, bomb, 3 if quick else BOMBS)
            print(f"  bomb: cpu: {results['cpu']}", flush=True)
            seconds = LATENCY_S / 2 if quick else LATENCY_S
            results["latency_alone"] = _summary(append_latencies(svc, seconds))
            print(f"  bomb: alone: {results['latency_alone']}", flush=True)
            results["latency_with_bombs"] = latency_under_bombs(svc, bomb, BOMB_CLIENTS, seconds)
            print(f"  bomb: with {BOMB_CLIENTS} bomb clients: {results['latency_with_bombs']}", flush=True)
        finally:
            stop_server(svc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return results


if __name__ == "__main__":
    import json

    print(json.dumps(bench_bomb("--quick" in sys.argv), indent=2))
