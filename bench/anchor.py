"""Anchoring's cost to appends (issue #19: "anchoring adds no measurable cost to appends").

Two real servers (``notarium serve``, each its own process): the watched ledger and the anchoring
ledger. One client appends 256-byte entries through ``notarium.client.Client``, one at a time, each
waiting until Committed (the latency a user of ``notarium append`` sees). A ``notarium anchor
--every 1`` process runs all along and is frozen (SIGSTOP) in the phases *without* anchoring and
thawed (SIGCONT) in the phases *with* it, alternating, so both modes share the same machine, server
and moment; the medians of each mode's latencies and their ratio are reported, with the number of
anchors written during the phases with anchoring (evidence that it was at work).
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.http import _env, init_service_cli, start_server, stop_server, wait_quiet
from notarium.client import Client

PAYLOAD = "x" * 256


def _profile(path: Path, url: str, directory: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                "endpoint": url,
                "service_cert": str(directory / "service_cert.pem"),
                "cert": str(directory / "user0_combined.pem"),
            }
        )
    )
    return path


def _phase(client: Client, seconds: float) -> list[float]:
    latencies = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        client.append(PAYLOAD, collection="bench")
        latencies.append(time.perf_counter() - start)
    return latencies


def bench_anchor(quick: bool) -> dict[str, Any]:
    pairs, seconds = (2, 2.5) if quick else (8, 4.0)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        watched_dir, anchoring_dir = scratch / "watched", scratch / "anchoring"
        init_service_cli(watched_dir)
        init_service_cli(anchoring_dir)
        watched, anchoring = start_server(watched_dir), start_server(anchoring_dir)
        anchored: list[str] = []
        daemon = None
        try:
            wp = _profile(scratch / "watched.json", watched.url, watched_dir)
            ap = _profile(scratch / "anchoring.json", anchoring.url, anchoring_dir)
            daemon = subprocess.Popen(
                [sys.executable, "-m", "notarium", "anchor", "--to", str(ap), "--profile", str(wp), "--every", "1"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=_env(),
            )
            out = daemon.stdout
            threading.Thread(target=lambda: anchored.extend(out or []), daemon=True).start()
            with Client(watched.url, watched.cacert, cert=watched.user_pem) as client:
                client.append("first")
                deadline = time.monotonic() + 60
                while not anchored:  # the anchorer is up and has anchored once
                    if time.monotonic() > deadline or daemon.poll() is not None:
                        raise RuntimeError("the anchor process did not anchor")
                    time.sleep(0.1)
                _phase(client, 1.0)  # warm-up
                without: list[float] = []
                with_anchor: list[float] = []
                anchors_during = 0
                pair_ratios = []
                for _ in range(pairs):
                    wait_quiet()
                    daemon.send_signal(signal.SIGSTOP)
                    alone = _phase(client, seconds)
                    daemon.send_signal(signal.SIGCONT)
                    before = len(anchored)
                    beside = _phase(client, seconds)
                    without += alone
                    with_anchor += beside
                    pair_ratios.append(round(statistics.median(beside) / statistics.median(alone), 3))
                    time.sleep(0.05)
                    anchors_during += len(anchored) - before
        finally:
            if daemon is not None:
                daemon.send_signal(signal.SIGCONT)
                daemon.terminate()
                daemon.wait(30)
            stop_server(watched)
            stop_server(anchoring)
    m_without, m_with = statistics.median(without), statistics.median(with_anchor)
    return {
        "what": "committed appends through notarium.client, one at a time; an `anchor --every 1` process "
        "frozen (without) or running (with), alternating phases",
        "phases": pairs,
        "phase_s": seconds,
        "appends_without": len(without),
        "appends_with": len(with_anchor),
        "median_ms_without": round(m_without * 1000, 3),
        "median_ms_with": round(m_with * 1000, 3),
        "p90_ms_without": round(statistics.quantiles(without, n=10)[-1] * 1000, 3),
        "p90_ms_with": round(statistics.quantiles(with_anchor, n=10)[-1] * 1000, 3),
        "with_over_without": round(m_with / m_without, 3),
        "per_pair_ratios": pair_ratios,  # the noise: how far one pair's ratio strays from 1
        "anchors_written_during_with_phases": anchors_during,
    }


if __name__ == "__main__":
    print(json.dumps(bench_anchor("--quick" in sys.argv), indent=2))
