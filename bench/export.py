"""Export of a large ledger over HTTPS: ``export_ledger`` (download, check size and sha256, verify
every chunk's entries and signatures against the pinned service certificate, write, rename) vs,
in the same run, (a) reading the same chunk files from disk and (b) downloading them over the same
HTTPS connection without verifying or writing anything. If the export is about as fast as (b),
it is bounded by the network path, not by its own CPU."""

from __future__ import annotations

import resource
import shutil
import ssl
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.http import init_service_cli, prefill, start_server, stop_server
from notarium.client.export import export_ledger

ROOT = Path(__file__).resolve().parent.parent


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _http(url: str, directory: Path) -> httpx.Client:
    ctx = ssl.create_default_context(cadata=(directory / "service_cert.pem").read_text())
    ctx.load_cert_chain(str(directory / "user0_combined.pem"))
    return httpx.Client(base_url=url, verify=ctx, timeout=120)


def bench_export(quick: bool) -> dict[str, Any]:
    total = 200_000 if quick else 2_100_000  # 256-byte entries: about 1.1 GB of chunk files in the full run
    scratch = Path(tempfile.mkdtemp(prefix="notarium-export-", dir=ROOT / "bench" / "out"))
    try:
        d = scratch / "svc"
        init_service_cli(d)
        _, fill_s = prefill(d, total)
        files = sorted((d / "ledger").glob("*.committed"))
        size = sum(f.stat().st_size for f in files)
        print(f"  export: pre-filled {total} entries ({size / 1e6:.0f} MB) in {fill_s:.1f} s", flush=True)
        disk, raw, export, export_cpu = [], [], [], []
        svc = start_server(d)
        try:
            with _http(svc.url, d) as http:
                listing = http.get("/app/ledger/chunks", params={"api-version": "2022-05-13"}).json()["chunks"]
                for _ in range(3):
                    start = time.perf_counter()
                    for f in files:
                        with open(f, "rb") as fh:
                            while fh.read(1 << 20):
                                pass
                    disk.append(time.perf_counter() - start)

                    start = time.perf_counter()
                    for c in listing:
                        with http.stream(
                            "GET", f"/app/ledger/chunks/{c['name']}", params={"api-version": "2022-05-13"}
                        ) as r:
                            for _chunk in r.iter_bytes(1 << 20):
                                pass
                    raw.append(time.perf_counter() - start)

                    out = scratch / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    cpu0, start = _cpu(), time.perf_counter()
                    result = export_ledger(http, out, (d / "service_cert.pem").read_bytes())
                    elapsed = time.perf_counter() - start
                    export.append(elapsed)
                    export_cpu.append((_cpu() - cpu0) / elapsed)
                    if result.total_bytes != size:
                        raise SystemExit(f"exported {result.total_bytes} bytes of {size}")
        finally:
            stop_server(svc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    mb = size / 1e6
    d_s, r_s, e_s = statistics.median(disk), statistics.median(raw), statistics.median(export)
    return {
        "entries": total,
        "ledger_mb": round(mb, 1),
        "chunks": len(files),
        "disk_read_mb_per_s": round(mb / d_s),
        "https_download_mb_per_s": round(mb / r_s),
        "export_mb_per_s": round(mb / e_s),
        "export_over_download": round(r_s / e_s, 2),
        "export_client_cpu_util": round(statistics.median(export_cpu), 2),
        "export_s": [round(x, 2) for x in export],
        "download_s": [round(x, 2) for x in raw],
        "disk_s": [round(x, 2) for x in disk],
    }
