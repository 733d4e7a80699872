"""The newest management SDK beta against a ledger host (run ONLY inside .venv-mgmtbeta, with ``-I``).

Usage: mgmtbeta_scenario.py < config.json

Drives ``notarium host`` with Microsoft's unmodified ``azure-mgmt-confidentialledger`` 2.0.0b6
(``ConfidentialLedgerMgmtClient``, generated from the TypeSpec of the provider; it sends the
api-version ``2026-05-22-preview``), pointed at the host with ``base_url``, the host's TLS CA as
``connection_verify`` and the host token, and prints one JSON report::

    {"sdk_version": str, "api_versions": [str], "checks": {name: {"ok", "error", "seconds"}}}

``api_versions`` lists every api-version the SDK sent (seen by a raw-request hook). The config
(stdin) holds: base_url, ca_cert (path), token, subscription, resource_group, name (a ledger to
create and delete), admin_cert (PEM text), invalid_name.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run with -I: the shared kit beside this script
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.confidentialledger import ConfidentialLedgerMgmtClient
from azure.mgmt.confidentialledger.models import (
    CertBasedSecurityPrincipal,
    CheckNameAvailabilityRequest,
    ConfidentialLedger,
    LedgerProperties,
)
from scenario_kit import Checks, StaticToken, expect, raises

POLL = 0.2


class Scenario(Checks):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = cfg
        self.rg: str = cfg["resource_group"]
        self.name: str = cfg["name"]
        self.api_versions: set[str] = set()
        self.client = ConfidentialLedgerMgmtClient(
            StaticToken(cfg["token"]),
            cfg["subscription"],
            base_url=cfg["base_url"],
            connection_verify=cfg["ca_cert"],
            retry_total=0,
            raw_request_hook=self._seen,
        )

    def _seen(self, request: Any) -> None:
        query = parse_qs(urlsplit(request.http_request.url).query)
        self.api_versions.update(query.get("api-version", []))

    def body(self, **extra: Any) -> ConfidentialLedger:
        principal = CertBasedSecurityPrincipal(cert=self.cfg["admin_cert"], ledger_role_name="Administrator")
        props = LedgerProperties(ledger_type="Private", cert_based_security_principals=[principal])
        return ConfidentialLedger(location="local", properties=props, **extra)

    # --- checks ---------------------------------------------------------------------------------

    def create(self) -> None:
        poller = self.client.ledger.begin_create(
            self.rg, self.name, self.body(tags={"sdk": "beta"}), polling_interval=POLL
        )
        ledger = poller.result()
        props = ledger.properties
        expect(props.provisioning_state == "Succeeded", f"state {props.provisioning_state}")
        expect(ledger.name == self.name and props.ledger_name == self.name, f"name {ledger.name!r}")
        expect(props.ledger_type == "Private", f"type {props.ledger_type}")
        expect(props.ledger_uri and props.identity_service_uri, "no URIs")

    def get(self) -> None:
        ledger = self.client.ledger.get(self.rg, self.name)
        expect(ledger.id.endswith(f"/ledgers/{self.name}"), f"id {ledger.id}")
        expect(ledger.type == "Microsoft.ConfidentialLedger/ledgers", f"type {ledger.type}")
        expect(ledger.tags == {"sdk": "beta"}, f"tags {ledger.tags}")

    def list_all(self) -> None:
        by_group = [ledger.name for ledger in self.client.ledger.list_by_resource_group(self.rg)]
        expect(by_group == [self.name], f"list_by_resource_group {by_group}")
        by_sub = [ledger.name for ledger in self.client.ledger.list_by_subscription()]
        expect(by_sub == [self.name], f"list_by_subscription {by_sub}")

    def check_names(self) -> None:
        taken = self.client.check_name_availability(
            CheckNameAvailabilityRequest(name=self.name, type="Microsoft.ConfidentialLedger/ledgers")
        )
        expect(taken.name_available is False and taken.reason == "AlreadyExists", f"taken {taken}")

    def update_tags(self) -> None:
        patch = ConfidentialLedger(tags={"sdk": "beta", "stage": "updated"})
        ledger = self.client.ledger.begin_update(self.rg, self.name, patch, polling_interval=POLL).result()
        expect(ledger.tags == {"sdk": "beta", "stage": "updated"}, f"tags {ledger.tags}")

    def operations(self) -> None:
        ops = [op.name for op in self.client.operations.list()]
        expect("Microsoft.ConfidentialLedger/ledgers/read" in ops, f"operations {ops}")

    def refuse_invalid_name(self) -> None:
        raises(
            HttpResponseError,
            lambda: self.client.ledger.begin_create(self.rg, self.cfg["invalid_name"], self.body()),
            status=400,
            code="InvalidResourceName",
        )

    def refuse_empty_name(self) -> None:
        """An empty name reaches the host as ``…/ledgers/``: an ARM error the SDK can read."""
        for call in (
            lambda: self.client.ledger.get(self.rg, ""),
            lambda: self.client.ledger.begin_create(self.rg, "", self.body()),
            lambda: self.client.ledger.begin_delete(self.rg, ""),
        ):
            raises(HttpResponseError, call, status=400, code="InvalidResourceName")

    def delete(self) -> None:
        self.client.ledger.begin_delete(self.rg, self.name, polling_interval=POLL).result()
        raises(ResourceNotFoundError, lambda: self.client.ledger.get(self.rg, self.name), status=404)

    def run(self) -> dict[str, Any]:
        c = self.check
        c("create", self.create)
        c("get", self.get)
        c("list", self.list_all)
        c("check_name_availability", self.check_names)
        c("update_tags", self.update_tags)
        c("operations", self.operations)
        c("refuse_invalid_name", self.refuse_invalid_name)
        c("refuse_empty_name", self.refuse_empty_name)
        c("delete", self.delete)
        self.client.close()
        return {
            "sdk_version": version("azure-mgmt-confidentialledger"),
            "api_versions": sorted(self.api_versions),
            "checks": self.checks,
        }


if __name__ == "__main__":
    print(json.dumps(Scenario(json.load(sys.stdin)).run()))
