"""What Microsoft's own SDK test suites expect of Azure Confidential Ledger, against notarium (issue #16).

Run ONLY inside .venv-acl1 or .venv-acl2, with ``-I``: ``sdk_acl_suite_scenario.py < config.json``.

The azure-confidentialledger source distributions (1.1.1, 2.0.0b2) ship live tests written against
the real ACL. Their setup is reproduced here: a client authenticated by a bearer token (an
Administrator of the local OIDC issuer that stands in for Entra ID) registers a certificate user,
and both clients then perform what those tests perform, with the unmodified SDK, asserting what
those tests assert. One check per point of the issue (``pN:…``), each run with both clients where
the suites do so:

- p1 (2.x) custom roles in ACL's field names (``role_name``/``role_actions``, application actions
  such as ``/content/read``), read back as ``roles.roles[0]["role_name"]``; the SDK's own model
  (camelCase on the wire) still accepted;
- p2 (2.x) ``create_or_update_ledger_user`` adds roles (Contributor, then Reader: both held), the
  answer showing the roles the call assigned;
- p3 deleting a user that does not exist succeeds (204), through both user endpoints;
- p4 (2.x) ``create_or_update_user``/``delete_user`` at the SDK's api-version raise
  ``(ApiVersionRedirect)`` and change nothing; (both) at 2022-05-13 they work as before;
- p5 user ids ACL accepts that are not GUIDs (``"0" * 36``, ``AB:CD:EF``) through the user calls;
- p6 ``get_enclave_quotes``: one quote per trusted node, each with ``raw`` evidence of the virtual
  platform (bound to its node id) and ``mrenclave``, ``quoteVersion`` saying it is virtual.

Config: ``endpoint``, ``service_cert``, ``admin_pem`` (a certificate Administrator), ``aad_token``
(or null: certificate clients only), ``cert_user`` (``{"pem", "id"}``, registered through the token
client), ``managed_cert_id`` (a fingerprint the management checks create and delete), ``quotes``
(how many trusted nodes the service has), ``only`` (null, or a list of check prefixes to run).
Prints one JSON report ``{"sdk_version", "checks": {...}, "data": {...}}``.
"""

from __future__ import annotations

import base64
import json
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run with -I: the shared kit beside this script
from azure.confidentialledger import ConfidentialLedgerCertificateCredential, ConfidentialLedgerClient
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from scenario_kit import Checks, StaticToken, expect, raises

VIRTUAL_MEASUREMENT = "Insecure hard-coded virtual measurement v1"
OLD_API_VERSION = "2022-05-13"
AAD_LIKE_ID = "0" * 36  # not GUID-shaped, yet an Entra object id in ACL's own tests
COLON_ID = "AB:CD:EF"  # hex and colons, not a fingerprint: a token user's id as ACL accepts it


def status_of(response: Any, *_: Any) -> int:
    return int(response.http_response.status_code)


class Scenario(Checks):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = cfg
        self.v2 = version("azure-confidentialledger").startswith("2.")
        self.data: dict[str, Any] = {}
        self.clients: list[ConfidentialLedgerClient] = []
        self.admin = self.client(ConfidentialLedgerCertificateCredential(cfg["admin_pem"]))
        token = cfg.get("aad_token")
        # (name, credential, client) of the token client and, once registered, the certificate client
        self.callers: list[tuple[str, Any, ConfidentialLedgerClient]] = []
        if token:
            credential = StaticToken(token)
            self.callers.append(("aad", credential, self.client(credential)))

    def client(self, credential: Any, **kwargs: Any) -> ConfidentialLedgerClient:
        c = ConfidentialLedgerClient(
            self.cfg["endpoint"],
            credential=credential,
            ledger_certificate_path=self.cfg["service_cert"],
            retry_total=0,
            **kwargs,
        )
        self.clients.append(c)
        return c

    @property
    def aad(self) -> ConfidentialLedgerClient:
        return self.callers[0][2]

    def both(self) -> list[tuple[str, Any, ConfidentialLedgerClient]]:
        """The token client and the certificate client, as the suites run each test with both."""
        expect(len(self.callers) == 2, "the setup did not register the certificate user")
        return self.callers

    def old(self, credential: Any, client: ConfidentialLedgerClient) -> ConfidentialLedgerClient:
        """The same caller at api-version 2022-05-13 (1.1.1's default already)."""
        return self.client(credential, api_version=OLD_API_VERSION) if self.v2 else client

    # --- setup: the token client registers the certificate user, as the suites do ------------

    def register_certificate_user(self) -> None:
        who = self.cfg["cert_user"]
        if self.v2:
            r = self.aad.create_or_update_ledger_user(who["id"], {"assignedRoles": ["Administrator"]})
            expect(r["userId"] == who["id"] and list(r["assignedRoles"]) == ["Administrator"], f"answered {r!r}")
        else:
            r = self.aad.create_or_update_user(who["id"], {"assignedRole": "Administrator"})
            expect(r["userId"] == who["id"] and r["assignedRole"] == "Administrator", f"answered {r!r}")
        credential = ConfidentialLedgerCertificateCredential(who["pem"])
        cert = self.client(credential)
        expect(cert.get_constitution()["digest"], "the certificate user cannot read")
        self.callers.append(("cert", credential, cert))

    # --- the suites' user management, per SDK version ------------------------------------------

    def one_role_lifecycle(self, client: ConfidentialLedgerClient, user_id: str) -> None:
        """1.1.1's user management test (/app/users): Contributor, then Reader replaces it, delete."""
        user = client.create_or_update_user(user_id, {"assignedRole": "Contributor"})
        expect(user["userId"] == user_id and user["assignedRole"] == "Contributor", f"created {user!r}")
        user = client.get_user(user_id)
        expect(user["userId"] == user_id and user["assignedRole"] == "Contributor", f"read {user!r}")
        user = client.create_or_update_user(user_id, {"assignedRole": "Reader"})
        expect(user["userId"] == user_id and user["assignedRole"] == "Reader", f"changed {user!r}")
        user = client.get_user(user_id)
        expect(user["userId"] == user_id and user["assignedRole"] == "Reader", f"read after change {user!r}")
        expect(client.delete_user(user_id, cls=status_of) == 204, "delete_user did not answer 204")
        raises(ResourceNotFoundError, client.get_user, user_id)

    def several_roles_lifecycle(self, client: ConfidentialLedgerClient, user_id: str) -> None:
        """2.0.0b2's user management test (/app/ledgerUsers): delete first (the user may not
        exist), Contributor, then Reader is added to it, delete."""
        expect(client.delete_ledger_user(user_id, cls=status_of) == 204, "deleting an absent user did not answer 204")
        user = client.create_or_update_ledger_user(user_id, {"assignedRoles": ["Contributor"]})
        expect(user["userId"] == user_id and list(user["assignedRoles"]) == ["Contributor"], f"created {user!r}")
        user = client.get_ledger_user(user_id)
        expect(user["userId"] == user_id and list(user["assignedRoles"]) == ["Contributor"], f"read {user!r}")
        user = client.create_or_update_ledger_user(user_id, {"assignedRoles": ["Reader"]})
        expect(user["userId"] == user_id and list(user["assignedRoles"]) == ["Reader"], f"patched {user!r}")
        user = client.get_ledger_user(user_id)
        held = list(user["assignedRoles"])
        expect(
            user["userId"] == user_id and held == ["Contributor", "Reader"], f"after the patch the user holds {held}"
        )
        expect(client.delete_ledger_user(user_id, cls=status_of) == 204, "delete_ledger_user did not answer 204")
        raises(ResourceNotFoundError, client.get_ledger_user, user_id)

    def lifecycle(self, client: ConfidentialLedgerClient, user_id: str) -> None:
        if self.v2:
            self.several_roles_lifecycle(client, user_id)
        else:
            self.one_role_lifecycle(client, user_id)

    # --- the points of the issue ---------------------------------------------------------------

    def p1_user_defined_role(self) -> None:
        from azure.confidentialledger.models import Role, Roles  # 2.x only

        name = "modify"
        raises(ResourceNotFoundError, self.aad.get_user_defined_role, role_name=name)
        self.aad.create_user_defined_role({"roles": [{"role_name": name, "role_actions": ["/content/read"]}]})
        roles = self.aad.get_user_defined_role(role_name=name)
        expect(roles.roles[0]["role_name"] == name, f"read back {roles!r}")
        expect(roles.roles[0]["role_actions"] == ["/content/read"], f"read back {roles!r}")
        self.aad.update_user_defined_role(
            {"roles": [{"role_name": name, "role_actions": ["/content/write", "/content/read"]}]}
        )
        roles = self.aad.get_user_defined_role(role_name=name)
        expect(roles.roles[0]["role_name"] == name, f"after the update {roles!r}")
        expect(roles.roles[0]["role_actions"] == ["/content/read", "/content/write"], f"after the update {roles!r}")
        self.aad.delete_user_defined_role(role_name=name)
        raises(ResourceNotFoundError, self.aad.get_user_defined_role, role_name=name)
        # the SDK's own model serialises camelCase (roleName): still accepted, shown in ACL's names
        other = "modify-model"
        self.aad.create_user_defined_role(Roles(roles=[Role(role_name=other, role_actions=["/content/read"])]))
        got = self.aad.get_user_defined_role(role_name=other).as_dict()
        expect(got == {"roles": [{"role_name": other, "role_actions": ["/content/read"]}]}, f"read back {got!r}")
        self.aad.delete_user_defined_role(role_name=other)

    def p2_ledger_user_roles_merge(self) -> None:
        for _, _, client in self.both():
            for user_id in (AAD_LIKE_ID, self.cfg["managed_cert_id"]):
                self.several_roles_lifecycle(client, user_id)

    def p3_delete_absent_user(self) -> None:
        for _, credential, client in self.both():
            old = self.old(credential, client)
            for user_id in (AAD_LIKE_ID, self.cfg["managed_cert_id"]):
                if self.v2:
                    expect(client.delete_ledger_user(user_id, cls=status_of) == 204, "delete_ledger_user of nobody")
                    raises(ResourceNotFoundError, client.get_ledger_user, user_id)
                expect(old.delete_user(user_id, cls=status_of) == 204, "delete_user of nobody")
                raises(ResourceNotFoundError, old.get_user, user_id)

    def p4_users_endpoint_redirect(self) -> None:  # 2.x: the SDK's default api-version
        for user_id in (AAD_LIKE_ID, self.cfg["managed_cert_id"]):
            exc = raises(HttpResponseError, self.aad.create_or_update_user, user_id, {"assignedRole": "Contributor"})
            expect(str(exc).startswith("(ApiVersionRedirect)"), f"create_or_update_user raised {exc}")
            exc = raises(HttpResponseError, self.aad.delete_user, user_id)
            expect(str(exc).startswith("(ApiVersionRedirect)"), f"delete_user raised {exc}")
            raises(ResourceNotFoundError, self.aad.get_ledger_user, user_id)  # nothing was created
        # an existing user is not deleted by the refused call either
        self.aad.create_or_update_ledger_user(AAD_LIKE_ID, {"assignedRoles": ["Reader"]})
        raises(HttpResponseError, self.aad.delete_user, AAD_LIKE_ID)
        expect(list(self.aad.get_ledger_user(AAD_LIKE_ID)["assignedRoles"]) == ["Reader"], "the user changed")
        self.aad.delete_ledger_user(AAD_LIKE_ID)

    def p4_users_endpoint_old_version(self) -> None:
        for _, credential, client in self.both():
            old = self.old(credential, client)
            for user_id in (AAD_LIKE_ID, self.cfg["managed_cert_id"]):
                self.one_role_lifecycle(old, user_id)

    def p5_user_ids(self) -> None:
        for _, _, client in self.both():
            for user_id in (AAD_LIKE_ID, COLON_ID):
                self.lifecycle(client, user_id)

    def p6_enclave_quotes(self) -> None:
        reader = self.callers[-1][2] if self.callers else self.admin
        ledger_enclaves = reader.get_enclave_quotes()
        quotes = ledger_enclaves["enclaveQuotes"]
        expect(len(quotes) == self.cfg["quotes"], f"{len(quotes)} quotes, expected {self.cfg['quotes']}")
        expect(ledger_enclaves["currentNodeId"] in quotes, "the current node has no quote")
        seen = {}
        for node_id, quote in quotes.items():
            expect(node_id == quote["nodeId"] and quote["nodeId"], f"quote {node_id}: {quote!r}")
            expect(quote["mrenclave"] and quote["raw"] and quote["quoteVersion"], f"quote {node_id}: {quote!r}")
            expect(quote["quoteVersion"] == "Insecure_Virtual", f"quoteVersion {quote['quoteVersion']!r}")
            evidence = json.loads(bytes.fromhex(quote["raw"]))
            expect(evidence["measurement"] == VIRTUAL_MEASUREMENT, f"evidence of {node_id}: {evidence!r}")
            expect(base64.b64decode(evidence["report_data"]).hex() == node_id, f"evidence not of {node_id}")
            expect(bytes.fromhex(quote["mrenclave"]).decode() == VIRTUAL_MEASUREMENT, f"mrenclave {quote['mrenclave']}")
            seen[node_id] = evidence
        self.data["quotes"] = {"currentNodeId": ledger_enclaves["currentNodeId"], "nodes": sorted(seen)}

    # --- the whole scenario ---------------------------------------------------------------------

    def run(self) -> None:
        only = self.cfg.get("only")
        plan: list[tuple[str, Any]] = []
        if self.callers:
            plan.append(("setup:register_certificate_user", self.register_certificate_user))
            if self.v2:
                plan += [
                    ("p1:user_defined_role", self.p1_user_defined_role),
                    ("p2:ledger_user_roles_merge", self.p2_ledger_user_roles_merge),
                    ("p4:users_endpoint_redirect", self.p4_users_endpoint_redirect),
                ]
            plan += [
                ("p3:delete_absent_user", self.p3_delete_absent_user),
                ("p4:users_endpoint_old_version", self.p4_users_endpoint_old_version),
                ("p5:user_ids", self.p5_user_ids),
            ]
        plan.append(("p6:enclave_quotes", self.p6_enclave_quotes))
        for name, fn in plan:
            if only is None or any(name.startswith(prefix) for prefix in only):
                self.check(name, fn)

    def close(self) -> None:
        for client in self.clients:
            client.close()


def main() -> int:
    scenario = Scenario(json.loads(sys.stdin.read()))
    try:
        scenario.run()
    finally:
        scenario.close()
    report = {"sdk_version": version("azure-confidentialledger"), "checks": scenario.checks, "data": scenario.data}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
