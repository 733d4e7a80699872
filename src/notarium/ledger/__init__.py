"""The ledger engine: sequencing, encryption, signatures, storage and receipts. No HTTP here."""

from notarium.ledger.engine import DEFAULT_COLLECTION, EngineConfig, Ledger, LedgerEntry, Receipt
from notarium.ledger.service import init_service, open_ledger

__all__ = ["DEFAULT_COLLECTION", "EngineConfig", "Ledger", "LedgerEntry", "Receipt", "init_service", "open_ledger"]
