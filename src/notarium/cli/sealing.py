"""How the ledger commands (``append``, ``get``, ``list``, ``export``) seal and open entries end to end.

A collection is sealed when the profile marks it (``"e2e": {COLLECTION: {"key": ..., "writers":
[...]}}``) or ``append --e2e`` says so. The key file is ``--e2e-key``, else the collection's
``key`` in the profile, else the profile's ``e2e_key`` (``$NOTARIUM_E2E_KEY``). Reading opens
every envelope it holds a key for, whatever the profile says; an envelope it cannot open is shown
as stored and called sealed; an ordinary entry in a sealed collection is flagged.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from notarium.client.client import Client
from notarium.client.e2e import OPENED, PLAIN, SEALED, Opened, ReaderKey, SealedCollection, envelope_header
from notarium.client.errors import ClientError
from notarium.client.operations import Entry
from notarium.client.profile import Profile


def e2e_key_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--e2e-key",
        type=Path,
        metavar="FILE",
        help="your end-to-end key file (default: the profile's, or $NOTARIUM_E2E_KEY)",
    )


class Sealer:
    """Per collection, the :class:`SealedCollection` of the profile's (or ``--e2e-key``'s) key."""

    def __init__(self, args: argparse.Namespace, client: Client, profile: Profile | None) -> None:
        self.client = client
        self.profile = profile
        self.explicit: Path | None = getattr(args, "e2e_key", None)
        self._open: dict[str, SealedCollection | None] = {}
        self._seen_sealed: set[str] = set()

    def observe(self, entries: list[Entry]) -> None:
        """Collections holding envelopes among ``entries`` count as sealed: their plain entries are flagged."""
        self._seen_sealed |= {e.collection_id for e in entries if envelope_header(e.contents) is not None}

    def marked(self, collection: str) -> bool:
        in_profile = self.profile is not None and self.profile.e2e_setting(collection) is not None
        return in_profile or collection in self._seen_sealed

    def key_path(self, collection: str) -> Path | None:
        setting = self.profile.e2e_setting(collection) if self.profile else None
        if self.explicit is not None:
            return self.explicit
        if setting is not None and setting.key is not None:
            return setting.key
        return self.profile.e2e_key if self.profile else None

    def collection(self, collection: str, *, required: bool = False) -> SealedCollection | None:
        if collection not in self._open:
            path = self.key_path(collection)
            if path is None:
                if required:
                    raise ClientError(
                        f"no end-to-end key for {collection!r}: pass --e2e-key FILE, set NOTARIUM_E2E_KEY, "
                        "or name one in the profile (`notarium keys new FILE` makes one)"
                    )
                self._open[collection] = None
            else:
                setting = self.profile.e2e_setting(collection) if self.profile else None
                self._open[collection] = SealedCollection(
                    self.client,
                    collection,
                    ReaderKey.load(path),
                    writers=setting.writers if setting else (),
                    memory=path.with_name(path.name + ".seen"),
                )
        found = self._open[collection]
        if found is None and required:
            raise ClientError(f"no end-to-end key for {collection!r}")
        return found

    def open(self, entry: Entry) -> Opened | None:
        """The entry opened (or found sealed); ``None`` for an ordinary entry of an ordinary collection."""
        sealed = envelope_header(entry.contents) is not None
        if not sealed and not self.marked(entry.collection_id):
            return None
        target = self.collection(entry.collection_id)
        if target is None:
            return Opened(entry, SEALED if sealed else PLAIN, entry.contents, reason="no end-to-end key")
        return target.open(entry)


def entry_json(entry: Entry, opened: Opened | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "transactionId": str(entry.txid),
        "collectionId": entry.collection_id,
        "contents": opened.text if opened else entry.contents,
        "tags": entry.tags,
    }
    if opened is not None:
        body["e2e"] = opened.to_json()
    return body


def describe(opened: Opened) -> str:
    """A short note for people: why an entry is shown as it is."""
    if opened.state == OPENED:
        return f"end-to-end encrypted (key epoch {opened.epoch}), opened with your key"
    if opened.state == PLAIN:
        return (
            "warning: this entry is NOT end-to-end encrypted (anyone who runs the ledger could have written or read it)"
        )
    return f"sealed: {opened.reason} (shown as stored: the envelope)"


def export_collections(sealer: Sealer, out: Path, extra: list[str]) -> dict[str, dict[str, int]]:
    """Each sealed collection (the profile's, and ``extra``), opened, into ``OUT/e2e/<collection>.jsonl``
    (mode 0600: it holds plaintext)."""
    names = sorted({*(sealer.profile.e2e if sealer.profile else {}), *extra})
    done: dict[str, dict[str, int]] = {}
    if not names:
        return done
    folder = out / "e2e"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = sealer.collection(name, required=True)
        if target is None:  # required: never
            continue
        counts = {"opened": 0, "sealed": 0, "plain": 0}
        path = folder / f"{quote(name, safe='')}.jsonl"
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            for opened in target.entries():
                counts[opened.state] += 1
                f.write(json.dumps(entry_json(opened.entry, opened)) + "\n")
        tmp.replace(path)
        done[name] = counts
    return done
