"""Values derived from the ledger secret (ccf-ledger-format.md §3.4). Pure functions."""

from __future__ import annotations

import hmac

from notarium.types import TxId

COMMIT_SECRET_LABEL = b"Commit S"


def commit_secret(ledger_secret: bytes) -> bytes:
    return hmac.digest(ledger_secret, COMMIT_SECRET_LABEL, "sha256")


def commit_evidence_from_commit_secret(secret: bytes, txid: TxId) -> str:
    nonce = hmac.digest(secret, f"{txid.view}.{txid.seqno}".encode(), "sha256")
    return f"ce:{txid.view}.{txid.seqno}:{nonce.hex()}"


def commit_evidence(ledger_secret: bytes, txid: TxId) -> str:
    """``ce:<view>.<seqno>:<hex HMAC(commit secret, "<view>.<seqno>")>``."""
    return commit_evidence_from_commit_secret(commit_secret(ledger_secret), txid)
