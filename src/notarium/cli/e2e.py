"""End-to-end encryption on the command line: ``keys new|show`` and ``readers list|add|remove|rotate``.

How ``append``/``get``/``list``/``export`` seal and open entries is in :mod:`notarium.cli.sealing`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from notarium.cli.ledger import EXIT_FAILED, _fail, _out, connection_options, with_client
from notarium.cli.sealing import Sealer, e2e_key_option
from notarium.client.client import Client
from notarium.client.e2e import ReaderCard, ReaderKey
from notarium.client.errors import ClientError
from notarium.client.profile import Profile
from notarium.errors import VerificationError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "keys",
        help="end-to-end keys: make a key file and its public card, show ids",
        description="A key file holds your two P-256 key pairs (decrypting grants, signing grants); "
        "its card FILE.pub is what you give a writer. Keep the key file private.",
    )
    p.add_argument("action", choices=("new", "show"))
    p.add_argument("file", type=Path, metavar="FILE", help="the key file (show: a key file or a card)")
    p.add_argument("--json", action="store_true", help="print one JSON document (for scripts)")
    p.set_defaults(handler=_keys)

    p = sub.add_parser(
        "readers",
        help="who can read an end-to-end encrypted collection: list, add CARD, remove READER_ID, rotate",
        description="add gives a reader every data key you hold (the collection's past, nothing rewritten); "
        "remove and rotate start a new data key for the remaining readers only.",
    )
    connection_options(p)
    e2e_key_option(p)
    p.add_argument("action", choices=("list", "add", "remove", "rotate"))
    p.add_argument("reader", nargs="?", metavar="CARD|READER_ID", help="add: a reader's card file; remove: its id")
    p.add_argument("--collection", "-c", metavar="ID", help="collection (default subledger:0)")
    p.set_defaults(handler=lambda args: with_client(args, _readers))


# --- the commands ------------------------------------------------------------------------------------


def _keys(args: argparse.Namespace) -> int:
    try:
        if args.action == "new":
            key = ReaderKey.generate()
            card_path = key.save(args.file)
            card = key.card
        else:
            card, card_path = _card_or_key(args.file), args.file
    except (OSError, VerificationError) as exc:
        return _fail(args, ClientError(str(exc)), EXIT_FAILED)
    data = {"readerId": card.reader_id, "writerId": card.writer_id, "card": str(card_path)}

    def human(c: Console) -> None:
        if args.action == "new":
            c.print(f"key file {args.file} (keep it private); give writers the card {card_path}", highlight=False)
        c.print(f"reader id: {card.reader_id}\nwriter id: {card.writer_id}", highlight=False)

    return _out(args, data, human)


def _card_or_key(path: Path) -> ReaderCard:
    try:
        value = json.loads(path.read_text())
    except ValueError:
        raise VerificationError(f"{path} is not JSON") from None
    if isinstance(value, dict) and value.get("type") == "notarium-e2e-key":
        return ReaderKey.from_json(value).card
    return ReaderCard.from_json(value)


def _readers(args: argparse.Namespace, client: Client) -> int:
    profile: Profile | None = getattr(args, "loaded_profile", None)
    sealer = Sealer(args, client, profile)
    name = args.collection or "subledger:0"
    target = sealer.collection(name, required=True)
    if target is None:  # required: never
        return EXIT_FAILED
    if args.action == "list":
        readers = target.readers()
        ring = target.ring
        heads = ring.heads()
        keys = sorted(ring.keys.values(), key=lambda k: k.first.seqno)
        data = {
            "collection": name,
            "epoch": heads[-1].epoch if heads else 0,
            "readers": sorted(readers),
            "keys": [
                {"keyId": k.kid, "epoch": k.epoch, "readers": sorted(k.readers), "writers": sorted(k.writers)}
                for k in keys
            ],
            "rejected": [{"transactionId": str(r.txid), "reason": r.reason} for r in ring.rejected],
        }

        def table(c: Console) -> None:
            t = Table("key", "epoch", "readers", "signed by")
            for k in keys:
                t.add_row(k.kid, str(k.epoch), "\n".join(sorted(k.readers)), "\n".join(sorted(k.writers)))
            c.print(t)
            for r in ring.rejected:
                c.print(f"ignored grant {r.txid}: {r.reason}", highlight=False, markup=False)

        return _out(args, data, table)
    if args.action == "rotate":
        done = target.rotate()
    elif not args.reader:
        raise ClientError(f"`readers {args.action}` needs a {'CARD file' if args.action == 'add' else 'READER_ID'}")
    elif args.action == "add":
        try:
            card = ReaderCard.load(Path(args.reader))
        except OSError as exc:
            raise ClientError(f"cannot read the card {args.reader}: {exc.strerror}") from None
        done = target.add_reader(card)
    else:
        done = target.remove_reader(args.reader)
    txids = [str(a.txid) for a in done]
    epoch = target.ring.heads()[-1].epoch if target.ring.heads() else 0
    return _out(
        args,
        {"collection": name, "action": args.action, "grants": txids, "epoch": epoch},
        lambda c: c.print(
            f"{args.action}: {len(txids)} grant(s) recorded in e2e-keys:{name} ({', '.join(txids) or 'none needed'}); "
            f"current key epoch {epoch}",
            highlight=False,
        ),
    )
