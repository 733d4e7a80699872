"""Real PostgreSQL servers for the tests: a throwaway cluster, or a primary with a synchronous standby.

The server binaries are the ones of the machine: ``$NOTARIUM_PG_BIN`` if set, else the newest
``/usr/lib/postgresql/<version>/bin``. PostgreSQL refuses to run as root, so when the tests run as
root every server program (``initdb``, ``postgres``, ``pg_basebackup``, ``pg_ctl promote``) is
started as the ``postgres`` OS user (``subprocess``'s ``user=``/``group=``); otherwise as the
current user. Each cluster lives in a fresh directory under the system temp dir (mode 0700, owned
by the user that runs the server), listens on 127.0.0.1 only, on a free port, with its unix socket
inside its data directory, and trusts every local connection (``initdb -A trust``): a password in
a DSN is ignored.

Cleanup, even when a test fails or the test process dies: fixtures and context managers stop
(``immediate``) and remove their clusters; clusters still running at exit are too (``atexit``);
the postmaster is a child of the test process that gets SIGQUIT (immediate shutdown) if that
process dies (Linux ``PR_SET_PDEATHSIG``); and directories left by a dead test process are removed
by the next one.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import psycopg

PG_USER = "postgres"
STANDBY_NAME = "standby1"
_START_ATTEMPTS = 3
_PREFIX = "notarium-pg-"
_OWNER = "owner.pid"  # in each cluster's directory: the pid of the test process that made it
_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
_live: set[PgCluster] = set()
_swept = False


def pg_bin() -> Path:
    """The directory of the PostgreSQL server programs."""
    env = os.environ.get("NOTARIUM_PG_BIN")
    if env:
        return Path(env)
    candidates = [p / "bin" for p in Path("/usr/lib/postgresql").glob("*") if (p / "bin" / "initdb").exists()]
    if not candidates:
        raise RuntimeError("no PostgreSQL server found: install it or set NOTARIUM_PG_BIN")
    return max(candidates, key=lambda p: float(p.parent.name) if p.parent.name.replace(".", "").isdigit() else 0.0)


def _as_server_user() -> dict[str, Any]:
    """``subprocess`` arguments that run a program as the user the server runs as."""
    if os.geteuid() != 0:
        return {}
    return {"user": PG_USER, "group": pwd.getpwnam(PG_USER).pw_gid, "extra_groups": []}


def _server_uid_gid() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(PG_USER)
    return entry.pw_uid, entry.pw_gid


def _server_env() -> dict[str, str]:
    env = {**os.environ, "LC_ALL": "C", "PGTZ": "UTC"}
    if os.geteuid() == 0:
        env["HOME"] = pwd.getpwnam(PG_USER).pw_dir
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _settings(values: dict[str, str | int]) -> str:
    lines = []
    for key, value in values.items():
        quoted = str(value) if isinstance(value, int) else "'" + value.replace("'", "''") + "'"
        lines.append(f"{key} = {quoted}\n")
    return "".join(lines)


class PgCluster:
    """One PostgreSQL server in a directory of its own. Use :meth:`create`, or as a context manager."""

    def __init__(self, base: Path, port: int) -> None:
        self.base = base
        self.data = base / "data"
        self.log = base / "server.log"
        self.port = port
        self.bin = pg_bin()
        self._server: subprocess.Popen[bytes] | None = None
        _live.add(self)

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    # -- lifecycle -----------------------------------------------------------------------------

    @classmethod
    def create(cls, settings: dict[str, str | int] | None = None) -> PgCluster:
        """``initdb`` a fresh cluster with ``settings`` (postgresql.conf) and start it."""
        cluster = cls(_make_base(), free_port())
        try:
            cluster._run(
                "initdb",
                "-D",
                str(cluster.data),
                "-A",
                "trust",
                "-U",
                PG_USER,
                "--no-sync",
                "--no-instructions",
                "-E",
                "UTF8",
                "--locale=C",
            )
            cluster._configure({**(settings or {})})
            cluster._start_on_a_free_port()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def _configure(self, extra: dict[str, str | int]) -> None:
        base: dict[str, str | int] = {
            "listen_addresses": "127.0.0.1",
            "port": self.port,
            "unix_socket_directories": str(self.data),
            "max_connections": 40,
            "shared_buffers": "32MB",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        self._append_conf("postgresql.conf", {**base, **extra})

    def _append_conf(self, name: str, values: dict[str, str | int]) -> None:
        """Append settings to a config file of the data directory: the last occurrence wins."""
        with (self.data / name).open("a") as f:
            f.write("\n" + _settings(values))

    def _start_on_a_free_port(self) -> None:
        for attempt in range(_START_ATTEMPTS):
            try:
                self.start()
                return
            except RuntimeError:
                # another process may have taken the port between our probe and the bind
                if attempt == _START_ATTEMPTS - 1 or "already in use" not in self.log_text():
                    raise
                self.port = free_port()
                self._append_conf("postgresql.conf", {"port": self.port})

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (a child of this process) and wait until it accepts connections."""
        if self.running:
            return
        with self.log.open("ab") as log:
            self._server = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data)],
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_server_env(),
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (runs before exec: no Python state touched)
                **_as_server_user(),
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._server.poll() is not None:
                raise RuntimeError(f"postgres exited ({self._server.returncode}):\n{self.log_text()[-4000:]}")
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop("immediate")
                    raise RuntimeError(f"postgres not ready after {timeout}s:\n{self.log_text()[-4000:]}") from None
                time.sleep(0.02)

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast", timeout: float = 60.0) -> None:
        """Stop the server and wait until it is gone (``immediate`` is a crash: no shutdown checkpoint)."""
        server, self._server = self._server, None
        if server is None or server.poll() is not None:
            return
        server.send_signal(_STOP_SIGNALS[mode])
        try:
            server.wait(timeout)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            raise RuntimeError(f"postgres did not stop ({mode}) in {timeout}s") from None

    def destroy(self) -> None:
        """Stop the server at once (if running) and remove its directory. Safe to call twice."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            _live.discard(self)

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # -- use -----------------------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq URL for a database of this server, as the superuser ``postgres``."""
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.dsn(dbname), autocommit=True, connect_timeout=10)

    def psql(self, sql: str, params: Sequence[Any] | None = None, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one SQL statement (autocommit) and return its rows ([] if it returns none)."""
        with self.connect(dbname) as conn:
            cur = conn.execute(sql.encode(), params)  # bytes: a query built at run time, not a literal
            return cur.fetchall() if cur.description else []

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.bin / program), *args],
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=_server_env(),
            **_as_server_user(),
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n"
                f"--- server log ---\n{self.log_text()[-4000:]}"
            )

    # -- replication ---------------------------------------------------------------------------

    @classmethod
    def primary_with_standby(cls) -> tuple[PgCluster, PgCluster]:
        """A primary and a *synchronous* streaming standby (``standby1``), both running.

        Returns once ``pg_stat_replication`` reports the standby ``sync``: from then on every
        commit on the primary returns only once the standby has flushed it (RPO 0).
        """
        primary = cls.create(
            {
                "wal_level": "replica",
                "max_wal_senders": 4,
                "synchronous_standby_names": STANDBY_NAME,
                "synchronous_commit": "on",
            }
        )
        try:
            standby = primary.make_standby()
        except BaseException:
            primary.destroy()
            raise
        return primary, standby

    def make_standby(self, name: str = STANDBY_NAME) -> PgCluster:
        """``pg_basebackup -R`` this server into a new standby, start it, wait until it is sync."""
        standby = PgCluster(_make_base(), free_port())
        try:
            standby._run(
                "pg_basebackup",
                "-D",
                str(standby.data),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                PG_USER,
                "-X",
                "stream",
                "-c",
                "fast",
                "-R",
                "--no-sync",
            )
            # the copied postgresql.conf is the primary's: give the standby its own port and socket,
            # and no synchronous standby of its own (else, once promoted, every commit would wait)
            standby._configure({"synchronous_standby_names": ""})
            conninfo = f"host=127.0.0.1 port={self.port} user={PG_USER} application_name={name}"
            standby._append_conf("postgresql.auto.conf", {"primary_conninfo": conninfo})
            standby._start_on_a_free_port()
            self.wait_sync(name)
        except BaseException:
            standby.destroy()
            raise
        return standby

    def wait_sync(self, name: str = STANDBY_NAME, timeout: float = 30.0) -> None:
        """Wait until the standby ``name`` streams from this server as a synchronous standby."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.psql("SELECT sync_state FROM pg_stat_replication WHERE application_name = %s", [name])
            if rows and rows[0][0] == "sync":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"standby {name} not sync after {timeout}s: {rows}")
            time.sleep(0.05)

    def promote(self, timeout: float = 30.0) -> None:
        """Promote this standby and wait until it accepts writes."""
        self._run("pg_ctl", "promote", "-w", "-t", str(int(timeout)), "-D", str(self.data))
        deadline = time.monotonic() + timeout
        while self.psql("SELECT pg_is_in_recovery()")[0][0]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"standby still in recovery {timeout}s after promote")
            time.sleep(0.05)


def _make_base() -> Path:
    """A fresh 0700 directory under the temp dir, owned by the user the server runs as."""
    _sweep()
    base = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=tempfile.gettempdir()))
    (base / _OWNER).write_text(str(os.getpid()))
    ids = _server_uid_gid()
    if ids is not None:
        os.chown(base, *ids)
    return base


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep() -> None:
    """Remove the cluster directories of test processes that died without cleaning up (once)."""
    global _swept  # noqa: PLW0603
    if _swept:
        return
    _swept = True
    for base in Path(tempfile.gettempdir()).glob(_PREFIX + "*"):
        try:
            owner = int((base / _OWNER).read_text())
        except (OSError, ValueError):
            continue  # being made right now, or not ours
        try:
            postmaster = (base / "data" / "postmaster.pid").read_text().split()[:1]
        except OSError:
            postmaster = []
        if not _alive(owner) and not any(_alive(int(p)) for p in postmaster if p.isdigit()):
            shutil.rmtree(base, ignore_errors=True)


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: get SIGQUIT (PostgreSQL's immediate shutdown) when the parent dies."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGQUIT)


def primary_with_standby() -> tuple[PgCluster, PgCluster]:
    """Shorthand for :meth:`PgCluster.primary_with_standby`."""
    return PgCluster.primary_with_standby()


@contextlib.contextmanager
def replicated_pair() -> Iterator[tuple[PgCluster, PgCluster]]:
    """A primary and its synchronous standby, both destroyed on exit (even if the test failed)."""
    primary, standby = PgCluster.primary_with_standby()
    try:
        yield primary, standby
    finally:
        standby.destroy()
        primary.destroy()


@atexit.register
def _destroy_leftovers() -> None:
    for cluster in list(_live):
        cluster.destroy()
