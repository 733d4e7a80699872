"""End-to-end encrypted ("sealed") collections: contents the ledger's operator cannot read.

Entries are JWE envelopes (RFC 7516: A256KW + A256GCM) under a collection's data key; data keys
reach readers as key grants recorded in the ledger (JWE ECDH-ES+A256KW to each reader's P-256
key, inside a JWS signed by a writer). Design and guarantees: docs/design/e2e.md.
"""

from notarium.client.e2e.crypto import DataKey, envelope_header, open_envelope, seal
from notarium.client.e2e.keys import ReaderCard, ReaderKey
from notarium.client.e2e.ring import KeyConflictError, KeyRing
from notarium.client.e2e.sealed import OPENED, PLAIN, SEALED, Opened, SealedCollection, keys_collection

__all__ = [
    "OPENED",
    "PLAIN",
    "SEALED",
    "DataKey",
    "KeyConflictError",
    "KeyRing",
    "Opened",
    "ReaderCard",
    "ReaderKey",
    "SealedCollection",
    "envelope_header",
    "keys_collection",
    "open_envelope",
    "seal",
]
