"""HTTPS load generator for notarium, run as its own process: ``python -m bench.loadgen URL MODE ...``.

Written for low client CPU, so that on a small machine most cycles go to the server:
asyncio protocols (no coroutine per request) over stdlib ``ssl`` with client certificates, N keep-alive
connections, HTTP/1.1 pipelining with a window of requests in flight per connection, request bytes
encoded once, and a minimal incremental response parser (status line, Content-Length, the
``x-ms-ccf-transaction-id`` header, body). A result is printed as one JSON object on stdout.

Modes:
  ping     GET /app/ping (authenticated no-op)            closed loop: ``window`` requests in flight
  append   POST /app/transactions, ``--payload`` bytes      per connection, refilled as answers arrive
  get      GET /app/transactions/{txid} from ``--txids``
  commit   open loop at ``--rate`` POSTs/s; time from sending a POST until its transaction is observed
           Committed by GET /app/transactions/{txid}/status polls on a separate set of connections
  ratio    ping and append in alternating phases of ``--phase`` seconds on the same connections, so
           that both see the same machine: on a shared VM whose speed drifts over seconds, this is
           the robust way to measure appends against the no-op (each rate counts only the answers
           of its own kind inside its own phases, after ``--settle`` seconds of changeover)

Runs end after ``--duration`` seconds (after ``--warmup``, which is not counted) or after exactly
``--requests`` requests; either way every wait is bounded (``--drain-timeout``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import os
import resource
import ssl
import sys
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

API_VERSION = "api-version=2022-05-13"
TXID_HEADER = b"x-ms-ccf-transaction-id"
MAX_SAVED_TXIDS = 200_000

Response = tuple[int, bytes | None, bytes | None]  # status, transaction-id header, body


class ProtocolError(Exception):
    pass


class ResponseParser:
    """Incremental HTTP/1.1 response parser for pipelined responses with a Content-Length.

    ``feed`` takes whatever bytes arrived and returns the responses they complete, in order:
    (status, value of x-ms-ccf-transaction-id or None, body or None). Header and body are copied
    only when asked for (``want_txid``, ``want_body``).
    """

    __slots__ = ("buf", "want_body", "want_txid")

    def __init__(self, *, want_txid: bool = False, want_body: bool = False) -> None:
        self.buf = bytearray()
        self.want_txid = want_txid
        self.want_body = want_body

    def feed(self, data: bytes) -> list[Response]:
        buf = self.buf
        buf += data
        out: list[Response] = []
        pos = 0
        while True:
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                break
            head = bytes(buf[pos:end])
            if not head.startswith(b"HTTP/1."):
                raise ProtocolError(f"not an HTTP/1.x status line: {head[:40]!r}")
            try:
                status = int(head[9:12])
            except ValueError:
                raise ProtocolError(f"bad status line: {head[:40]!r}") from None
            lower = head.lower()
            i = lower.find(b"\r\ncontent-length:")
            if i >= 0:
                j = lower.find(b"\r\n", i + 2)
                length = int(head[i + 17 : j if j >= 0 else len(head)])
            elif b"\r\ntransfer-encoding:" in lower:
                raise ProtocolError("chunked responses are not supported")
            else:
                length = 0  # 1xx/204/304 or an empty answer: the server always sends Content-Length
            start = end + 4
            if len(buf) - start < length:
                break
            txid = None
            if self.want_txid:
                k = lower.find(b"\r\n" + TXID_HEADER + b":")
                if k >= 0:
                    k += len(TXID_HEADER) + 3
                    m = lower.find(b"\r\n", k)
                    txid = head[k : m if m >= 0 else len(head)].strip()
            body = bytes(buf[start : start + length]) if self.want_body else None
            out.append((status, txid, body))
            pos = start + length
        if pos:
            del buf[:pos]
        return out


def parse_txid(raw: bytes) -> tuple[int, int]:
    view, _, seqno = raw.partition(b".")
    return int(view), int(seqno)


# --- requests, encoded once ----------------------------------------------------------------------


AUTH_HEADER = ""  # "Authorization: Bearer ...\r\n" with --token (else the client certificate authenticates)


def post_request(host: str, payload_bytes: int, collection: str = "bench") -> bytes:
    body = json.dumps({"contents": "x" * payload_bytes}, separators=(",", ":")).encode()
    head = (
        f"POST /app/transactions?collectionId={collection}&{API_VERSION} HTTP/1.1\r\n"
        f"Host: {host}\r\n{AUTH_HEADER}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def get_request(host: str, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{AUTH_HEADER}\r\n".encode()


def ping_request(host: str) -> bytes:
    return get_request(host, f"/app/ping?{API_VERSION}")


def entry_request(host: str, txid: str) -> bytes:
    return get_request(host, f"/app/transactions/{txid}?{API_VERSION}")


def status_request(host: str, txid: str) -> bytes:
    return get_request(host, f"/app/transactions/{txid}/status?{API_VERSION}")


def client_context(cacert: str | Path, cert: str | Path | None) -> ssl.SSLContext:
    """Verify the server against the service certificate (hostname checked), present the user's certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname on
    ctx.check_hostname = True
    ctx.load_verify_locations(str(cacert))
    if cert is not None:
        ctx.load_cert_chain(str(cert))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


# --- statistics ----------------------------------------------------------------------------------


def summary(values: Sequence[float], scale: float = 1000.0) -> dict[str, float | int]:
    """p50/p90/p99/max/mean of ``values`` (seconds), in milliseconds by default."""
    if not values:
        return {"count": 0}
    s = sorted(values)
    n = len(s)

    def pct(p: float) -> float:
        return round(s[min(n - 1, int(p * n))] * scale, 3)

    return {
        "count": n,
        "p50": pct(0.50),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "max": round(s[-1] * scale, 3),
        "mean": round(sum(s) / n * scale, 3),
    }


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def server_processes(pid: int) -> list[int]:
    """The server's processes: ``pid`` (the engine) and its children (the HTTP front), from /proc."""
    pids = [pid]
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                pids += [int(c) for c in f.read().split()]
    return pids


def process_name(pid: int) -> str:
    """``front`` for the HTTP front process, ``engine`` for the process that owns the ledger."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return str(pid)
    return "front" if b"notarium.server.front" in cmdline else "engine"


class ServerCpu:
    """CPU seconds of the server's processes (engine and HTTP front), per thread, from /proc (Linux only)."""

    def __init__(self, pid: int | None) -> None:
        self.pids = server_processes(pid) if pid is not None else []
        self.tick = os.sysconf("SC_CLK_TCK")
        self.start = self.sample()
        self.start_machine = machine_busy()

    def sample(self) -> dict[tuple[int, int], tuple[float, float]]:
        """(pid, tid) -> (user, system) CPU seconds."""
        out: dict[tuple[int, int], tuple[float, float]] = {}
        for pid in self.pids:
            with contextlib.suppress(OSError):
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with contextlib.suppress(OSError, ValueError, IndexError):
                        with open(f"/proc/{pid}/task/{tid}/stat") as f:
                            fields = f.read().rsplit(")", 1)[1].split()
                        out[(pid, int(tid))] = (int(fields[11]) / self.tick, int(fields[12]) / self.tick)
        return out

    def report(self, wall: float, client_cpu: float = 0.0) -> dict[str, Any]:
        if not self.pids or wall <= 0:
            return {}
        busy = machine_busy() - self.start_machine
        end = self.sample()
        used = {
            k: (u - self.start.get(k, (0.0, 0.0))[0], st - self.start.get(k, (0.0, 0.0))[1])
            for k, (u, st) in end.items()
        }
        user = sum(u for u, _ in used.values())
        system = sum(st for _, st in used.values())
        total = user + system
        processes: dict[str, dict[str, Any]] = {}
        for pid in self.pids:
            threads = sorted((u + st for (p, _t), (u, st) in used.items() if p == pid), reverse=True)
            main = sum(u + st for (p, t), (u, st) in used.items() if p == pid and t == pid)
            processes[process_name(pid)] = {
                "util": round(sum(threads) / wall, 3),
                "main_thread_util": round(main / wall, 3),
                "busiest_threads_util": [round(v / wall, 3) for v in threads[:4] if v > 0],
            }
        return {
            "server_cpu_s": round(total, 2),
            "server_cpu_util": round(total / wall, 3),  # 1.0 = one core busy
            "server_processes": processes,
            "server_kernel_share": round(system / total, 3) if total > 0 else None,
            # what the rest of this shared machine took meanwhile, in cores (neither server nor load generator)
            "others_cpu_util": round(max(0.0, busy - total - client_cpu) / wall, 3),
        }


# --- connections ---------------------------------------------------------------------------------


class Conn(asyncio.Protocol):
    """One keep-alive TLS connection; requests are pipelined, answers come back in order."""

    def __init__(self, owner: Any, *, want_txid: bool, want_body: bool) -> None:
        self.owner = owner
        self.parser = ResponseParser(want_txid=want_txid, want_body=want_body)
        self.inflight: deque[tuple[float, Any]] = deque()  # (send time, tag) per request in flight
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, requests: list[bytes], tags: Sequence[Any] | None = None) -> None:
        if self.transport is None or self.lost or not requests:
            return
        now = time.perf_counter()
        if tags is None:
            self.inflight.extend((now, None) for _ in requests)
        else:
            self.inflight.extend((now, t) for t in tags)
        self.transport.write(requests[0] if len(requests) == 1 else b"".join(requests))

    def data_received(self, data: bytes) -> None:
        try:
            responses = self.parser.feed(data)
        except (ProtocolError, ValueError) as exc:
            self.owner.on_error(self, f"protocol: {exc}")
            if self.transport is not None:
                self.transport.abort()
            return
        if responses:
            self.owner.on_responses(self, responses)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.owner.on_lost(self, exc)

    def close(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.close()


async def open_connections(
    n: int, host: str, port: int, ctx: ssl.SSLContext, factory: Callable[[], Conn], timeout: float
) -> list[Conn]:
    loop = asyncio.get_running_loop()

    async def one() -> Conn:
        _, proto = await loop.create_connection(factory, host, port, ssl=ctx, server_hostname=host)
        return proto

    conns: list[Conn] = []
    for start in range(0, n, 16):  # a few handshakes at a time: no connect storm on the accept queue
        batch = [one() for _ in range(min(16, n - start))]
        conns.extend(await asyncio.wait_for(asyncio.gather(*batch), timeout))
    return conns


# --- closed loop: ping, append, get --------------------------------------------------------------


class ClosedLoop:
    """Keep ``window`` requests in flight on every connection until the run ends."""

    def __init__(self, args: argparse.Namespace, requests: list[bytes]) -> None:
        self.args = args
        self.requests = requests
        self.next_index = 0
        self.remaining = args.requests if args.requests else None  # request budget (count mode)
        self.sending = True
        self.measuring = False
        self.latencies = array("d")
        self.completed = 0  # answers received while measuring
        self.total_answers = 0
        self.sent = 0
        self.statuses: Counter[int] = Counter()
        self.conn_errors: list[str] = []
        self.mismatched = 0
        self.expect: bytes | None = args.expect.encode() if args.expect else None
        self.txids: list[bytes] = []
        self.save_txids = bool(args.txids_out)
        self.idle = asyncio.Event()
        self.inflight = 0

    def _take(self, n: int) -> list[bytes]:
        if not self.sending:
            return []
        if self.remaining is not None:
            n = min(n, self.remaining)
            self.remaining -= n
            if self.remaining == 0:
                self.sending = False
        reqs = self.requests
        if len(reqs) == 1:
            return [reqs[0]] * n
        i = self.next_index
        out = [reqs[(i + k) % len(reqs)] for k in range(n)]
        self.next_index = (i + n) % len(reqs)
        return out

    def fill(self, conn: Conn, n: int) -> None:
        batch = self._take(n)
        if batch:
            self.sent += len(batch)
            self.inflight += len(batch)
            conn.send(batch)

    def on_responses(self, conn: Conn, responses: list[Response]) -> None:
        now = time.perf_counter()
        measuring = self.measuring
        for status, txid, body in responses:
            sent_at, _ = conn.inflight.popleft()
            self.statuses[status] += 1
            if measuring:
                self.latencies.append(now - sent_at)
            if self.expect is not None and (body is None or self.expect not in body):
                self.mismatched += 1
            if self.save_txids and txid is not None and status == 200 and len(self.txids) < MAX_SAVED_TXIDS:
                self.txids.append(txid)
        n = len(responses)
        self.inflight -= n
        self.total_answers += n
        if measuring:
            self.completed += n
        self.fill(conn, n)
        if self.inflight == 0 and not self.sending:
            self.idle.set()

    def on_error(self, conn: Conn, message: str) -> None:
        self.conn_errors.append(message)

    def on_lost(self, conn: Conn, exc: Exception | None) -> None:
        if conn.inflight:
            self.conn_errors.append(f"connection lost with {len(conn.inflight)} in flight: {exc!r}")
            self.inflight -= len(conn.inflight)
            conn.inflight.clear()
        if self.inflight == 0 and not self.sending:
            self.idle.set()

    async def _finish(self, t0: float, cpu0: float, server: ServerCpu) -> tuple[float, float, dict[str, Any]]:
        """Stop sending; (wall seconds, client CPU seconds, server CPU report) since ``t0``; then
        wait (bounded) for the answers still in flight."""
        self.sending = False
        wall = time.perf_counter() - t0
        cpu = _cpu_self() - cpu0
        server_cpu = server.report(wall, cpu)
        if self.inflight == 0:
            self.idle.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), self.args.drain_timeout)
        return wall, cpu, server_cpu

    async def run(self, conns: list[Conn]) -> dict[str, Any]:
        args = self.args
        count_mode = self.remaining is not None
        self.measuring = count_mode
        cpu0, t0 = _cpu_self(), time.perf_counter()
        server = ServerCpu(args.server_pid)
        for c in conns:
            self.fill(c, args.window)
        if not count_mode:
            await asyncio.sleep(args.warmup)
            server = ServerCpu(args.server_pid)
            self.completed = 0
            self.latencies = array("d")
            cpu0, t0 = _cpu_self(), time.perf_counter()
            self.measuring = True
            await asyncio.sleep(args.duration)
            self.measuring = False
            wall, cpu, server_cpu = await self._finish(t0, cpu0, server)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle.wait(), args.drain_timeout + args.duration)
            wall = time.perf_counter() - t0
            cpu = _cpu_self() - cpu0
            server_cpu = server.report(wall, cpu)
        if self.save_txids:
            Path(args.txids_out).write_bytes(b"\n".join(self.txids) + b"\n")
        errors = sum(v for k, v in self.statuses.items() if k != 200)
        return {
            "mode": args.mode,
            "connections": len(conns),
            "window": args.window,
            "duration_s": round(wall, 3),
            "requests": self.completed,
            "rate": round(self.completed / wall, 1) if wall > 0 else 0.0,
            "sent": self.sent,
            "answered": self.total_answers,
            "unanswered": self.inflight,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": errors + len(self.conn_errors),
            "conn_errors": self.conn_errors[:10],
            "unexpected_bodies": self.mismatched if self.expect is not None else None,
            "latency_ms": summary(self.latencies),
            "client_cpu_s": round(cpu, 2),
            "client_cpu_util": round(cpu / wall, 3) if wall > 0 else None,
            **server_cpu,
        }


class Alternating(ClosedLoop):
    """Mode ``ratio``: the closed loop of :class:`ClosedLoop`, its request kind switching between
    ping and append every ``--phase`` seconds. Each kind's rate counts its own answers inside its own
    phases only, after ``--settle`` seconds (the window of the previous kind drains meanwhile)."""

    KINDS = ("ping", "append")

    def __init__(self, args: argparse.Namespace, kinds: dict[str, list[bytes]]) -> None:
        super().__init__(args, kinds["ping"])
        self.kinds = kinds
        self.kind = "ping"
        self.counting_from = float("inf")
        self.counts: Counter[str] = Counter()

    def fill(self, conn: Conn, n: int) -> None:
        batch = self._take(n)
        if batch:
            self.sent += len(batch)
            self.inflight += len(batch)
            conn.send(batch, [self.kind] * len(batch))

    def on_responses(self, conn: Conn, responses: list[Response]) -> None:
        now = time.perf_counter()
        counting = now >= self.counting_from
        for status, txid, _body in responses:
            _, kind = conn.inflight.popleft()
            self.statuses[status] += 1
            if counting and kind == self.kind:
                self.counts[kind] += 1
            if self.save_txids and txid is not None and status == 200 and len(self.txids) < MAX_SAVED_TXIDS:
                self.txids.append(txid)
        n = len(responses)
        self.inflight -= n
        self.total_answers += n
        self.fill(conn, n)
        if self.inflight == 0 and not self.sending:
            self.idle.set()

    def _switch(self, kind: str) -> None:
        self.kind = kind
        self.requests = self.kinds[kind]

    async def run(self, conns: list[Conn]) -> dict[str, Any]:
        args = self.args
        for c in conns:
            self.fill(c, args.window)
        for i in range(max(1, round(args.warmup / args.phase))):  # warm up both kinds, not counted
            self._switch(self.KINDS[i % 2])
            await asyncio.sleep(args.phase)
        seconds: Counter[str] = Counter()
        front_cpu: Counter[str] = Counter()
        server = ServerCpu(args.server_pid)
        pairs: list[dict[str, float]] = []
        cpu0, t0 = _cpu_self(), time.perf_counter()
        for i in range(args.phases):
            kind = self.KINDS[i % 2]
            self._switch(kind)
            await asyncio.sleep(args.settle)
            before_n, before_cpu = self.counts[kind], _front_cpu(server)
            self.counting_from = start = time.perf_counter()
            await asyncio.sleep(args.phase - args.settle)
            self.counting_from = float("inf")
            took = time.perf_counter() - start
            n, cpu = self.counts[kind] - before_n, _front_cpu(server) - before_cpu
            seconds[kind] += took
            front_cpu[kind] += cpu
            if kind == "ping":
                pairs.append({"ping": n / took})
            else:
                pairs[-1]["append"] = n / took
        wall, client_cpu, server_cpu = await self._finish(t0, cpu0, server)
        if self.save_txids:
            Path(args.txids_out).write_bytes(b"\n".join(self.txids) + b"\n")
        rates = {k: self.counts[k] / seconds[k] for k in self.KINDS if seconds[k] > 0}
        ratios = sorted(p["append"] / p["ping"] for p in pairs if "append" in p and p["ping"] > 0)
        errors = sum(v for k, v in self.statuses.items() if k != 200)
        return {
            "mode": args.mode,
            "connections": len(conns),
            "window": args.window,
            "phases": args.phases,
            "phase_s": args.phase,
            "settle_s": args.settle,
            "duration_s": round(wall, 3),
            "ping_rate": round(rates.get("ping", 0.0), 1),
            "append_rate": round(rates.get("append", 0.0), 1),
            # over all phases: counted answers over counted seconds, for each kind
            "ratio": round(rates["append"] / rates["ping"], 3) if rates.get("ping") and "append" in rates else None,
            "ratio_per_pair": {
                "median": round(ratios[len(ratios) // 2], 3) if ratios else None,
                "min": round(ratios[0], 3) if ratios else None,
                "max": round(ratios[-1], 3) if ratios else None,
            },
            # front CPU microseconds per answer of each kind (what decides the ratio when the front is the limit)
            "front_cpu_us_per_request": {
                k: round(front_cpu[k] / self.counts[k] * 1e6, 1) for k in self.KINDS if self.counts[k]
            },
            # the front's CPU use in each kind's counted seconds (1.0: a core busy, the front is the limit)
            "front_util": {k: round(front_cpu[k] / seconds[k], 3) for k in self.KINDS if seconds[k] > 0},
            "sent": self.sent,
            "answered": self.total_answers,
            "unanswered": self.inflight,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": errors + len(self.conn_errors),
            "conn_errors": self.conn_errors[:10],
            "client_cpu_util": round(client_cpu / wall, 3) if wall > 0 else None,
            **server_cpu,
        }


def _front_cpu(server: ServerCpu) -> float:
    """CPU seconds the HTTP front process has used so far (0 without --server-pid)."""
    return sum(u + st for (pid, _tid), (u, st) in server.sample().items() if process_name(pid) == "front")


# --- open loop: commit latency -------------------------------------------------------------------


class CommitLatency:
    """POST at a fixed rate (open loop); observe when each transaction becomes Committed.

    Polling: every ``poll_interval`` a GET /app/transactions/{txid}/status is sent, on the poll
    connections, for the oldest transaction not yet seen Committed (at most ``window`` polls in
    flight). Each answer carries two facts: the polled transaction's state in the body, and, in its
    x-ms-ccf-transaction-id header, the id of the last committed transaction (CCF semantics: the
    server stamps every response that is not an append with it). Commit is in seqno order, so a
    transaction counts as Committed when the first answer received after its POST's response shows
    a committed id at or beyond it; its latency runs from the moment its POST was written to the
    socket to the moment that answer was received. The figure is an upper bound, coarse by up to one
    poll interval plus one poll round trip.
    """

    def __init__(self, args: argparse.Namespace, host: str) -> None:
        self.args = args
        self.host = host
        self.post = post_request(host, args.payload, args.collection)
        self.post_conns: list[Conn] = []
        self.poll_conns: list[Conn] = []
        self.rr = 0
        self.poll_rr = 0
        self.posted = 0
        self.measured_posts = 0
        self.sending = True
        self.pending: list[tuple[int, int, float, bool]] = []  # heap of (seqno, view, sent_at, measured)
        self.committed_view = -1
        self.committed_seqno = -1
        self.commit_latencies = array("d")
        self.post_latencies = array("d")
        self.poll_latencies = array("d")
        self.lag = array("d")
        self.polls = 0
        self.poll_inflight = 0
        self.statuses: Counter[int] = Counter()
        self.poll_statuses: Counter[int] = Counter()
        self.conn_errors: list[str] = []
        self.inconsistent = 0
        self.post_inflight = 0
        self.skipped = 0

    # connections call back into these

    def on_responses(self, conn: Conn, responses: list[Response]) -> None:
        now = time.perf_counter()
        if conn.parser.want_body:
            self._on_polls(conn, responses, now)
            return
        for status, txid, _ in responses:
            sent_at, measured = conn.inflight.popleft()
            self.post_inflight -= 1
            self.statuses[status] += 1
            if measured:
                self.post_latencies.append(now - sent_at)
            if status == 200 and txid is not None:
                view, seqno = parse_txid(txid)
                heapq.heappush(self.pending, (seqno, view, sent_at, measured))

    def _on_polls(self, conn: Conn, responses: list[Response], now: float) -> None:
        for status, txid, body in responses:
            sent_at, polled = conn.inflight.popleft()
            self.poll_inflight -= 1
            self.poll_statuses[status] += 1
            self.poll_latencies.append(now - sent_at)
            if status != 200 or txid is None:
                continue
            view, seqno = parse_txid(txid)
            self.committed_view, self.committed_seqno = max((self.committed_view, self.committed_seqno), (view, seqno))
            if body is not None and b'"Committed"' in body and polled[1] > self.committed_seqno:
                self.inconsistent += 1  # the body says committed beyond the committed id: never expected
        pending = self.pending
        while pending and pending[0][0] <= self.committed_seqno and pending[0][1] <= self.committed_view:
            _, _, sent_at, measured = heapq.heappop(pending)
            if measured:
                self.commit_latencies.append(now - sent_at)

    def on_error(self, conn: Conn, message: str) -> None:
        self.conn_errors.append(message)

    def on_lost(self, conn: Conn, exc: Exception | None) -> None:
        if conn.inflight:
            self.conn_errors.append(f"connection lost with {len(conn.inflight)} in flight: {exc!r}")

    # timers

    def _tick_posts(self, t_start: float, t_measure: float, t_end: float) -> None:
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        if now >= t_end:
            self.sending = False
            return
        due = int((now - t_start) * self.args.rate) - self.posted - self.skipped
        if due > 0:
            if self.post_inflight + due > self.args.max_inflight:  # bounded: count, do not queue
                self.skipped += due
            else:
                measured = now >= t_measure
                # when the batch is due: the lag of the oldest request of the batch behind its schedule
                first_due = t_start + (self.posted + self.skipped + 1) / self.args.rate
                self.lag.append(max(0.0, now - first_due))
                for _ in range(due):  # spread over the connections, one request each
                    conn = self.post_conns[self.rr]
                    self.rr = (self.rr + 1) % len(self.post_conns)
                    conn.send([self.post], [measured])
                self.posted += due
                self.post_inflight += due
                if measured:
                    self.measured_posts += due
        loop.call_later(0.001, self._tick_posts, t_start, t_measure, t_end)

    def _tick_polls(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        if time.perf_counter() >= deadline or (not self.sending and not self.pending and not self.post_inflight):
            return
        if self.pending and self.poll_inflight < self.args.window:
            seqno, view, _, _ = self.pending[0]
            conn = self.poll_conns[self.poll_rr]
            self.poll_rr = (self.poll_rr + 1) % len(self.poll_conns)
            conn.send([status_request(self.host, f"{view}.{seqno}")], [(view, seqno)])
            self.polls += 1
            self.poll_inflight += 1
        loop.call_later(self.args.poll_interval_ms / 1000, self._tick_polls, deadline)

    async def run(self, post_conns: list[Conn], poll_conns: list[Conn]) -> dict[str, Any]:
        args = self.args
        self.post_conns, self.poll_conns = post_conns, poll_conns
        loop = asyncio.get_running_loop()
        t_start = time.perf_counter()
        t_measure = t_start + args.warmup
        t_end = t_measure + args.duration
        deadline = t_end + args.drain_timeout
        server = ServerCpu(args.server_pid)
        cpu0 = _cpu_self()
        loop.call_soon(self._tick_posts, t_start, t_measure, t_end)
        loop.call_soon(self._tick_polls, deadline)
        await asyncio.sleep(args.warmup)
        server = ServerCpu(args.server_pid)
        cpu0 = _cpu_self()
        await asyncio.sleep(args.duration)
        wall = time.perf_counter() - t_measure
        cpu = _cpu_self() - cpu0
        server_cpu = server.report(wall, cpu)
        while time.perf_counter() < deadline and (self.pending or self.post_inflight):
            await asyncio.sleep(0.01)
        not_committed = sum(1 for p in self.pending if p[3])
        errors = sum(v for k, v in self.statuses.items() if k != 200)
        return {
            "mode": "commit",
            "target_rate": args.rate,
            "connections": len(post_conns),
            "poll_connections": len(poll_conns),
            "poll_interval_ms": args.poll_interval_ms,
            "duration_s": round(wall, 3),
            "posted": self.measured_posts,
            "posted_rate": round(self.measured_posts / wall, 1) if wall > 0 else 0.0,
            "skipped_over_max_inflight": self.skipped,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "poll_statuses": {str(k): v for k, v in sorted(self.poll_statuses.items())},
            "errors": errors + len(self.conn_errors) + sum(v for k, v in self.poll_statuses.items() if k != 200),
            "conn_errors": self.conn_errors[:10],
            "committed": len(self.commit_latencies),
            "not_committed": not_committed,
            "inconsistent_polls": self.inconsistent,
            "commit_latency_ms": summary(self.commit_latencies),
            "post_latency_ms": summary(self.post_latencies),
            "polls": self.polls,
            "poll_latency_ms": summary(self.poll_latencies),
            "schedule_lag_ms": summary(self.lag),
            "client_cpu_s": round(cpu, 2),
            "client_cpu_util": round(cpu / wall, 3) if wall > 0 else None,
            "method": (
                "POST-written to first status answer showing a committed id >= the entry's; polls every "
                f"{args.poll_interval_ms} ms for the oldest uncommitted entry (granularity: one poll interval "
                "plus one poll round trip)"
            ),
            **server_cpu,
        }


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.splitlines()[0])
    p.add_argument("url", help="https://127.0.0.1:PORT")
    p.add_argument("mode", choices=["ping", "append", "get", "commit", "ratio"])
    p.add_argument("--cacert", required=True, help="the service certificate (PEM)")
    p.add_argument("--cert", help="the user's certificate and key (combined PEM)")
    p.add_argument("--token", help="authenticate with this bearer token instead of a client certificate")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--window", type=int, default=8, help="requests in flight per connection (commit: polls)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds (ignored with --requests)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    p.add_argument("--requests", type=int, default=0, help="send exactly this many requests, then stop")
    p.add_argument("--payload", type=int, default=256, help="entry contents, in bytes")
    p.add_argument("--collection", default="bench")
    p.add_argument("--txids", help="file of transaction ids, one a line (mode get)")
    p.add_argument("--txids-out", help="write the transaction ids of answered appends here (mode append)")
    p.add_argument("--expect", help="count answers whose body lacks this text")
    p.add_argument("--rate", type=float, default=1000.0, help="POSTs per second (mode commit)")
    p.add_argument("--poll-connections", type=int, default=2)
    p.add_argument("--poll-interval-ms", type=float, default=2.0)
    p.add_argument("--max-inflight", type=int, default=20_000, help="open loop: most POSTs unanswered")
    p.add_argument("--drain-timeout", type=float, default=10.0, help="most seconds to wait for answers at the end")
    p.add_argument("--connect-timeout", type=float, default=30.0)
    p.add_argument("--phase", type=float, default=0.6, help="seconds per phase (mode ratio)")
    p.add_argument("--phases", type=int, default=40, help="measured phases, half of each kind (mode ratio)")
    p.add_argument("--settle", type=float, default=0.15, help="uncounted changeover at each phase (mode ratio)")
    p.add_argument("--server-pid", type=int, help="report this process's CPU use over the measured window")
    args = p.parse_args(argv)
    if args.connections < 1 or args.window < 1 or args.duration <= 0 or args.warmup < 0 or args.rate <= 0:
        p.error("connections, window, duration and rate must be positive")
    if args.mode == "ratio" and not (0 <= args.settle < args.phase and args.phases >= 2):
        p.error("mode ratio needs 0 <= --settle < --phase and at least 2 --phases")
    if args.mode == "get" and not args.txids:
        p.error("mode get needs --txids")
    if (args.cert is None) == (args.token is None):
        p.error("authenticate with --cert or with --token (one of them)")
    if urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        p.error("this load generator only targets the local machine")
    return args


def closed_loop_requests(args: argparse.Namespace, authority: str) -> list[bytes]:
    """The requests modes ping, append and get send, in turn."""
    if args.mode == "ping":
        return [ping_request(authority)]
    if args.mode == "append":
        return [post_request(authority, args.payload, args.collection)]
    txids = [t.strip() for t in Path(args.txids).read_text().split() if t.strip()]
    if not txids:
        raise SystemExit("no transaction ids in " + args.txids)
    return [entry_request(authority, t) for t in txids]


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    u = urlsplit(args.url)
    host, port = u.hostname or "127.0.0.1", u.port or 443
    authority = f"{host}:{port}"
    global AUTH_HEADER  # noqa: PLW0603  (the requests are encoded once, by module functions)
    if args.token is not None:
        AUTH_HEADER = f"Authorization: Bearer {args.token}\r\n"
    ctx = client_context(args.cacert, args.cert)
    if args.mode == "commit":
        runner = CommitLatency(args, authority)
        posts = await open_connections(
            args.connections,
            host,
            port,
            ctx,
            lambda: Conn(runner, want_txid=True, want_body=False),
            args.connect_timeout,
        )
        polls = await open_connections(
            args.poll_connections,
            host,
            port,
            ctx,
            lambda: Conn(runner, want_txid=True, want_body=True),
            args.connect_timeout,
        )
        try:
            return await runner.run(posts, polls)
        finally:
            for c in posts + polls:
                c.close()
    loop_: ClosedLoop
    if args.mode == "ratio":
        kinds = {"ping": [ping_request(authority)], "append": [post_request(authority, args.payload, args.collection)]}
        loop_ = Alternating(args, kinds)
    else:
        loop_ = ClosedLoop(args, closed_loop_requests(args, authority))
    want_txid = args.mode in ("append", "ratio") and bool(args.txids_out)
    conns = await open_connections(
        args.connections,
        host,
        port,
        ctx,
        lambda: Conn(loop_, want_txid=want_txid, want_body=args.expect is not None),
        args.connect_timeout,
    )
    try:
        return await loop_.run(conns)
    finally:
        for c in conns:
            c.close()
        await asyncio.sleep(0)  # let the transports close


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(amain(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
