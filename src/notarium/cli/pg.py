"""``notarium pg``: the tamper-evident trail of a PostgreSQL database (docs/design/pg-trail.md).

``pg init`` · ``pg capture`` · ``pg verify`` · ``pg restore`` · ``pg status``. Each takes the
database with ``--db`` (a libpq connection string or ``postgresql://`` URL; ``$NOTARIUM_PG_DB``)
and the ledger from the usual connection options (``--profile``, ``$NOTARIUM_PROFILE``, ...).

Exit codes: 0 success (verify: the database is what the ledger says); 1 a refusal or failure (the
message says what to do); 2 bad usage; 3 verification failed (verify: rows differ, or the trail
has a gap; or a receipt or trail entry failed its check); 4 the ledger could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.markup import escape

from notarium.cli.ledger import EXIT_OK, EXIT_USAGE, EXIT_VERIFY, connection_options, with_client
from notarium.client.client import Client
from notarium.pgtrail import database as pgdb
from notarium.pgtrail.capture import Agent, CaptureConfig
from notarium.pgtrail.errors import TrailError
from notarium.pgtrail.prepare import init_trail
from notarium.pgtrail.restore import restore
from notarium.pgtrail.status import status
from notarium.pgtrail.trail import TrailLedger, default_collection
from notarium.pgtrail.verify import verify
from notarium.types import TxId


def register(sub: Any) -> None:
    pg = sub.add_parser(
        "pg", help="the tamper-evident trail of a PostgreSQL database", description=__doc__.split("\n\n")[0]
    )
    commands = pg.add_subparsers(dest="pg_command", required=True, metavar="COMMAND")

    def command(name: str, text: str, handler: Callable[[argparse.Namespace, Client], int]) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = commands.add_parser(name, help=text, description=text)
        p.add_argument(
            "--db", metavar="DSN", default=os.environ.get("NOTARIUM_PG_DB"), help="the database ($NOTARIUM_PG_DB)"
        )
        p.add_argument(
            "--collection", metavar="ID", help="the trail's collection in the ledger (default pg:<database>)"
        )
        connection_options(p)
        p.set_defaults(handler=lambda args: _run(args, handler))
        return p

    p = command("init", "prepare a database for capture and record what is captured", _init)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--tables", metavar="T1,T2", help="the tables to capture (schema.table or table)")
    which.add_argument("--all-tables", action="store_true", help="every table of the database")
    p.add_argument("--slot", metavar="NAME", help="replication slot and publication name (default notarium_<database>)")
    p.add_argument("--rebaseline", action="store_true", help="start a new epoch: new shapes, new slot, new baseline")

    p = command("capture", "write every committed transaction into the ledger (runs until stopped)", _capture)
    p.add_argument("--max-entry-bytes", type=int, default=CaptureConfig.max_entry_bytes, metavar="N")
    p.add_argument("--batch-ms", type=float, default=CaptureConfig.batch_seconds * 1000, metavar="MS")
    p.add_argument("--progress-seconds", type=float, default=CaptureConfig.progress_seconds, metavar="S")
    p.add_argument("--stats", type=Path, metavar="FILE", help="append each written entry's lags (JSON lines)")
    p.add_argument("--once", action="store_true", help="stop once everything committed so far is captured")

    p = command("verify", "compare the live database with the trail (exit 3 when they differ)", _verify)
    p.add_argument("--at", metavar="V.S", help="compare with the state recorded at this TxId (a restored database)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S", help="how long to wait for capture to catch up")
    p.add_argument(
        "--epoch",
        type=int,
        default=1,
        metavar="N",
        help="accept the re-baselines (pg init --rebaseline) up to epoch N: judge the trail from its baseline on",
    )

    p = command("restore", "rebuild the captured tables in an empty database from the ledger", _restore)
    p.add_argument("--at", metavar="V.S", help="as they were after the entry at this TxId (default: the last)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--source-db", metavar="DSN", help="take the tables' definitions from this database")
    src.add_argument("--schema", type=Path, metavar="FILE", help="take them from a pg_dump --schema-only file")

    command("status", "the trail's lag behind the database", _status)


# --- running a command ---------------------------------------------------------------------------


def _say(args: argparse.Namespace) -> Callable[[str], None]:
    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    return say


def _run(args: argparse.Namespace, handler: Callable[[argparse.Namespace, Client], int]) -> int:
    if not args.db:
        print("error: name the database with --db DSN (or $NOTARIUM_PG_DB)", file=sys.stderr)
        return EXIT_USAGE

    def guarded(a: argparse.Namespace, client: Client) -> int:
        try:
            return handler(a, client)
        except psycopg.Error as exc:
            text = str(exc).strip().splitlines()
            raise TrailError(f"PostgreSQL refused: {text[0] if text else type(exc).__name__}") from None

    return with_client(args, guarded)


def _ledger(args: argparse.Namespace, client: Client) -> TrailLedger:
    if args.collection:
        return TrailLedger(client, args.collection)
    with pgdb.connect(args.db) as conn:
        return TrailLedger(client, default_collection(pgdb.info(conn).database))


def _txid(text: str | None) -> TxId | None:
    return None if text is None else TxId.parse(text)


# --- the commands --------------------------------------------------------------------------------


def _init(args: argparse.Namespace, client: Client) -> int:
    tables = None if args.all_tables else [t.strip() for t in args.tables.split(",") if t.strip()]
    ledger = _ledger(args, client)
    done = init_trail(args.db, ledger, tables=tables, slot=args.slot, rebaseline=args.rebaseline, say=_say(args))
    body = {
        "ok": True,
        "created": done.created,
        "collection": ledger.collection,
        "epoch": done.init.epoch,
        "slot": done.init.slot,
        "tables": [t.name for t in done.init.tables],
        "txid": None if done.txid is None else str(done.txid),
    }
    if args.json:
        print(json.dumps(body))
    return EXIT_OK


def _capture(args: argparse.Namespace, client: Client) -> int:
    ledger = _ledger(args, client)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    config = CaptureConfig(
        dsn=args.db,
        max_entry_bytes=args.max_entry_bytes,
        batch_seconds=args.batch_ms / 1000,
        progress_seconds=args.progress_seconds,
        stats=args.stats,
        once=args.once,
        say=_say(args),
    )
    return Agent(config, ledger, stop).run()


def _verify(args: argparse.Namespace, client: Client) -> int:
    ledger = _ledger(args, client)
    report = verify(args.db, ledger, at=_txid(args.at), epoch=args.epoch, timeout=args.timeout, say=_say(args))
    if args.json:
        print(json.dumps(report.to_json()))
        return EXIT_OK if report.ok else EXIT_VERIFY
    out = Console(highlight=False, soft_wrap=True)
    r = report.replay
    for f in report.findings:
        label = f.kind.upper() if report.alarming(f) else f"{f.kind} (epoch {f.epoch}, accepted or informational)"
        out.print(escape(f"{label}: {f.message}" + (f" (entry {f.txid})" if f.txid else "")))
    for d in report.divergences:
        key = ", ".join(f"{k}={v}" for k, v in d.key.items())
        out.print(escape(f"DIVERGENT {d.table} [{key}]: {d.what}"))
        if d.ledger is not None:
            out.print(
                f"  ledger:   {escape(json.dumps(d.ledger, ensure_ascii=False))}"
                + (f"  (last change {d.txid})" if d.txid else "")
            )
        if d.database is not None:
            out.print(f"  database: {escape(json.dumps(d.database, ensure_ascii=False))}")
    rows = sum(report.tables.values())
    verdict = "identical" if report.ok else f"NOT identical: {len(report.divergences)} divergent row(s)"
    out.print(
        f"{report.database} at {report.point}: {verdict}; {rows} rows in {len(report.tables)} table(s) compared with "
        f"the trail (epoch {r.init.epoch if r.init else '?'}, {r.count} transactions, {r.entries} entries verified, "
        f"last {r.last_txid})"
    )
    return EXIT_OK if report.ok else EXIT_VERIFY


def _restore(args: argparse.Namespace, client: Client) -> int:
    ledger = _ledger(args, client) if args.collection else _restore_ledger(args, client)
    report = restore(args.db, ledger, at=_txid(args.at), source_db=args.source_db, schema=args.schema, say=_say(args))
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        for f in report.replay.findings:
            print(f"warning: {f.kind} (epoch {f.epoch}): {f.message}", file=sys.stderr)
        total = sum(report.tables.values())
        print(f"restored {total} rows into {report.database} as of {report.replay.last_txid}")
    return EXIT_OK


def _restore_ledger(args: argparse.Namespace, client: Client) -> TrailLedger:
    if args.source_db is None:
        raise TrailError("with --schema, name the trail with --collection (pg:<database>)")
    with pgdb.connect(args.source_db) as conn:
        return TrailLedger(client, default_collection(pgdb.info(conn).database))


def _status(args: argparse.Namespace, client: Client) -> int:
    body = status(args.db, _ledger(args, client))
    if args.json:
        print(json.dumps(body))
        return EXIT_OK
    slot = body["slot"]
    lines = [
        f"{body['database']} → {body['collection']} (epoch {body['epoch']}, {len(body['tables'])} table(s))",
        f"  baseline: {'done' if body['baselineDone'] else 'not done'}; "
        f"transactions captured: {body['transactionsCaptured']}",
        f"  lag: {body['lagBytes']} bytes, {body['lagSeconds']} s "
        f"(trail {body['trailEnd']}, database {body['databaseLsn']})",
        f"  last captured commit: {body['lastCapturedCommit']}; last entry: {body['lastEntry']}",
    ]
    if body["stopped"]:
        lines.append(f"  STOPPED: {body['stopped']}")
    if slot is None:
        lines.append("  slot: MISSING (dropped? the trail has a gap)")
    else:
        lost = slot["walStatus"] == "lost"
        lines.append(
            f"  slot {slot['name']}: {'active' if slot['active'] else 'inactive'}, confirmed {slot['confirmedFlush']}, "
            + (
                "INVALIDATED: its WAL is lost and the trail has a gap"
                if lost
                else f"WAL held {slot['walRetainedBytes']} bytes"
            )
        )
    print("\n".join(lines))
    return EXIT_OK
