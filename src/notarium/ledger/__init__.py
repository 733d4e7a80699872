"""The ledger engine: sequencing, encryption, signatures, storage and receipts. No HTTP here."""

from notarium.ledger.config import EngineConfig
from notarium.ledger.engine import Ledger
from notarium.ledger.entries import DEFAULT_COLLECTION, LedgerEntry
from notarium.ledger.proofs import Receipt
from notarium.ledger.service import init_service, open_ledger

__all__ = ["DEFAULT_COLLECTION", "EngineConfig", "Ledger", "LedgerEntry", "Receipt", "init_service", "open_ledger"]
