"""``notarium pg init``: prepare a database for capture and record in the ledger what is captured.

Everything is checked before anything is created (connection, server version, ``wal_level``,
the role's rights, every table's key, the slot name, the ledger); what is created (slot, then
publication, then the ``init`` entry) is removed again if a later step fails. Run again on a
prepared database it changes nothing; ``--rebaseline`` starts a new epoch (new shapes, a fresh
slot, a new baseline at the next ``pg capture``), recorded as such in the ledger.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from notarium.pgtrail import database as pgdb
from notarium.pgtrail.errors import TrailError
from notarium.pgtrail.format import Init
from notarium.pgtrail.trail import INIT_TAG, TrailLedger
from notarium.types import TxId


@dataclass(frozen=True, slots=True)
class InitResult:
    txid: TxId | None  # None: already prepared, nothing written
    init: Init
    created: bool


def current_init(ledger: TrailLedger) -> tuple[TxId, Init] | None:
    """The trail's newest ``init`` entry (the current epoch), if any."""
    found = [(r.txid, r.entry) for r in ledger.tagged(INIT_TAG) if isinstance(r.entry, Init)]
    return found[-1] if found else None


def require_trail(ledger: TrailLedger, db: pgdb.DbInfo, *, same_database: bool = True) -> tuple[TxId, Init]:
    """The current epoch's ``init`` entry, which must be this database's (unless ``same_database``
    is False: a copy restored elsewhere)."""
    found = current_init(ledger)
    if found is None:
        raise TrailError(f"collection {ledger.collection} holds no trail", hint="prepare the database with pg init")
    txid, init = found
    if same_database and db.system_identifier != init.system_identifier:
        raise TrailError(
            f"this database (system identifier {db.system_identifier}) is not the one whose trail "
            f"{ledger.collection} holds ({init.system_identifier}, recorded at {txid})",
            hint="check --db and --collection",
        )
    return found


def init_trail(
    dsn: str,
    ledger: TrailLedger,
    *,
    tables: Sequence[str] | None,
    slot: str | None,
    rebaseline: bool = False,
    say: Callable[[str], None] = lambda _: None,
) -> InitResult:
    with pgdb.connect(dsn) as conn:
        db = pgdb.info(conn)
        pgdb.check_capturable(db)
        shapes = tuple(pgdb.shapes(conn, tables))
        previous = current_init(ledger)
        if previous is not None and previous[1].system_identifier != db.system_identifier:
            raise TrailError(
                f"collection {ledger.collection} holds the trail of another database (system identifier "
                f"{previous[1].system_identifier}, this one is {db.system_identifier})",
                hint="use another --collection for this database",
            )
        name = pgdb.check_slot_name(slot or (previous[1].slot if previous else pgdb.default_slot(db.database)))
        existing_slot = pgdb.slot(conn, name)
        published = pgdb.publication_tables(conn, name)
        names = [t.name for t in shapes]

        if previous is not None and not rebaseline:
            txid, init = previous
            if init.slot != name:
                raise TrailError(
                    f"the trail is captured through slot {init.slot}, not {name}",
                    hint="leave out --slot, or start a new epoch with --rebaseline",
                )
            if init.tables == shapes and existing_slot is not None and published == names:
                say(f"already prepared: epoch {init.epoch}, recorded at {txid}; nothing changed")
                return InitResult(None, init, created=False)
            if existing_slot is None:
                raise TrailError(
                    f"the trail's replication slot {name} no longer exists: changes since the last captured one "
                    "may be lost (pg verify reports the gap)",
                    hint="to capture again from a new baseline, run pg init again with --rebaseline",
                )
            raise TrailError(
                f"the trail already captures {', '.join(t.name for t in init.tables)} with the shapes recorded at "
                f"{txid}; the database now differs",
                hint="to record the new tables or shapes and take a new baseline, run pg init with --rebaseline",
            )
        if existing_slot is not None and not rebaseline:
            raise TrailError(f"replication slot {name} already exists", hint="name another with --slot")
        if existing_slot is not None and existing_slot.active:
            raise TrailError(f"replication slot {name} is in use", hint="stop pg capture (or whatever reads it) first")
        if published is not None and not rebaseline:
            raise TrailError(f"publication {name} already exists", hint="name another slot with --slot")

        created_slot = created_publication = False
        try:
            if existing_slot is not None:
                pgdb.drop_slot(conn, name)
            pgdb.create_slot(conn, name)
            created_slot = True
            if published is None:
                pgdb.create_publication(conn, name, shapes)
                created_publication = True
            else:
                pgdb.set_publication(conn, name, shapes)
            epoch = previous[1].epoch + 1 if previous else 1
            init = Init(
                epoch=epoch,
                system_identifier=db.system_identifier,
                timeline=db.timeline,
                database=db.database,
                slot=name,
                publication=name,
                lsn=pgdb.current_lsn(conn),
                time=datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds"),
                tables=shapes,
                reason="init" if previous is None else "rebaseline",
            )
            txid = ledger.append(init)
        except BaseException:
            if created_publication:
                pgdb.drop_publication(conn, name)
            if created_slot:
                pgdb.drop_slot(conn, name)
            raise
        say(f"prepared {db.database}: slot and publication {name}, {len(shapes)} table(s), epoch {epoch} at {txid}")
        return InitResult(txid, init, created=True)
