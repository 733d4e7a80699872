"""Run `notarium serve` (or `run`) as a real process on a free port, for end-to-end tests."""

from __future__ import annotations

import datetime
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from notarium.auth.identity import acl_fingerprint
from notarium.ledger.identity import cert_pem, private_pem, self_signed_identity

_SERVING = re.compile(r"serving (https://[^\s]+)")


@dataclass
class Server:
    url: str
    directory: Path
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    @property
    def service_cert(self) -> Path:
        return self.directory / "service_cert.pem"

    @property
    def admin_pem(self) -> Path:
        return self.directory / "user0_combined.pem"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


def clean_env() -> dict[str, str]:
    """The environment without the system CA bundle variables (tests pin the service cert)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def running(
    directory: Path,
    *args: str,
    command: str = "serve",
    verbose: int = 0,
    timeout: float = 30,
    port: int = 0,
    open_files: int | tuple[int, int] | None = None,
) -> Iterator[Server]:
    """Start the server on ``port`` (0: a free one) and yield it once it listens; SIGTERM it on exit.
    ``verbose``: 1 logs requests (INFO), 2 everything (DEBUG); the output holds both server processes'.
    ``open_files``: the server's open-files limit (soft and hard, or both the same), as a host's
    ulimit would set it."""
    flags = ["-" + "v" * verbose] if verbose else []

    def limit_open_files() -> None:  # in the child, before exec
        if open_files is not None:
            soft, hard = open_files if isinstance(open_files, tuple) else (open_files, open_files)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    proc = subprocess.Popen(
        [sys.executable, "-m", "notarium", *flags, command, str(directory), "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(),
        preexec_fn=limit_open_files if open_files is not None else None,  # noqa: PLW1509  (one setrlimit)
    )
    url, lines = announced(proc, _SERVING, "the server", timeout)
    server = Server(url, directory, proc, lines)
    try:
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def new_identity(directory: Path, name: str) -> tuple[Path, str]:
    """A self-signed EC client identity, as ACL users make them: the combined PEM (certificate and
    unencrypted PKCS#8 key, what the SDK's certificate credential takes) and its ACL user id."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed_identity(key, name, now=datetime.datetime.now(datetime.UTC), days=30)
    path = directory / f"{name}_combined.pem"
    path.write_bytes(cert_pem(cert) + private_pem(key))
    return path, acl_fingerprint(cert.public_bytes(Encoding.DER))


def settled_committed(read: Callable[[], str]) -> str:
    """The committed TxId once nothing is pending: ``read()`` (e.g. ``/readyz``'s ``committed``)
    gives the same answer twice, 100 ms apart."""
    last = None
    for _ in range(100):
        now = read()
        if now == last:
            return str(now)
        last = now
        time.sleep(0.1)
    raise AssertionError("the committed TxId never settled")


def announced(
    proc: subprocess.Popen[str], pattern: re.Pattern[str], what: str, timeout: float
) -> tuple[str, list[str]]:
    """Collect ``proc``'s output lines (in a thread, for its whole life) until a line matches
    ``pattern``: its first group, and the list the lines keep going to."""
    lines: list[str] = []
    found: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = pattern.search(line)
            if m and not found:
                found.append(m.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.05):
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{what} did not start:\n" + "".join(lines))
    if not found:
        proc.wait(5)
        raise RuntimeError(f"{what} exited:\n" + "".join(lines))
    return found[0], lines
