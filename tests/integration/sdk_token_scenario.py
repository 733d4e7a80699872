"""Microsoft's SDK with a TokenCredential (run ONLY inside .venv-acl1 or .venv-acl2, with ``-I``).

Usage: sdk_token_scenario.py < config.json, with ``endpoint``, ``service_cert`` (path),
``token`` (a bearer token the test minted), ``collection``. Writes an entry, waits for it to
commit and reads it back with the SDK's own pollers; prints one JSON object
``{"sdk_version", "transactionId", "contents", "scopes"}`` (the scopes the SDK asked a token for).
"""

from __future__ import annotations

import json
import sys
import time
from importlib.metadata import version
from typing import Any

from azure.confidentialledger import ConfidentialLedgerClient
from azure.core.credentials import AccessToken


class StaticTokenCredential:
    """An azure-core TokenCredential that hands out one token (minted by the test's issuer)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


def plain(obj: Any) -> Any:
    return obj.as_dict() if hasattr(obj, "as_dict") else dict(obj)


def main() -> int:
    cfg = json.load(sys.stdin)
    credential = StaticTokenCredential(cfg["token"])
    client = ConfidentialLedgerClient(
        cfg["endpoint"], credential=credential, ledger_certificate_path=cfg["service_cert"]
    )
    written = plain(
        client.begin_create_ledger_entry({"contents": "written with a token"}, collection_id=cfg["collection"]).result()
    )
    txid = written["transactionId"]
    got = plain(client.begin_get_ledger_entry(transaction_id=txid, collection_id=cfg["collection"]).result())
    entry = got.get("entry", got)
    print(
        json.dumps(
            {
                "sdk_version": version("azure-confidentialledger"),
                "transactionId": txid,
                "contents": plain(entry)["contents"],
                "scopes": sorted(set(credential.scopes)),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
