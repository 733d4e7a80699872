"""The data-plane SDK on ledgers of a host (run ONLY inside .venv-acl1, with ``-I``, never with -O).

Usage: host_data_scenario.py < config.json

Uses only what the management API returned: each ledger's ``identityServiceUri`` (for the
certificate client, which fetches the identity document: the ledger's service certificate, then the
host's TLS CA) and ``ledgerUri`` (the client's endpoint, with its ``/ledgers/{name}`` prefix).
Prints one JSON report like sdk_scenario.py. The config (stdin) holds::

    workdir, host_ca (path: to fetch identity documents over the host's TLS), host_token,
    many (entries written to one collection),
    ledgers: {"main" | "other" | "deleted": {"name", "ledger_uri", "identity_uri", "admin_pem"}}

``main`` gets the full treatment, ``other`` is a second live ledger (isolation), ``deleted`` was
deleted through the management API.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run with -I: the shared kit beside this script
from azure.confidentialledger import ConfidentialLedgerCertificateCredential, ConfidentialLedgerClient
from azure.confidentialledger.certificate import ConfidentialLedgerCertificateClient
from azure.confidentialledger.receipt import verify_receipt
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError
from scenario_kit import CheckFailedError, Checks, StaticToken, error_code, expect, raises

PEM_END = "-----END CERTIFICATE-----"


class Scenario(Checks):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = cfg
        self.work = Path(cfg["workdir"])
        self.ledgers: dict[str, dict[str, str]] = cfg["ledgers"]
        self.data: dict[str, Any] = {"identity": {}, "written": {}}
        self.bundles: dict[str, Path] = {}

    def identity_client(self, which: str) -> tuple[ConfidentialLedgerCertificateClient, str]:
        endpoint, _, ledger_id = self.ledgers[which]["identity_uri"].rpartition("/ledgerIdentity/")
        client = ConfidentialLedgerCertificateClient(endpoint, connection_verify=self.cfg["host_ca"])
        return client, ledger_id

    def client(self, which: str, pem: str | None = None) -> ConfidentialLedgerClient:
        return ConfidentialLedgerClient(
            self.ledgers[which]["ledger_uri"],
            credential=ConfidentialLedgerCertificateCredential(pem or self.ledgers[which]["admin_pem"]),
            ledger_certificate_path=str(self.bundles[which]),
            retry_total=0,
        )

    # --- checks ---------------------------------------------------------------------------------

    def identities(self) -> None:
        for which in ("main", "other"):
            client, ledger_id = self.identity_client(which)
            identity = client.get_ledger_identity(ledger_id)
            expect(identity["ledgerId"] == self.ledgers[which]["name"], f"ledgerId {identity['ledgerId']!r}")
            bundle = identity["ledgerTlsCertificate"]
            expect(bundle.count(PEM_END) == 2, "the identity document should hold two certificates")
            path = self.work / f"{which}_identity.pem"
            path.write_text(bundle)
            self.bundles[which] = path
            self.data["identity"][which] = bundle

    def write_and_read(self) -> None:
        """Entries written, read back one by one and listed across pages (nextLink under the prefix)."""
        admin = self.client("main")
        written = []
        for i in range(self.cfg["many"]):
            tx = admin.begin_create_ledger_entry({"contents": f"entry {i}"}, collection_id="c", polling_interval=0)
            written.append(tx.result()["transactionId"])
        self.data["written"]["main"] = written
        for i, txid in enumerate(written):
            entry = admin.begin_get_ledger_entry(txid, collection_id="c", polling_interval=0).result()["entry"]
            expect(entry["contents"] == f"entry {i}", f"{txid}: {entry!r}")
        listed = [e["transactionId"] for e in admin.list_ledger_entries(collection_id="c")]
        expect(listed == written, f"listed {listed} != written {written}")
        current = admin.get_current_ledger_entry(collection_id="c")
        expect(current["contents"] == f"entry {len(written) - 1}", f"current {current!r}")

    def receipts(self) -> None:
        """The SDK verifies receipts with the identity document it was given (its first certificate)."""
        admin = self.client("main")
        bundle = self.bundles["main"].read_text()
        for txid in self.data["written"]["main"][:3]:
            r = admin.begin_get_receipt(txid, polling_interval=0).result()
            verify_receipt(r["receipt"], bundle, application_claims=r.get("applicationClaims"))
        # a receipt checked against another ledger's identity fails
        r = admin.begin_get_receipt(self.data["written"]["main"][0], polling_interval=0).result()
        try:
            verify_receipt(r["receipt"], self.bundles["other"].read_text(), application_claims=r["applicationClaims"])
        except ValueError:
            return
        raise CheckFailedError("a receipt of one ledger verified against another ledger's identity")

    def other_ledger(self) -> None:
        other = self.client("other")
        txid = other.begin_create_ledger_entry({"contents": "other"}, polling_interval=0).result()["transactionId"]
        self.data["written"]["other"] = [txid]
        entries = [e["contents"] for e in other.list_ledger_entries()]
        expect(entries == ["other"], f"the other ledger holds {entries}")

    def isolation(self) -> None:
        """The main ledger's administrator is unknown to the other ledger, and the reverse."""
        other_as_main = self.client("other", self.ledgers["main"]["admin_pem"])
        raises(ClientAuthenticationError, lambda: list(other_as_main.list_collections()), status=401)
        main_as_other = self.client("main", self.ledgers["other"]["admin_pem"])
        raises(ClientAuthenticationError, lambda: main_as_other.get_current_ledger_entry(collection_id="c"), status=401)

    def operator_cannot_read(self) -> None:
        """The host's management token is no data-plane credential."""
        for which in ("main", "other"):
            as_operator = ConfidentialLedgerClient(
                self.ledgers[which]["ledger_uri"],
                credential=StaticToken(self.cfg["host_token"]),
                ledger_certificate_path=str(self.bundles[which]),
                retry_total=0,
            )
            raises(ClientAuthenticationError, lambda c=as_operator: c.get_current_ledger_entry(), status=401)
            raises(ClientAuthenticationError, lambda c=as_operator: list(c.list_ledger_entries()), status=401)

    def deleted_ledger(self) -> None:
        """A deleted ledger's endpoint and identity answer 404 (real ACL's name stops resolving)."""
        deleted = self.ledgers["deleted"]
        self.bundles["deleted"] = self.bundles["main"]  # the SDK needs some file; TLS is the host's anyway
        client = self.client("deleted")
        code = error_code(raises(ResourceNotFoundError, client.get_current_ledger_entry, status=404))
        expect(code == "LedgerNotFound", f"code {code}")
        identity, ledger_id = self.identity_client("deleted")
        raises(ResourceNotFoundError, lambda: identity.get_ledger_identity(ledger_id), status=404)
        expect(ledger_id == deleted["name"], f"identity URI of {ledger_id}")

    def run(self) -> dict[str, Any]:
        c = self.check
        c("identity", self.identities)
        if self.checks["identity"]["ok"]:
            c("entries:write_and_read", self.write_and_read)
            if self.checks["entries:write_and_read"]["ok"]:
                c("receipts:verify_receipt", self.receipts)
            c("entries:other_ledger", self.other_ledger)
            c("isolation:users", self.isolation)
            c("isolation:operator_cannot_read", self.operator_cannot_read)
            c("deleted:not_found", self.deleted_ledger)
        return {"sdk_version": version("azure-confidentialledger"), "checks": self.checks, "data": self.data}


if __name__ == "__main__":
    print(json.dumps(Scenario(json.load(sys.stdin)).run()))
