"""`notarium audit` shows a progress bar on a terminal, and plain text otherwise."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

from notarium.ledger import EngineConfig, init_service, open_ledger


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    d = tmp_path / "svc"
    init_service(d)
    led = open_ledger(d, EngineConfig(chunk_size=2000))
    for i in range(300):
        tx = led.append_entry(f"entry {i}")
    led.wait_committed(tx, timeout=10)
    led.close()
    primary, secondary = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "notarium", "audit", str(d)],
        stdout=subprocess.PIPE,
        stderr=secondary,
        env=env,
    )
    os.close(secondary)
    seen = b""
    while True:
        ready, _, _ = select.select([primary], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=30)
    os.close(primary)
    assert proc.returncode == 0
    assert b"auditing" in seen  # the progress bar, drawn on the terminal (stderr)
    assert b"verified" in out  # the report, on stdout
    piped = subprocess.run([sys.executable, "-m", "notarium", "audit", str(d)], capture_output=True, check=True)
    assert b"auditing" not in piped.stderr  # no bar when stderr is not a terminal
