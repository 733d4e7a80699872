"""The management SDK through the surviving process of a host on PostgreSQL (run ONLY inside
.venv-mgmt, with ``-I``).

Usage: host_store_mgmt_scenario.py < config.json

Config: base_url (the survivor), ca_cert, token, subscription, resource_group, existing (a ledger
created before the other process was killed), new (a name to create and delete), admin_cert (PEM).
Prints ``{"sdk_version", "checks": {name: {"ok", "error", "seconds"}}, "data": {...}}``.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run with -I: the shared kit beside this script
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.confidentialledger import ConfidentialLedger
from azure.mgmt.confidentialledger.models import CertBasedSecurityPrincipal, LedgerProperties
from azure.mgmt.confidentialledger.models import ConfidentialLedger as LedgerResource
from scenario_kit import Checks, StaticToken, expect

POLL = 0.2


class Scenario(Checks):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = cfg
        self.rg: str = cfg["resource_group"]
        self.data: dict[str, Any] = {}
        self.client = ConfidentialLedger(
            StaticToken(cfg["token"]),
            cfg["subscription"],
            base_url=cfg["base_url"],
            connection_verify=cfg["ca_cert"],
            retry_total=0,
        )

    def listed(self) -> None:
        names = sorted(ledger.name for ledger in self.client.ledger.list_by_resource_group(self.rg))
        self.data["listed"] = names
        expect(self.cfg["existing"] in names, f"{self.cfg['existing']} not listed: {names}")

    def get(self) -> None:
        ledger = self.client.ledger.get(self.rg, self.cfg["existing"])
        expect(ledger.properties.provisioning_state == "Succeeded", f"state {ledger.properties.provisioning_state}")
        self.data["ledger_uri"] = ledger.properties.ledger_uri

    def create_and_delete(self) -> None:
        principal = CertBasedSecurityPrincipal(cert=self.cfg["admin_cert"], ledger_role_name="Administrator")
        body = LedgerResource(
            location="local",
            properties=LedgerProperties(ledger_type="Public", cert_based_security_principals=[principal]),
        )
        made = self.client.ledger.begin_create(self.rg, self.cfg["new"], body, polling_interval=POLL).result()
        expect(made.properties.provisioning_state == "Succeeded", f"state {made.properties.provisioning_state}")
        self.data["created_uri"] = made.properties.ledger_uri
        self.client.ledger.begin_delete(self.rg, self.cfg["new"], polling_interval=POLL).result()
        try:
            self.client.ledger.get(self.rg, self.cfg["new"])
        except ResourceNotFoundError:
            return
        raise AssertionError("the deleted ledger is still found")

    def run(self) -> dict[str, Any]:
        self.check("list", self.listed)
        self.check("get", self.get)
        self.check("create_and_delete", self.create_and_delete)
        return {"sdk_version": version("azure-mgmt-confidentialledger"), "checks": self.checks, "data": self.data}


if __name__ == "__main__":
    print(json.dumps(Scenario(json.load(sys.stdin)).run()))
