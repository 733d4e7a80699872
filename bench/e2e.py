"""End-to-end encryption's cost to appends (issue #19: "an e2e append costs <= 1.2x a plain append
through the client, median ratio in the same run").

One real server (``notarium serve``, its own process). One client appends 256-byte entries through
``notarium.client``, one at a time, each waiting until Committed: plain (``Client.append``) and
sealed (``SealedCollection.append``: read the grants recorded since the last append — one small
listing —, seal under the current data key with a fresh content key, append, wait). Plain and
sealed phases alternate on the same server and moment; the medians of each mode's latencies and
their ratio are reported, and the client CPU time of one seal alone.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.http import init_service_cli, start_server, stop_server, wait_quiet
from notarium.client import Client
from notarium.client.e2e import ReaderKey, SealedCollection, crypto

PAYLOAD = "x" * 256


def _phase(append: Callable[[], object], seconds: float) -> list[float]:
    latencies = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        append()
        latencies.append(time.perf_counter() - start)
    return latencies


def bench_e2e(quick: bool) -> dict[str, Any]:
    pairs, seconds = (2, 2.0) if quick else (8, 4.0)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        directory = scratch / "ledger"
        init_service_cli(directory)
        server = start_server(directory)
        try:
            with Client(server.url, directory / "service_cert.pem", cert=directory / "user0_combined.pem") as client:
                writer, reader = ReaderKey.generate(), ReaderKey.generate()
                sealed = SealedCollection(client, "bench-sealed", writer, memory=scratch / "writer.seen")
                sealed.add_reader(reader.card)  # the collection's first key, for two readers

                def plain() -> object:
                    return client.append(PAYLOAD, collection="bench-plain")

                def e2e() -> object:
                    return sealed.append(PAYLOAD)

                _phase(plain, 1.0)  # warm-up
                _phase(e2e, 1.0)
                plains: list[float] = []
                seals: list[float] = []
                ratios = []
                for i in range(pairs):
                    wait_quiet()
                    first, second = (plain, e2e) if i % 2 == 0 else (e2e, plain)  # neither always goes first
                    a, b = _phase(first, seconds), _phase(second, seconds)
                    p, s = (a, b) if first is plain else (b, a)
                    plains += p
                    seals += s
                    ratios.append(round(statistics.median(s) / statistics.median(p), 3))
                key = sealed.ring.data_key(sealed.ring.current().kid)  # type: ignore[union-attr]
                assert key is not None
                start = time.perf_counter()
                for _ in range(2000):
                    crypto.seal(PAYLOAD, key, "bench-sealed")
                seal_us = (time.perf_counter() - start) / 2000 * 1e6
        finally:
            stop_server(server)
    m_plain, m_e2e = statistics.median(plains), statistics.median(seals)
    return {
        "what": "committed appends of 256 bytes through notarium.client, one at a time: plain vs sealed end to end "
        "(grants re-read, sealed, appended, waited), alternating phases",
        "phases": pairs,
        "phase_s": seconds,
        "appends_plain": len(plains),
        "appends_e2e": len(seals),
        "median_ms_plain": round(m_plain * 1000, 3),
        "median_ms_e2e": round(m_e2e * 1000, 3),
        "p90_ms_plain": round(statistics.quantiles(plains, n=10)[-1] * 1000, 3),
        "p90_ms_e2e": round(statistics.quantiles(seals, n=10)[-1] * 1000, 3),
        "e2e_over_plain": round(m_e2e / m_plain, 3),
        "per_pair_ratios": ratios,
        "seal_us": round(seal_us, 1),
    }


if __name__ == "__main__":
    print(json.dumps(bench_e2e("--quick" in sys.argv), indent=2))
