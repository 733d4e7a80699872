"""The end-to-end SDK scenario (run ONLY inside .venv-acl1 or .venv-acl2, with ``-I``, never with -O).

Usage: sdk_scenario.py < config.json

Drives a running notarium with Microsoft's unmodified ``azure-confidentialledger`` client (1.1.1 or
2.0.0b2) over real TLS with client certificates, and prints one JSON report::

    {"sdk_version": str, "checks": {name: {"ok": bool, "error": str | null, "seconds": float}},
     "data": {...}}

A failed check records the exception (status code, ACL error code and the SDK traceback) and the
scenario goes on; checks that depend on an earlier failure fail too. The config (stdin) holds::

    endpoint, service_cert, ledger_id, workdir (a writable directory), prefix (of collection ids),
    page_size, many (entries written to one collection),
    admin, contributor, reader, stranger: {"pem": combined cert+key path, "id": fingerprint},
    fresh: {"Administrator" | "Contributor" | "Reader": {"pem", "id"}}, multi: {"pem", "id"},
    custom: {"pem", "id"}

``contributor`` and ``reader`` are registered here (by the Administrator); ``stranger`` never is;
``fresh`` and ``multi`` are created, exercised and deleted by the user-management checks, ``custom``
(2.x) by the user-defined roles check.

Version skew handled here (acl-rest-api.md §7): 2.x returns models (``as_dict()``), has ``tags``
on writes and a ``tag`` filter on lists, percent-encodes user ids and has the ``ledgerUsers`` and
user-defined roles operations; 1.1.1 has none of these. At 2.x's api-version (2024-12-09-preview)
``/app/users`` changes are ``ApiVersionRedirect`` (as in ACL): 2.x manages one-role users through a
client at api-version 2022-05-13.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run with -I: the shared kit beside this script
from azure.confidentialledger import ConfidentialLedgerCertificateCredential, ConfidentialLedgerClient
from azure.confidentialledger.certificate import ConfidentialLedgerCertificateClient
from azure.confidentialledger.receipt import verify_receipt
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from scenario_kit import Checks, expect, raises

ROLES = ("Administrator", "Contributor", "Reader")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def plain(value: Any) -> Any:
    """2.x models to plain dicts with wire names (1.1.1 already returns dicts)."""
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


class Scenario(Checks):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = cfg
        self.v2 = version("azure-confidentialledger").startswith("2.")
        self.endpoint: str = cfg["endpoint"]
        self.service_cert_path: str = cfg["service_cert"]
        self.service_cert_pem = Path(self.service_cert_path).read_text()
        self.prefix: str = cfg["prefix"]
        self.data: dict[str, Any] = {}
        self.clients: list[ConfidentialLedgerClient] = []
        self.admin = self.client(cfg["admin"]["pem"])
        # /app/users changes (create_or_update_user, delete_user): 1.1.1's default api-version
        self.users_admin = self.client(cfg["admin"]["pem"], api_version="2022-05-13") if self.v2 else self.admin
        self.contributor = self.client(cfg["contributor"]["pem"])
        self.reader = self.client(cfg["reader"]["pem"])
        self.stranger = self.client(cfg["stranger"]["pem"])
        # (txid, collection, contents, tags) of every entry written, in order
        self.written: list[tuple[str, str, str, str | None]] = []

    def client(self, pem: str, cert_path: str | None = None, **kwargs: Any) -> ConfidentialLedgerClient:
        c = ConfidentialLedgerClient(
            self.endpoint,
            credential=ConfidentialLedgerCertificateCredential(pem),
            ledger_certificate_path=cert_path or self.service_cert_path,
            retry_total=0,
            **kwargs,
        )
        self.clients.append(c)
        return c

    def collection(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    # --- writing ------------------------------------------------------------------------------

    def write(self, who: ConfidentialLedgerClient, collection: str | None, contents: str, tags: str | None) -> str:
        entry = {"contents": contents}
        if tags is None:
            result = plain(who.begin_create_ledger_entry(entry, collection_id=collection, polling_interval=0).result())
        else:
            # 2.0.0b2's begin_create_ledger_entry forwards tags= to its status polls as well, which
            # requests rejects (TypeError: Session.request() got an unexpected keyword argument
            # 'tags'): an SDK bug. Write with create_ledger_entry, then wait for the commit.
            result = plain(who.create_ledger_entry(entry, collection_id=collection, tags=tags))
            status = plain(who.begin_wait_for_commit(result.get("transactionId"), polling_interval=0).result())
            expect(status.get("state") == "Committed", f"begin_wait_for_commit answered {status!r}")
        txid = result.get("transactionId")
        expect(isinstance(txid, str) and re.match(r"^\d+\.\d+$", txid), f"bad transactionId in {result!r}")
        expected_collection = collection or "subledger:0"
        expect(result.get("collectionId") == expected_collection, f"collectionId {result!r} != {expected_collection}")
        # .result() returns once Committed: the status says so without any further wait
        status = plain(who.get_transaction_status(txid))
        expect(status == {"state": "Committed", "transactionId": txid}, f"status after result(): {status!r}")
        self.written.append((txid, expected_collection, contents, tags))
        return txid

    def write_collections(self) -> None:
        tagged = self.v2  # 1.1.1 has no tags
        plan: list[tuple[str | None, str, str | None]] = [
            (self.collection("alpha"), "alpha first", "red" if tagged else None),
            (self.collection("alpha"), "alpha second", None),
            (self.collection("beta"), 'beta: ünïcödé ✓ "quoted" \\ slash', "red,blue" if tagged else None),
            (self.collection("gamma"), json.dumps({"kind": "json", "n": [1, 2, 3]}), None),
            (self.collection("gamma"), "gamma tagged", "blue" if tagged else None),
            (None, f"default collection from {self.prefix}", None),
        ]
        for collection, contents, tags in plan:
            self.write(self.contributor, collection, contents, tags)
        self.write(self.admin, self.collection("alpha"), "alpha by the administrator", None)

    def write_many(self) -> None:
        """``many`` entries to one collection, interleaved with writes elsewhere (gaps in seqnos)."""
        big = self.collection("big")
        for i in range(self.cfg["many"]):
            self.write(self.contributor, big, f"entry {i:03d}", None)
            if i % 5 == 2:
                self.write(self.contributor, self.collection("gamma"), f"between {i}", None)

    # --- reading ------------------------------------------------------------------------------

    def by_collection(self, collection: str) -> list[tuple[str, str, str, str | None]]:
        return [w for w in self.written if w[1] == collection]

    def read_each(self) -> None:
        expect(self.written, "nothing was written")
        for txid, collection, contents, _tags in self.written:
            r = plain(self.reader.begin_get_ledger_entry(txid, collection_id=collection, polling_interval=0).result())
            expect(r.get("state") == "Ready", f"{txid}: state {r!r}")
            entry = r.get("entry") or {}
            got = (entry.get("transactionId"), entry.get("collectionId"), entry.get("contents"))
            expect(got == (txid, collection, contents), f"{txid}: read {got!r}, wrote {(txid, collection, contents)!r}")
            # and without naming the collection
            r2 = plain(self.reader.begin_get_ledger_entry(txid, polling_interval=0).result())
            expect(r2.get("entry", {}).get("contents") == contents, f"{txid} without collection: {r2!r}")

    def current_each(self) -> None:
        collections = dict.fromkeys(w[1] for w in self.written)
        for collection in collections:
            last = self.by_collection(collection)[-1]
            kwargs = {} if collection == "subledger:0" else {"collection_id": collection}
            r = plain(self.reader.get_current_ledger_entry(**kwargs))
            got = (r.get("transactionId"), r.get("collectionId"), r.get("contents"))
            expect(got == last[:3], f"current of {collection}: {got!r}, expected {last[:3]!r}")

    def status_each(self) -> None:
        for txid, *_ in self.written:
            r = plain(self.reader.get_transaction_status(txid))
            expect(r == {"state": "Committed", "transactionId": txid}, f"status of {txid}: {r!r}")

    def list_pages(self, **kwargs: Any) -> list[list[dict[str, Any]]]:
        return [[plain(e) for e in page] for page in self.reader.list_ledger_entries(**kwargs).by_page()]

    def expect_listing(self, pages: list[list[dict[str, Any]]], expected: list[tuple[str, str, str, Any]]) -> None:
        got = [(e.get("transactionId"), e.get("collectionId"), e.get("contents")) for p in pages for e in p]
        txids = [g[0] for g in got]
        expect(len(set(txids)) == len(txids), f"an entry came back twice: {txids}")
        want = [w[:3] for w in expected]
        expect(got == want, f"listing {got!r} != written {want!r}")

    def list_many(self) -> None:
        big = self.collection("big")
        written = self.by_collection(big)
        expect(len(written) == self.cfg["many"], f"only {len(written)} entries in {big}")
        pages = self.list_pages(collection_id=big, from_transaction_id=written[0][0], to_transaction_id=written[-1][0])
        sizes = [len(p) for p in pages]
        self.data["page_sizes"] = sizes
        expect(len(pages) >= 3, f"the range came back in {len(pages)} page(s): {sizes}")
        expect(all(s <= self.cfg["page_size"] for s in sizes), f"a page holds more than the page size: {sizes}")
        self.expect_listing(pages, written)
        # the whole collection (no range) and a sub-range starting inside it
        self.expect_listing(self.list_pages(collection_id=big), written)
        self.expect_listing(self.list_pages(collection_id=big, from_transaction_id=written[7][0]), written[7:])
        self.expect_listing(
            self.list_pages(collection_id=big, from_transaction_id=written[2][0], to_transaction_id=written[12][0]),
            written[2:13],
        )

    def list_small(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            collection = self.collection(name)
            self.expect_listing(self.list_pages(collection_id=collection), self.by_collection(collection))

    def list_by_tag(self) -> None:  # 2.x only
        for name in ("alpha", "beta", "gamma"):
            collection = self.collection(name)
            for tag in ("red", "blue"):
                want = [w for w in self.by_collection(collection) if w[3] and tag in w[3].split(",")]
                self.expect_listing(self.list_pages(collection_id=collection, tag=tag), want)
        expect(
            self.list_pages(collection_id=self.collection("alpha"), tag="never-used") in ([], [[]]),
            "an unused tag matched entries",
        )

    def list_collections(self) -> None:
        got = [plain(c).get("collectionId") for c in self.reader.list_collections()]
        expect(len(set(got)) == len(got), f"a collection is listed twice: {got}")
        want = {w[1] for w in self.written}
        expect(want <= set(got), f"collections {sorted(want - set(got))} are missing from {got}")

    # --- receipts -----------------------------------------------------------------------------

    def receipt_sample(self) -> list[tuple[str, str, str, str | None]]:
        sample: dict[str, tuple[str, str, str, str | None]] = {}
        for w in self.written:
            sample.setdefault(w[1], w)
        tagged = [w for w in self.written if w[3]]
        return [*sample.values(), *tagged[:1], self.written[-1]]

    def receipts(self) -> None:
        self.data["receipts"] = {}
        for txid, collection, contents, _tags in self.receipt_sample():
            r = plain(self.reader.begin_get_receipt(txid, polling_interval=0).result())
            expect(r.get("state") == "Ready" and r.get("transactionId") == txid, f"receipt of {txid}: {r!r}")
            claims = r.get("applicationClaims")
            expect(isinstance(claims, list) and len(claims) == 1, f"applicationClaims of {txid}: {claims!r}")
            claim = claims[0]
            entry = claim.get("ledgerEntry", {})
            expect(
                claim.get("kind") == "LedgerEntry"
                and entry.get("collectionId") == collection
                and entry.get("contents") == contents
                and entry.get("protocol") == "LedgerEntryV1",
                f"claim of {txid}: {claim!r}",
            )
            verify_receipt(r["receipt"], self.service_cert_pem, application_claims=claims)
            verify_receipt(plain(r["receipt"]), self.service_cert_pem)  # without claims too
            self.data["receipts"][txid] = r

    def tampered_claims(self) -> None:
        receipts = self.data.get("receipts") or {}
        expect(receipts, "no receipt was fetched")
        for r in receipts.values():
            claims = json.loads(json.dumps(r["applicationClaims"]))
            claims[0]["ledgerEntry"]["contents"] += " (tampered)"
            raises(
                ValueError,
                verify_receipt,
                json.loads(json.dumps(r["receipt"])),
                self.service_cert_pem,
                application_claims=claims,
            )
            other = json.loads(json.dumps(r["applicationClaims"]))
            other[0]["ledgerEntry"]["collectionId"] = "somewhere-else"
            raises(
                ValueError,
                verify_receipt,
                json.loads(json.dumps(r["receipt"])),
                self.service_cert_pem,
                application_claims=other,
            )

    # --- users --------------------------------------------------------------------------------

    def register(self, who: dict[str, str], role: str) -> None:
        r = plain(self.users_admin.create_or_update_user(who["id"], {"assignedRole": role}))
        expect(r == {"assignedRole": role, "userId": who["id"]}, f"create_or_update_user answered {r!r}")

    def user_lifecycle(self, role: str) -> None:
        who = self.cfg["fresh"][role]
        uid = who["id"]
        raises(ResourceNotFoundError, self.admin.get_user, uid)
        self.register(who, role)
        r = plain(self.admin.get_user(uid))
        expect(r == {"assignedRole": role, "userId": uid}, f"get_user answered {r!r}")
        if self.v2:
            listed = [plain(u) for u in self.admin.list_users()]
            expect({"assignedRole": role, "userId": uid} in listed, f"{uid} not in list_users {listed!r}")
        # the new identity acts with exactly that role
        fresh = self.client(who["pem"])
        constitution = plain(fresh.get_constitution())
        expect("digest" in constitution, f"get_constitution as the new {role}: {constitution!r}")
        if role == "Reader":
            raises(HttpResponseError, fresh.create_ledger_entry, {"contents": "no"}, status=403, code="NotAllowed")
        else:
            self.write(fresh, self.collection("by-new-users"), f"written by a new {role}", None)
        if role == "Administrator":
            expect(plain(fresh.get_user(uid)).get("assignedRole") == role, "the new Administrator cannot read users")
        else:
            raises(HttpResponseError, fresh.get_user, uid, status=403, code="NotAllowed")
        # role change (merge-patch of an existing user)
        other = "Reader" if role != "Reader" else "Contributor"
        r = plain(self.users_admin.create_or_update_user(uid, {"assignedRole": other}))
        expect(r == {"assignedRole": other, "userId": uid}, f"role change answered {r!r}")
        # deletion: 204, then 404, and the identity is refused
        status = self.users_admin.delete_user(uid, cls=lambda response, *_: response.http_response.status_code)
        expect(status == 204, f"delete_user answered {status}")
        raises(ResourceNotFoundError, self.admin.get_user, uid)
        raises(ClientAuthenticationError, fresh.get_constitution, status=401, code="InvalidAuthenticationInfo")

    def ledger_users(self) -> None:  # 2.x only: several roles per user
        who = self.cfg["multi"]
        uid = who["id"]
        r = plain(self.admin.create_or_update_ledger_user(uid, {"assignedRoles": ["Contributor", "Reader"]}))
        expect(r.get("userId") == uid and sorted(r.get("assignedRoles", [])) == ["Contributor", "Reader"], repr(r))
        r = plain(self.admin.get_ledger_user(uid))
        expect(r.get("userId") == uid and sorted(r.get("assignedRoles", [])) == ["Contributor", "Reader"], repr(r))
        listed = {u["userId"]: sorted(u["assignedRoles"]) for u in map(plain, self.admin.list_ledger_users())}
        expect(listed.get(uid) == ["Contributor", "Reader"], f"{uid} in list_ledger_users: {listed.get(uid)!r}")
        expect(listed.get(self.cfg["admin"]["id"]) == ["Administrator"], f"the Administrator in {listed!r}")
        # the one-role view shows the highest role
        r = plain(self.admin.get_user(uid))
        expect(r == {"assignedRole": "Contributor", "userId": uid}, f"get_user of a two-role user: {r!r}")
        multi = self.client(who["pem"])
        self.write(multi, self.collection("by-new-users"), "written by a two-role user", None)
        # a merge-patch adds roles (ACL): the answer shows those assigned, the user holds both
        r = plain(self.admin.create_or_update_ledger_user(uid, {"assignedRoles": ["Reader"]}))
        expect(r.get("assignedRoles") == ["Reader"], f"role change answered {r!r}")
        r = plain(self.admin.get_ledger_user(uid))
        expect(r.get("assignedRoles") == ["Contributor", "Reader"], f"after the merge-patch: {r!r}")
        self.write(multi, self.collection("by-new-users"), "still a Contributor", None)
        # a role is removed by deleting the user and creating it again
        status = self.admin.delete_ledger_user(uid, cls=lambda response, *_: response.http_response.status_code)
        expect(status == 204, f"delete_ledger_user answered {status}")
        raises(ResourceNotFoundError, self.admin.get_ledger_user, uid)
        raises(ResourceNotFoundError, self.admin.get_user, uid)
        r = plain(self.admin.create_or_update_ledger_user(uid, {"assignedRoles": ["Reader"]}))
        expect(plain(self.admin.get_ledger_user(uid)).get("assignedRoles") == ["Reader"], f"re-created: {r!r}")
        raises(HttpResponseError, multi.create_ledger_entry, {"contents": "no"}, status=403, code="NotAllowed")
        self.admin.delete_ledger_user(uid)

    # --- governance, identity -----------------------------------------------------------------

    def constitution(self) -> None:
        r = plain(self.reader.get_constitution())
        script = r.get("script")
        expect(isinstance(script, str) and script, f"constitution script: {r!r}")
        expect(r.get("digest") == hashlib.sha256(script.encode()).hexdigest(), f"digest {r.get('digest')!r}")

    def members(self) -> None:
        members = [plain(m) for m in self.reader.list_consortium_members()]
        expect(len(members) >= 1, "no consortium member")
        for m in members:
            expect(HEX64.match(m.get("id", "")), f"member id {m.get('id')!r}")
            cert = x509.load_pem_x509_certificate(m["certificate"].encode())
            expect(m["certificate"].startswith("-----BEGIN CERTIFICATE-----"), "member certificate is not PEM")
            expect(cert.subject is not None, "member certificate without subject")

    def enclave_quotes(self) -> None:
        r = plain(self.reader.get_enclave_quotes())
        current = r.get("currentNodeId")
        quotes = r.get("enclaveQuotes") or {}
        expect(isinstance(current, str) and current, f"currentNodeId {current!r}")
        expect(current in quotes, f"currentNodeId {current} has no quote: {sorted(quotes)}")
        for node, quote in quotes.items():
            expect(quote.get("nodeId") == node, f"quote {node}: {quote!r}")
            expect(quote.get("quoteVersion") == "Insecure_Virtual", f"quoteVersion of {node}: {quote!r}")

    def identity(self) -> None:
        kwargs: dict[str, Any] = {"certificate_endpoint": self.endpoint, "connection_verify": self.service_cert_path}
        client = ConfidentialLedgerCertificateClient(**kwargs)
        try:
            r = plain(client.get_ledger_identity(self.cfg["ledger_id"]))
        finally:
            client.close()
        pem = r.get("ledgerTlsCertificate")
        expect(r.get("ledgerId") == self.cfg["ledger_id"], f"ledgerId {r.get('ledgerId')!r}")
        expect(pem == self.service_cert_pem, "ledgerTlsCertificate is not the service certificate file")
        der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)
        want = x509.load_pem_x509_certificate(self.service_cert_pem.encode()).public_bytes(Encoding.DER)
        expect(der == want, "ledgerTlsCertificate is another certificate")
        # §9 step 0: the fetched certificate is all a client needs
        fetched = Path(self.cfg["workdir"]) / f"fetched-{self.prefix}.pem"
        fetched.write_text(pem)
        c = self.client(self.cfg["admin"]["pem"], str(fetched))
        expect("digest" in plain(c.get_constitution()), "a client pinned to the fetched certificate failed")

    # --- errors and refusals ------------------------------------------------------------------

    def missing_entry(self) -> None:
        start = time.monotonic()
        raises(
            ResourceNotFoundError,
            lambda: self.reader.begin_get_ledger_entry("99.999", polling_interval=0.5).result(),
            status=404,
        )
        elapsed = time.monotonic() - start
        self.data["missing_entry_seconds"] = elapsed
        expect(elapsed < 2.0, f"begin_get_ledger_entry('99.999') took {elapsed:.2f} s to fail (it polled)")

    def missing_receipt(self) -> None:
        start = time.monotonic()
        raises(ResourceNotFoundError, lambda: self.reader.begin_get_receipt("99.999", polling_interval=0.5).result())
        expect(time.monotonic() - start < 2.0, "begin_get_receipt('99.999') polled")

    def reader_cannot_write(self) -> None:
        forbidden = self.collection("forbidden")
        exc = raises(
            HttpResponseError,
            lambda: self.reader.begin_create_ledger_entry(
                {"contents": "a reader's write"}, collection_id=forbidden, polling_interval=0
            ).result(),
            status=403,
            code="NotAllowed",
        )
        expect(not isinstance(exc, ClientAuthenticationError), "a Reader's write was refused as unauthenticated")
        # nothing was written
        collections = [plain(c).get("collectionId") for c in self.admin.list_collections()]
        expect(forbidden not in collections, f"{forbidden} exists after a refused write")
        raises(ResourceNotFoundError, self.admin.get_current_ledger_entry, collection_id=forbidden)

    def contributor_cannot_manage_users(self) -> None:
        uid = self.cfg["stranger"]["id"]
        raises(
            HttpResponseError,
            self.contributor.create_or_update_user,
            uid,
            {"assignedRole": "Administrator"},
            status=403,
            code="NotAllowed",
        )
        raises(HttpResponseError, self.contributor.get_user, self.cfg["reader"]["id"], status=403, code="NotAllowed")
        raises(HttpResponseError, self.contributor.delete_user, self.cfg["reader"]["id"], status=403, code="NotAllowed")
        raises(ResourceNotFoundError, self.admin.get_user, uid)  # not created
        r = plain(self.admin.get_user(self.cfg["reader"]["id"]))  # not deleted
        expect(r.get("assignedRole") == "Reader", f"the Reader changed: {r!r}")

    def stranger_refused(self) -> None:
        raises(ClientAuthenticationError, self.stranger.get_constitution, status=401, code="InvalidAuthenticationInfo")
        raises(
            ClientAuthenticationError,
            lambda: self.stranger.begin_create_ledger_entry(
                {"contents": "a stranger's write"}, collection_id=self.collection("forbidden"), polling_interval=0
            ).result(),
            status=401,
            code="InvalidAuthenticationInfo",
        )
        raises(
            ClientAuthenticationError,
            self.stranger.create_or_update_user,
            self.cfg["stranger"]["id"],
            {"assignedRole": "Administrator"},
            status=401,
        )
        raises(ResourceNotFoundError, self.admin.get_user, self.cfg["stranger"]["id"])

    def user_defined_endpoints(self) -> None:  # 2.x only: notarium answers 501 NotImplemented
        raises(HttpResponseError, self.admin.get_user_defined_endpoint, status=501, code="NotImplemented")

    def user_defined_roles(self) -> None:  # 2.x only: create, read, update, assign, delete
        from azure.confidentialledger.models import Role, Roles  # 2.x only

        prefix = "Microsoft.ConfidentialLedger/ledger/"
        read, write, governance = (
            prefix + "transactions/read",
            prefix + "transactions/write",
            prefix + "governance/read",
        )
        name = f"{self.prefix}-auditor"
        who = self.cfg["custom"]
        raises(ResourceNotFoundError, self.admin.get_user_defined_role, role_name=name)
        # create, with the SDK's own model (sent as {"roles": [...]})
        answer = self.admin.create_user_defined_role(Roles(roles=[Role(role_name=name, role_actions=[read])]))
        expect(answer is None, f"create_user_defined_role returned {answer!r}")
        got = plain(self.admin.get_user_defined_role(role_name=name))  # ACL's names, in ACL's envelope
        expect(got == {"roles": [{"role_name": name, "role_actions": [read]}]}, f"get_user_defined_role: {got!r}")
        # assign it: the user may do exactly what the role allows
        r = plain(self.admin.create_or_update_ledger_user(who["id"], {"assignedRoles": [name]}))
        expect(r == {"assignedRoles": [name], "userId": who["id"]}, f"assigning {name} answered {r!r}")
        r = plain(self.admin.get_user(who["id"]))
        expect(r == {"assignedRole": name, "userId": who["id"]}, f"get_user of a {name}: {r!r}")
        user = self.client(who["pem"])
        listed = [plain(e) for e in user.list_ledger_entries(collection_id=self.collection("alpha"))]
        expect(listed, f"a {name} listed nothing")
        raises(HttpResponseError, user.get_constitution, status=403, code="NotAllowed")
        raises(HttpResponseError, user.create_ledger_entry, {"contents": "no"}, status=403, code="NotAllowed")
        # update (PATCH adds actions), with a plain JSON body; in force at once
        answer = self.admin.update_user_defined_role(
            {"roles": [{"roleName": name, "roleActions": [governance, write]}]}
        )
        expect(answer is None, f"update_user_defined_role returned {answer!r}")
        got = plain(self.admin.get_user_defined_role(role_name=name))
        want = {"roles": [{"role_name": name, "role_actions": sorted([read, write, governance])}]}
        expect(got == want, f"after update_user_defined_role: {got!r}")
        expect("digest" in plain(user.get_constitution()), "the updated role cannot read the constitution")
        self.write(user, self.collection("by-custom-role"), f"written by a {name}", None)
        # delete: refused while assigned, then done
        raises(HttpResponseError, self.admin.delete_user_defined_role, role_name=name, status=400, code="InvalidInput")
        expect(plain(self.admin.get_user_defined_role(role_name=name)) == want, "a refused delete changed the role")
        self.admin.delete_ledger_user(who["id"])
        status = self.admin.delete_user_defined_role(
            role_name=name, cls=lambda response, *_: response.http_response.status_code
        )
        expect(status == 200, f"delete_user_defined_role answered {status}")
        raises(ResourceNotFoundError, self.admin.get_user_defined_role, role_name=name)
        raises(ClientAuthenticationError, user.get_constitution, status=401)

    # --- the whole scenario ---------------------------------------------------------------------

    def run(self) -> None:
        c = self.check
        c("identity:get_ledger_identity", self.identity)
        c("users:register_contributor", lambda: self.register(self.cfg["contributor"], "Contributor"))
        c("users:register_reader", lambda: self.register(self.cfg["reader"], "Reader"))
        c("entries:create_in_collections", self.write_collections)
        c("entries:create_many", self.write_many)
        c("entries:get_ledger_entry", self.read_each)
        c("entries:get_current_ledger_entry", self.current_each)
        c("entries:get_transaction_status", self.status_each)
        c("entries:list_paged_range", self.list_many)
        c("entries:list_collections_entries", self.list_small)
        if self.v2:
            c("entries:list_by_tag", self.list_by_tag)
        c("collections:list", self.list_collections)
        c("receipts:verify_receipt", self.receipts)
        c("receipts:tampered_claims_rejected", self.tampered_claims)
        for role in ROLES:
            c(f"users:lifecycle_{role}", lambda role=role: self.user_lifecycle(role))
        if self.v2:
            c("users:ledger_users_several_roles", self.ledger_users)
            c("user_defined_roles:lifecycle", self.user_defined_roles)
            c("unsupported:user_defined_endpoints_501", self.user_defined_endpoints)
        c("governance:constitution", self.constitution)
        c("governance:consortium_members", self.members)
        c("governance:enclave_quotes", self.enclave_quotes)
        c("errors:missing_entry_fails_at_once", self.missing_entry)
        c("errors:missing_receipt_fails_at_once", self.missing_receipt)
        c("roles:reader_cannot_write", self.reader_cannot_write)
        c("roles:contributor_cannot_manage_users", self.contributor_cannot_manage_users)
        c("roles:unregistered_refused", self.stranger_refused)
        self.data["written"] = [list(w) for w in self.written]

    def close(self) -> None:
        for client in self.clients:
            client.close()


def main() -> int:
    if sys.flags.optimize:
        raise SystemExit("refusing to run under python -O: the SDK validates receipts with asserts")
    cfg = json.loads(sys.stdin.read())
    scenario = Scenario(cfg)
    try:
        scenario.run()
    finally:
        scenario.close()
    report = {"sdk_version": version("azure-confidentialledger"), "checks": scenario.checks, "data": scenario.data}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
