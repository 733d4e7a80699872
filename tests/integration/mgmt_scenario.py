"""The management SDK scenario (run ONLY inside .venv-mgmt, with ``-I``, never with -O).

Usage: mgmt_scenario.py < config.json

Drives ``notarium host`` with Microsoft's unmodified ``azure-mgmt-confidentialledger`` (pointed at the
host with ``base_url``, the host's TLS CA as ``connection_verify``, the host token through a minimal
``TokenCredential``) and prints one JSON report::

    {"sdk_version": str, "checks": {name: {"ok": bool, "error": str | null, "seconds": float}},
     "data": {"ledgers": {name: <the ConfidentialLedger resource as a dict>}, ...}}

A failed check records the exception and the scenario goes on. The config (stdin) holds::

    base_url, ca_cert (path), token, subscription, resource_group, other_group,
    ledgers: [{"name", "type", "admin_cert" (PEM text)}], doomed (the name of one of them, deleted here),
    invalid_names: [str]
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run with -I: the shared kit beside this script
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.mgmt.confidentialledger import ConfidentialLedger
from azure.mgmt.confidentialledger.models import (
    CertBasedSecurityPrincipal,
    CheckNameAvailabilityRequest,
    LedgerProperties,
)
from azure.mgmt.confidentialledger.models import ConfidentialLedger as LedgerResource
from scenario_kit import Checks, StaticToken, expect, raises

POLL = 0.2  # the host's Retry-After (1 s) takes precedence, as with ARM


class Scenario(Checks):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = cfg
        self.data: dict[str, Any] = {"ledgers": {}}
        self.rg: str = cfg["resource_group"]
        self.client = self.make_client(cfg["token"])

    def make_client(self, token: str) -> ConfidentialLedger:
        return ConfidentialLedger(
            StaticToken(token),
            self.cfg["subscription"],
            base_url=self.cfg["base_url"],
            connection_verify=self.cfg["ca_cert"],
            retry_total=0,
        )

    def body(self, ledger_type: str, admin_cert: str, **extra: Any) -> LedgerResource:
        principal = CertBasedSecurityPrincipal(cert=admin_cert, ledger_role_name="Administrator")
        props = LedgerProperties(ledger_type=ledger_type, cert_based_security_principals=[principal])
        return LedgerResource(location="local", properties=props, **extra)

    # --- checks ---------------------------------------------------------------------------------

    def create(self) -> None:
        pollers = [
            (
                spec,
                self.client.ledger.begin_create(
                    self.rg,
                    spec["name"],
                    self.body(spec["type"], spec["admin_cert"], tags={"made-by": "mgmt_scenario"}),
                    polling_interval=POLL,
                ),
            )
            for spec in self.cfg["ledgers"]
        ]
        for spec, poller in pollers:
            ledger = poller.result()
            props = ledger.properties
            expect(props.provisioning_state == "Succeeded", f"{spec['name']}: {props.provisioning_state}")
            expect(props.ledger_name == spec["name"] and ledger.name == spec["name"], f"name {ledger.name!r}")
            expect(props.ledger_type == spec["type"], f"{spec['name']}: type {props.ledger_type}")
            expect(props.ledger_uri and props.identity_service_uri, f"{spec['name']}: no URIs")
            certs = props.cert_based_security_principals or []
            expect([c.ledger_role_name for c in certs] == ["Administrator"], f"principals {certs!r}")
            self.data["ledgers"][spec["name"]] = ledger.as_dict()

    def get(self) -> None:
        for spec in self.cfg["ledgers"]:
            ledger = self.client.ledger.get(self.rg, spec["name"])
            expect(ledger.id.endswith(f"/ledgers/{spec['name']}"), f"id {ledger.id}")
            expect(ledger.type == "Microsoft.ConfidentialLedger/ledgers", f"type {ledger.type}")
            expect(ledger.tags == {"made-by": "mgmt_scenario"}, f"tags {ledger.tags}")
            expect(ledger.system_data.created_by_type == "Key", f"systemData {ledger.system_data}")

    def names(self, pages: Any) -> list[str]:
        return sorted(ledger.name for ledger in pages)

    def list_all(self) -> None:
        expected = sorted(spec["name"] for spec in self.cfg["ledgers"])
        by_group = self.names(self.client.ledger.list_by_resource_group(self.rg))
        expect(by_group == expected, f"list_by_resource_group: {by_group}")
        by_sub = self.names(self.client.ledger.list_by_subscription())
        expect(by_sub == expected, f"list_by_subscription: {by_sub}")
        public = self.names(self.client.ledger.list_by_resource_group(self.rg, filter="ledgerType eq 'Public'"))
        expect(public == sorted(s["name"] for s in self.cfg["ledgers"] if s["type"] == "Public"), f"public {public}")
        expect(self.names(self.client.ledger.list_by_resource_group(self.cfg["other_group"])) == [], "other group")

    def availability(self, name: str) -> Any:
        return self.client.check_name_availability(
            CheckNameAvailabilityRequest(name=name, type="Microsoft.ConfidentialLedger/ledgers")
        )

    def check_names(self) -> None:
        taken = self.availability(self.cfg["ledgers"][0]["name"])
        expect(not taken.name_available and taken.reason == "AlreadyExists", f"taken: {taken}")
        free = self.availability("fresh-name-0")
        expect(free.name_available, f"free: {free}")
        for bad in self.cfg["invalid_names"]:
            invalid = self.availability(bad)
            expect(not invalid.name_available and invalid.reason == "Invalid", f"{bad!r}: {invalid}")

    def refuse_invalid_names(self) -> None:
        spec = self.cfg["ledgers"][0]
        for bad in self.cfg["invalid_names"]:
            raises(
                HttpResponseError,
                lambda bad=bad: self.client.ledger.begin_create(self.rg, bad, self.body("Private", spec["admin_cert"])),
                status=400,
                code="InvalidResourceName",
            )

    def refuse_conflicts(self) -> None:
        spec = self.cfg["ledgers"][0]
        other = self.cfg["other_group"]
        raises(
            ResourceExistsError,
            lambda: self.client.ledger.begin_create(other, spec["name"], self.body("Private", spec["admin_cert"])),
            status=409,
            code="LedgerNameAlreadyExists",
        )
        upper = spec["name"].upper()  # names are DNS labels: unique regardless of case
        raises(
            ResourceExistsError,
            lambda: self.client.ledger.begin_create(other, upper, self.body("Private", spec["admin_cert"])),
            status=409,
            code="LedgerNameAlreadyExists",
        )
        other_type = "Public" if spec["type"] == "Private" else "Private"
        raises(
            ResourceExistsError,
            lambda: self.client.ledger.begin_create(self.rg, spec["name"], self.body(other_type, spec["admin_cert"])),
            status=409,
        )

    def refuse_no_administrator(self) -> None:
        reader = CertBasedSecurityPrincipal(cert=self.cfg["ledgers"][0]["admin_cert"], ledger_role_name="Reader")
        body = LedgerResource(location="local", properties=LedgerProperties(cert_based_security_principals=[reader]))
        raises(HttpResponseError, lambda: self.client.ledger.begin_create(self.rg, "no-admin", body), status=400)

    def update_tags(self) -> None:
        spec = self.cfg["ledgers"][0]
        patch = LedgerResource(tags={"made-by": "mgmt_scenario", "stage": "updated"})
        ledger = self.client.ledger.begin_update(self.rg, spec["name"], patch, polling_interval=POLL).result()
        expect(ledger.tags == {"made-by": "mgmt_scenario", "stage": "updated"}, f"tags {ledger.tags}")
        expect(ledger.properties.provisioning_state == "Succeeded", f"state {ledger.properties.provisioning_state}")
        again = self.client.ledger.get(self.rg, spec["name"])
        expect(again.tags == ledger.tags, f"tags after get: {again.tags}")

    def operations(self) -> None:
        ops = [op.name for op in self.client.operations.list()]
        expect("Microsoft.ConfidentialLedger/ledgers/read" in ops, f"operations {ops}")

    def bad_token(self) -> None:
        stranger = self.make_client("not-the-host-token")
        raises(
            ClientAuthenticationError, lambda: stranger.ledger.get(self.rg, self.cfg["ledgers"][0]["name"]), status=401
        )

    def delete(self) -> None:
        doomed = self.cfg["doomed"]
        self.client.ledger.begin_delete(self.rg, doomed, polling_interval=POLL).result()
        raises(
            ResourceNotFoundError, lambda: self.client.ledger.get(self.rg, doomed), status=404, code="ResourceNotFound"
        )
        listed = self.names(self.client.ledger.list_by_subscription())
        expect(doomed not in listed, f"{doomed} still listed: {listed}")
        availability = self.availability(doomed)
        expect(not availability.name_available and availability.reason == "AlreadyExists", f"{availability}")
        expect("kept until" in (availability.message or ""), f"message {availability.message!r}")
        self.data["doomed_availability"] = availability.as_dict()
        spec = next(s for s in self.cfg["ledgers"] if s["name"] == doomed)
        raises(
            ResourceExistsError,
            lambda: self.client.ledger.begin_create(self.rg, doomed, self.body("Private", spec["admin_cert"])),
            status=409,
            code="LedgerNameAlreadyExists",
        )
        # deleting what does not exist (any more) is not an error (204)
        self.client.ledger.begin_delete(self.rg, doomed, polling_interval=POLL).result()
        self.client.ledger.begin_delete(self.rg, "never-created", polling_interval=POLL).result()

    def run(self) -> dict[str, Any]:
        c = self.check
        if c("create", self.create) is None and self.checks["create"]["ok"]:
            c("get", self.get)
            c("list", self.list_all)
            c("check_name_availability", self.check_names)
            c("update_tags", self.update_tags)
            c("delete", self.delete)
        c("refuse_invalid_names", self.refuse_invalid_names)
        c("refuse_conflicts", self.refuse_conflicts)
        c("refuse_no_administrator", self.refuse_no_administrator)
        c("operations", self.operations)
        c("bad_token", self.bad_token)
        self.client.close()
        return {"sdk_version": version("azure-mgmt-confidentialledger"), "checks": self.checks, "data": self.data}


if __name__ == "__main__":
    print(json.dumps(Scenario(json.load(sys.stdin)).run()))
