"""The PostgreSQL log (notarium.ledger.storage.postgres) against a real PostgreSQL server.

The schema is created once and idempotently; rows come back byte for byte; the tail is strict (no
gap, no overlap, nothing written on refusal); the lease row fences every write: a takeover waits
for an in-flight write and every later write of the old holder fails; a dropped connection is
reopened (and a COMMIT whose outcome is unknown says so); a multi-host DSN follows a PostgreSQL
failover to the promoted synchronous standby without losing a committed row; the password never
shows.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from notarium.errors import FencedError, StorageError, StoreUnavailableError
from notarium.ledger.storage.postgres import SCHEMA_VERSION, Lease, PostgresLog, Row
from pg import PgCluster, free_port, replicated_pair

PASSWORD = "s3cret-Pa55word"  # noqa: S105 (the servers trust: it is never checked)


def rows(first: int, count: int, view: int, *, signature_every: int = 0) -> list[Row]:
    """Contiguous rows of ~400 random bytes (zero bytes included)."""
    return [
        (s, view, bool(signature_every) and s % signature_every == 0, b"\x00" + os.urandom(398) + b"\xff")
        for s in range(first, first + count)
    ]


@pytest.fixture
def log(pg_dsn: str) -> Iterator[PostgresLog]:
    with PostgresLog(pg_dsn) as opened:
        yield opened


@pytest.fixture
def other(pg_dsn: str, log: PostgresLog) -> Iterator[PostgresLog]:
    """A second node's handle on the same database."""
    with PostgresLog(pg_dsn) as opened:
        yield opened


def primary(log: PostgresLog, holder: str = "n1", ttl_s: float = 30.0) -> int:
    view = log.try_acquire(holder, f"https://{holder}:8000", log.lease().view, ttl_s)
    assert view is not None
    return view


def count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM notarium.tx").fetchone()
        assert row is not None
        return int(row[0])


# -- schema --------------------------------------------------------------------------------------


def test_schema_is_created_once_and_reopening_keeps_everything(pg_dsn: str, log: PostgresLog) -> None:
    assert log.lease() == Lease(view=0, holder=None, address=None, expires_in_s=None)
    view = primary(log)
    log.append(view, "n1", rows(1, 3, view))
    with PostgresLog(pg_dsn) as again, PostgresLog(pg_dsn):
        assert again.last_seqno() == 3
        assert again.lease().view == view
        assert again.lease().holder == "n1"
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT value FROM notarium.meta").fetchall() == [(str(SCHEMA_VERSION),)]
        assert conn.execute("SELECT count(*) FROM notarium.lease").fetchone() == (1,)
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO notarium.lease (id, view) VALUES (2, 0)")


def test_concurrent_first_opens_create_the_schema_once(pg_dsn: str) -> None:
    errors: list[BaseException] = []

    def open_close() -> None:
        try:
            PostgresLog(pg_dsn).close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_close) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with PostgresLog(pg_dsn) as log:
        assert log.lease().view == 0


def test_a_newer_schema_is_refused(pg_dsn: str, log: PostgresLog) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE notarium.meta SET value = %s WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    with pytest.raises(StorageError, match=f"version {SCHEMA_VERSION + 1}, newer"):
        PostgresLog(pg_dsn)


# -- the log -------------------------------------------------------------------------------------


def test_append_and_read_roundtrip(log: PostgresLog) -> None:
    assert log.last_seqno() == 0
    assert log.last_signature() is None
    assert log.read(1) == []
    view = primary(log)
    written = rows(1, 250, view, signature_every=100)
    log.append(view, "n1", written[:100])
    log.append(view, "n1", written[100:])
    assert log.read(1) == written
    assert log.read(5, 9) == written[4:9]
    assert log.read(240, limit=3) == written[239:242]
    assert log.read(251) == []
    assert log.last_seqno() == 250
    assert log.last_signature() == (200, view)
    assert all(type(r[3]) is bytes and type(r[2]) is bool for r in log.read(1))
    log.append(view, "n1", [])  # nothing to write is fine
    assert log.last_seqno() == 250


def test_gap_and_overlap_are_refused_and_nothing_is_written(pg_dsn: str, log: PostgresLog) -> None:
    view = primary(log)
    with pytest.raises(StorageError, match="gap"):
        log.append(view, "n1", rows(2, 3, view))
    log.append(view, "n1", rows(1, 3, view))
    with pytest.raises(StorageError, match="gap"):
        log.append(view, "n1", rows(5, 3, view))
    with pytest.raises(StorageError, match="overlap"):
        log.append(view, "n1", rows(3, 3, view))
    with pytest.raises(StorageError, match="overlap"):
        log.append(view, "n1", rows(1, 1, view))
    with pytest.raises(ValueError, match="not contiguous"):
        log.append(view, "n1", [*rows(4, 2, view), *rows(7, 1, view)])
    assert count(pg_dsn) == 3
    assert log.last_seqno() == 3
    log.append(view, "n1", rows(4, 2, view))
    assert log.last_seqno() == 5


def test_truncate_after(log: PostgresLog) -> None:
    view = primary(log)
    log.append(view, "n1", rows(1, 10, view, signature_every=4))
    assert log.truncate_after(view, "n1", 6) == 4
    assert log.last_seqno() == 6
    assert log.last_signature() == (4, view)
    assert log.truncate_after(view, "n1", 6) == 0
    log.append(view, "n1", rows(7, 1, view))
    assert log.last_seqno() == 7


# -- the lease and fencing -----------------------------------------------------------------------


def test_after_a_takeover_the_old_holder_cannot_write(pg_dsn: str, log: PostgresLog, other: PostgresLog) -> None:
    old = log.try_acquire("n1", "https://n1", 0, 0.2)
    assert old == 1
    log.append(old, "n1", rows(1, 5, old))
    time.sleep(0.3)
    new = other.try_acquire("n2", "https://n2", old, 30)
    assert new == old + 1
    assert other.lease().holder == "n2"
    assert other.lease().address == "https://n2"

    with pytest.raises(FencedError, match=r"view 2, holder 'n2'"):
        log.append(old, "n1", rows(6, 3, old))
    with pytest.raises(FencedError):
        log.truncate_after(old, "n1", 0)
    assert not log.renew(old, "n1", 30)
    assert count(pg_dsn) == 5
    # the new holder writes on, and the old one fails also with the new view it did not win
    other.append(new, "n2", rows(6, 1, new))
    with pytest.raises(FencedError):
        log.append(new, "n1", rows(7, 1, new))
    assert [r[1] for r in log.read(1)] == [1, 1, 1, 1, 1, 2]


def test_a_takeover_waits_for_an_in_flight_write(pg_dsn: str, log: PostgresLog, other: PostgresLog) -> None:
    """The lease row lock orders them: the write committed first is seen by the new primary."""
    old = log.try_acquire("n1", "https://n1", 0, 0.2)
    assert old == 1
    log.append(old, "n1", rows(1, 2, old))
    # make the old primary's COMMIT slow: a deferred trigger sleeps at commit time, lease row locked
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN PERFORM pg_sleep(1.0); RETURN NULL; END $$"
        )
        conn.execute(
            "CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON notarium.tx DEFERRABLE INITIALLY DEFERRED"
            " FOR EACH ROW WHEN (NEW.seqno = 3) EXECUTE FUNCTION slow()"
        )
    time.sleep(0.3)  # the lease expires: the old primary does not know yet
    in_flight = rows(3, 100, old)
    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            log.append(old, "n1", in_flight)
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    writer = threading.Thread(target=write)
    writer.start()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # wait until the write sleeps in its COMMIT
        deadline = time.monotonic() + 30
        while not conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'PgSleep'"
        ).fetchall():
            assert time.monotonic() < deadline
            time.sleep(0.01)
    started = time.monotonic()
    new = other.try_acquire("n2", "https://n2", old, 30)
    waited = time.monotonic() - started
    writer.join()
    assert outcome == [None]
    assert new == old + 1
    assert waited > 0.2, "the takeover must wait for the row lock of the in-flight write"
    assert other.last_seqno() == 102  # every row committed before the takeover is visible
    assert other.read(3) == in_flight
    with pytest.raises(FencedError):
        log.append(old, "n1", rows(103, 1, old))
    assert count(pg_dsn) == 102


def test_renew_extends_until_lost(log: PostgresLog, other: PostgresLog) -> None:
    view = log.try_acquire("n1", "https://n1", 0, 5)
    assert view == 1
    expires = log.lease().expires_in_s
    assert expires is not None
    assert 0 < expires <= 5
    assert log.renew(view, "n1", 60)
    expires = log.lease().expires_in_s
    assert expires is not None
    assert 50 < expires <= 60
    assert not log.renew(view, "n2", 60)  # not the holder
    assert not log.renew(view + 1, "n1", 60)  # not the view
    assert log.renew(view, "n1", 0.1)
    time.sleep(0.2)
    assert not log.renew(view, "n1", 60), "an expired lease is not renewed, even with no takeover"
    expires = log.lease().expires_in_s
    assert expires is not None
    assert expires < 0
    assert other.try_acquire("n2", "https://n2", view, 60) == view + 1
    assert not log.renew(view, "n1", 60)


def test_release_lets_another_acquire_at_once(log: PostgresLog, other: PostgresLog) -> None:
    view = primary(log, "n1", ttl_s=60)
    assert other.try_acquire("n2", "https://n2", view, 60) is None
    other.release(view, "n2")  # not the holder: no effect
    assert other.try_acquire("n2", "https://n2", view, 60) is None
    log.release(view, "n1")
    assert other.try_acquire("n2", "https://n2", view, 60) == view + 1
    log.release(view, "n1")  # no longer held: no effect
    lease = other.lease()
    assert (lease.view, lease.holder) == (view + 1, "n2")
    assert lease.expires_in_s is not None
    assert lease.expires_in_s > 50
    assert not log.renew(view, "n1", 60)


def test_each_acquisition_bumps_the_view_by_one(log: PostgresLog, other: PostgresLog) -> None:
    handles = [log, other]
    for i in range(1, 6):
        handle = handles[i % 2]
        seen = handle.lease().view
        assert seen == i - 1
        assert handle.try_acquire(f"n{i}", f"https://n{i}", seen, 60) == i
        assert handle.try_acquire(f"n{i}", f"https://n{i}", seen, 60) is None  # a stale view never wins
        handle.release(i, f"n{i}")
    assert log.lease().view == 5
    assert log.try_acquire("late", "https://late", 3, 60) is None


def test_min_view_lifts_the_new_view(log: PostgresLog, other: PostgresLog) -> None:
    """A node that has seen a later view signed (a seeding node's own) takes the lease above it."""
    assert log.try_acquire("n1", "https://n1", 0, 60, min_view=7) == 7
    log.release(7, "n1")
    assert other.try_acquire("n2", "https://n2", 7, 60, min_view=3) == 8  # below view + 1: no effect
    assert other.lease().view == 8


def test_heartbeat_and_nodes(log: PostgresLog, other: PostgresLog) -> None:
    assert log.nodes() == []
    log.heartbeat("n2", "https://n2:1")
    other.heartbeat("n1", "https://n1:1")
    time.sleep(0.2)
    log.heartbeat("n2", "https://n2:2")
    nodes = other.nodes()
    assert [(n, a) for n, a, _ in nodes] == [("n1", "https://n1:1"), ("n2", "https://n2:2")]
    assert nodes[0][2] >= 0.2
    assert 0 <= nodes[1][2] < nodes[0][2]


# -- notifications -------------------------------------------------------------------------------


def test_an_append_wakes_a_waiting_follower(log: PostgresLog, other: PostgresLog) -> None:
    view = primary(log)
    assert other.wait_for_notify(5.0), "opening the listener may have missed one: True at once"
    started = time.monotonic()
    assert not other.wait_for_notify(0.2)
    assert time.monotonic() - started >= 0.15

    timer = threading.Timer(0.3, lambda: log.append(view, "n1", rows(1, 3, view)))
    timer.start()
    started = time.monotonic()
    try:
        assert other.wait_for_notify(20.0)
    finally:
        timer.join()
    assert time.monotonic() - started < 10
    assert other.last_seqno() == 3
    # a notification sent while nobody waited is not lost: it is delivered to the next wait
    log.append(view, "n1", rows(4, 1, view))
    assert other.wait_for_notify(5.0)
    assert not other.wait_for_notify(0.1)


# -- connections ---------------------------------------------------------------------------------


def test_a_dropped_connection_is_reopened(pg_dsn: str, log: PostgresLog, other: PostgresLog) -> None:
    view = primary(log)
    log.append(view, "n1", rows(1, 2, view))
    assert other.wait_for_notify(0)  # open the listener

    def kill_all() -> int:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            return len(
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = 'notarium'"
                ).fetchall()
            )

    assert kill_all() == 3  # both main connections and the listener
    assert log.read(1, 1)[0][0] == 1  # a read is retried on a fresh connection
    assert kill_all() == 1
    log.append(view, "n1", rows(3, 2, view))  # failed before COMMIT: retried
    assert log.last_seqno() == 4
    assert other.wait_for_notify(5.0)  # the listener dropped: it may have missed one, so True


def test_a_connection_lost_in_commit_is_an_unknown_outcome(pg_dsn: str, log: PostgresLog) -> None:
    view = primary(log)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5); RETURN NULL; END $$"
        )
        conn.execute(
            "CREATE CONSTRAINT TRIGGER die AFTER INSERT ON notarium.tx DEFERRABLE INITIALLY DEFERRED"
            " FOR EACH ROW WHEN (NEW.seqno = 1) EXECUTE FUNCTION die()"
        )
    with pytest.raises(StorageError, match="during COMMIT: outcome unknown") as info:
        log.append(view, "n1", rows(1, 2, view))
    assert not isinstance(info.value, FencedError)
    assert log.last_seqno() == 0  # here it had not committed: the caller learns it by re-reading
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP TRIGGER die ON notarium.tx")
    log.append(view, "n1", rows(1, 2, view))
    assert log.last_seqno() == 2


def test_a_multi_host_dsn_skips_a_dead_host(pg: PgCluster, pg_dsn: str) -> None:
    dbname = pg_dsn.rsplit("/", 1)[1]
    dead = free_port()
    with PostgresLog(f"postgresql://postgres@127.0.0.1:{dead},127.0.0.1:{pg.port}/{dbname}") as log:
        view = primary(log)
        log.append(view, "n1", rows(1, 2, view))
        assert log.last_seqno() == 2
    with pytest.raises(StorageError, match="cannot connect"):
        PostgresLog(f"postgresql://postgres@127.0.0.1:{dead}/{dbname}", connect_timeout=1)


def test_a_server_that_is_down_is_store_unavailable_and_a_lazy_log_opens_without_it() -> None:
    """What a node needs to outlive a PostgreSQL crash: every call fails with StoreUnavailableError
    (worth retrying) while the server is down, a log opened with ``connect=False`` needs no server
    until its first call, and both work again once the server is back."""
    with PgCluster.create() as server:
        dsn = server.dsn()
        with PostgresLog(dsn) as log:
            view = primary(log)
            log.append(view, "n1", rows(1, 2, view))
            assert log.wait_for_notify(0)  # the listener opened
            with pytest.raises(StorageError) as refused:
                log.read(1, limit=-1)  # a refusal by a running server is not "unavailable"
            assert not isinstance(refused.value, StoreUnavailableError)
            server.stop("immediate")
            for call in (
                lambda: log.read(1),
                log.last_seqno,
                log.lease,
                lambda: log.append(view, "n1", rows(3, 1, view)),
                lambda: log.renew(view, "n1", 30.0),
                lambda: log.heartbeat("n1", "https://n1:8000"),
            ):
                with pytest.raises(StoreUnavailableError):
                    call()
            assert log.wait_for_notify(0.1)  # the listener dropped: True (it may have missed one)
            with pytest.raises(StoreUnavailableError):
                log.wait_for_notify(0.1)  # and cannot reopen
            with pytest.raises(StoreUnavailableError, match="cannot connect"):
                PostgresLog(dsn, connect_timeout=1)  # connect=True: at once
            with PostgresLog(dsn, connect=False) as lazy:
                with pytest.raises(StoreUnavailableError):
                    lazy.last_seqno()
                server.start()
                assert lazy.last_seqno() == 2
            assert log.read(1, limit=10) == log.read(1)
            assert log.last_seqno() == 2
            log.append(view, "n1", rows(3, 1, view))
            assert log.last_seqno() == 3


def test_a_lazy_log_creates_the_schema_at_its_first_call(pg_dsn: str) -> None:
    with PostgresLog(pg_dsn, connect=False) as lazy:
        with psycopg.connect(pg_dsn) as conn:
            assert conn.execute("SELECT to_regclass('notarium.tx')").fetchone() == (None,)
        assert lazy.last_seqno() == 0
        assert lazy.lease().view == 0


def test_failover_to_the_synchronous_standby_loses_nothing() -> None:
    with replicated_pair() as (first, standby):
        # the standby is listed first: target_session_attrs=read-write must pass it by
        dsn = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{standby.port},127.0.0.1:{first.port}/postgres"
        with PostgresLog(dsn) as log:
            assert log.redacted_dsn.count("***") == 1
            view = primary(log)
            written = rows(1, 300, view, signature_every=50)
            for i in range(0, 300, 30):
                log.append(view, "n1", written[i : i + 30])
            assert log.wait_for_notify(0)

            first.stop("immediate")
            standby.promote()

            assert log.last_seqno() == 300  # reconnected, to the promoted standby
            assert log.read(1, limit=1000) == written
            assert log.last_signature() == (300, view)
            assert log.lease().holder == "n1"
            assert log.wait_for_notify(5.0)  # the listener dropped: True (it may have missed one)
            assert log.wait_for_notify(5.0)  # ... and reconnected: True again at once
            log.append(view, "n1", rows(301, 5, view))
            assert log.last_seqno() == 305
        assert standby.psql("SELECT count(*) FROM notarium.tx") == [(305,)]


# -- the password --------------------------------------------------------------------------------


def test_the_password_never_shows(pg: PgCluster, pg_dsn: str) -> None:
    dbname = pg_dsn.rsplit("/", 1)[1]
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{pg.port}/{dbname}?application_name=x"
    conninfo = f"host=127.0.0.1 port={pg.port} dbname={dbname} user=postgres password={PASSWORD}"
    for dsn in (url, conninfo, f"postgresql://postgres@127.0.0.1:{pg.port}/{dbname}?password={PASSWORD}"):
        with PostgresLog(dsn) as log:  # trust authentication: the password is ignored
            assert PASSWORD not in log.redacted_dsn
            assert "***" in log.redacted_dsn
            with pytest.raises(StorageError, match="LIMIT must not be negative") as info:
                log.read(1, limit=-1)  # a PostgreSQL error names the server, not the password
            assert PASSWORD not in str(info.value)
            assert str(pg.port) in str(info.value)
    with PostgresLog(url) as log:
        assert log.redacted_dsn == f"postgresql://postgres:***@127.0.0.1:{pg.port}/{dbname}?application_name=x"

    dead = free_port()
    for dsn in (
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:{dead}/{dbname}",
        f"host=127.0.0.1 port={dead} password={PASSWORD}",
        f"host=127.0.0.1 port={dead} password='{PASSWORD}' bogus_option=1",
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:{dead}/{dbname}?bogus_option=1",
        f"postgresql://postgres:{PASSWORD}@[bad",
    ):
        with pytest.raises(StorageError) as info:
            PostgresLog(dsn, connect_timeout=1)
        assert PASSWORD not in str(info.value)
        assert info.value.__cause__ is None or PASSWORD not in str(info.value.__cause__)
