"""End-to-end encrypted ("sealed") collections against a real `notarium serve` (issue #19, point 1).

- the CLI as its users would: a writer seals entries (`append --e2e`, or the profile's e2e
  collection), adds a reader (who then reads the past, no entry rewritten) and removes one (who
  cannot read what follows); a non-reader sees only envelopes; receipts verify and cover the
  envelope; `export` opens the collection into OUT/e2e/ and the chunks still audit;
- the envelope, its grant and the wrapped key open with another JOSE library (jwcrypto);
- Microsoft's SDK (in its oracle venv) sees the envelope as the entry's contents, and its own
  `verify_receipt` accepts the receipt;
- what the operator can do is caught: a grant signed by another key counts for nothing, an
  envelope moved to another collection fails (exit 3), a plaintext entry is flagged;
- the service directory, the server's logs (debug) and PostgreSQL (`serve --store`) hold no
  data key, no reader's private key and no plaintext.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws

from integration.oracle import interpreter
from integration.server import Server, clean_env, running
from leaks import files_holding, tables_holding
from notarium.client import Client
from notarium.client.e2e import ReaderKey, SealedCollection, crypto, keys_collection
from notarium.errors import VerificationError
from notarium.ledger import init_service

EXIT_VERIFY = 3
SDK_SCENARIO = Path(__file__).with_name("sdk_sealed_scenario.py")


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notarium", *args], check=False, capture_output=True, text=True, env=env, timeout=60
    )


def ok_json(*args: str, env: dict[str, str]) -> Any:
    proc = cli(*args, "--json", env=env)
    assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


@dataclass
class Person:
    name: str
    key_file: Path
    key: ReaderKey
    env: dict[str, str]

    @property
    def card(self) -> Path:
        return self.key_file.with_name(self.key_file.name + ".pub")


@dataclass
class Ledger:
    server: Server
    root: Path
    alice: Person  # the writer
    bob: Person
    carol: Person  # never a reader

    def client(self) -> Client:
        return Client(self.server.url, self.server.service_cert, cert=self.server.admin_pem)


def _person(root: Path, server: Server, name: str, collections: dict[str, Any]) -> Person:
    key_file = root / f"{name}.key"
    made = cli("keys", "new", str(key_file), "--json", env=clean_env())
    assert made.returncode == 0, made.stderr
    profile = {
        "endpoint": server.url,
        "service_cert": str(server.service_cert),
        "cert": str(server.admin_pem),
        "e2e": {c: {"key": str(key_file), **s} for c, s in collections.items()},
    }
    path = root / f"{name}_profile.json"
    path.write_text(json.dumps(profile))
    return Person(name, key_file, ReaderKey.load(key_file), {**clean_env(), "NOTARIUM_PROFILE": str(path)})


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    root = tmp_path_factory.mktemp("sealed")
    init_service(root / "ledger")
    with running(root / "ledger", "--chunk-size", "4000") as server:
        alice = _person(root, server, "alice", {"secrets": {}})
        bob = _person(root, server, "bob", {"secrets": {"writers": [alice.key.writer_id]}})
        carol = _person(root, server, "carol", {"secrets": {"writers": [alice.key.writer_id]}})
        yield Ledger(server, root, alice, bob, carol)


def test_a_reader_added_reads_the_past_and_a_reader_removed_not_what_follows(ledger: Ledger) -> None:
    alice, bob, carol = ledger.alice, ledger.bob, ledger.carol
    before = ok_json("append", "the plan: north at dawn", "-c", "secrets", "-t", "ops", env=alice.env)
    assert before["e2e"] is True
    tx1 = before["transactionId"]
    with ledger.client() as admin:
        stored = admin.get(tx1)
    assert stored.contents.startswith("eyJ")
    assert "north" not in stored.contents
    assert stored.tags == ["ops"]  # tags stay visible

    # Bob is not a reader yet: he sees the envelope, and is told it is sealed
    seen = ok_json("get", tx1, env=bob.env)["entry"]
    assert seen["contents"] == stored.contents
    assert seen["e2e"]["state"] == "sealed"
    human = cli("get", tx1, env=bob.env)
    assert human.returncode == 0
    assert "sealed" in human.stderr

    added = ok_json("readers", "add", str(bob.card), "-c", "secrets", env=alice.env)
    assert len(added["grants"]) == 1
    opened = ok_json("get", tx1, env=bob.env)["entry"]
    assert (opened["contents"], opened["e2e"]["state"], opened["e2e"]["epoch"]) == (
        "the plan: north at dawn",
        "opened",
        1,
    )
    with ledger.client() as admin:
        assert admin.get(tx1).contents == stored.contents  # nothing was rewritten

    listed = ok_json("readers", "list", "-c", "secrets", env=alice.env)
    assert listed["readers"] == sorted([alice.key.reader_id, bob.key.reader_id])
    removed = ok_json("readers", "remove", bob.key.reader_id, "-c", "secrets", env=alice.env)
    assert removed["epoch"] == 2
    tx2 = ok_json("append", "new plan: south at noon", "-c", "secrets", env=alice.env)["transactionId"]

    as_bob = {e["transactionId"]: e for e in ok_json("list", "-c", "secrets", env=bob.env)["entries"]}
    assert as_bob[tx1]["contents"] == "the plan: north at dawn"  # what he could read, he still can
    assert as_bob[tx2]["e2e"] == {
        "state": "sealed",
        "keyId": as_bob[tx2]["e2e"]["keyId"],
        "epoch": 2,
        "reason": "its key was not granted to this reader",
    }
    assert "south" not in as_bob[tx2]["contents"]
    as_carol = ok_json("list", "-c", "secrets", env=carol.env)["entries"]
    assert [e["e2e"]["state"] for e in as_carol] == ["sealed", "sealed"]
    as_alice = ok_json("list", "-c", "secrets", env=alice.env)["entries"]
    assert [e["contents"] for e in as_alice] == ["the plan: north at dawn", "new plan: south at noon"]

    # receipts verify and cover the envelope (the ciphertext), not the plaintext
    for txid in (tx1, tx2):
        assert ok_json("receipt", txid, env=bob.env)["verified"] is True
    with ledger.client() as admin:
        receipt = admin.receipt(tx2)
        assert receipt.verified
        assert receipt.application_claims is not None
        assert receipt.application_claims[0]["ledgerEntry"]["contents"] == admin.get(tx2).contents

    # export: the chunks as ever, and the collection opened into OUT/e2e/
    out = ledger.root / "export-bob"
    exported = ok_json("export", str(out), env=bob.env)
    assert exported["e2e"] == {"secrets": {"opened": 1, "sealed": 1, "plain": 0}}
    lines = [json.loads(line) for line in (out / "e2e" / "secrets.jsonl").read_text().splitlines()]
    assert [(e["transactionId"], e["e2e"]["state"]) for e in lines] == [(tx1, "opened"), (tx2, "sealed")]
    assert (out / "e2e" / "secrets.jsonl").stat().st_mode & 0o077 == 0
    audited = cli("audit", str(out), "--json", env=bob.env)
    assert audited.returncode == 0, audited.stdout + audited.stderr


def test_append_e2e_needs_a_key_and_a_collection_starts_with_its_writer_as_sole_reader(ledger: Ledger) -> None:
    env = {k: v for k, v in ledger.alice.env.items() if k != "NOTARIUM_PROFILE"}
    env |= {"NOTARIUM_ENDPOINT": ledger.server.url, "NOTARIUM_SERVICE_CERT": str(ledger.server.service_cert)}
    env["NOTARIUM_CERT"] = str(ledger.server.admin_pem)
    refused = cli("append", "x", "-c", "notes", "--e2e", env=env)
    assert refused.returncode == 1
    assert "no end-to-end key" in refused.stderr
    with ledger.client() as admin:
        assert admin.latest(collection="notes") is None  # nothing written
    tx = ok_json("append", "note 1", "-c", "notes", "--e2e", "--e2e-key", str(ledger.alice.key_file), env=env)
    listed = ok_json("readers", "list", "-c", "notes", "--e2e-key", str(ledger.alice.key_file), env=env)
    assert listed["readers"] == [ledger.alice.key.reader_id]
    plain = ok_json("get", tx["transactionId"], env=env)["entry"]  # no key at hand: the envelope
    assert plain["e2e"] == {"state": "sealed", "reason": "no end-to-end key"}


def test_the_envelope_and_its_grant_open_with_another_jose_library(ledger: Ledger) -> None:
    """What a reader holds (the key file) and what the ledger holds (envelope, grant) is enough for
    jwcrypto: the grant's ES256 signature, the wrapped key (ECDH-ES+A256KW), the envelope (A256KW)."""
    with ledger.client() as admin:
        sealed = SealedCollection(admin, "jwcrypto", ledger.alice.key)
        sealed.add_reader(ledger.bob.key.card)
        tx = sealed.append("opened by jwcrypto ✓").txid
        envelope = admin.get(tx).contents
        grants = [e.contents for e in admin.entries(collection=keys_collection("jwcrypto"))]
    bob_file = json.loads(ledger.bob.key_file.read_text())
    alice_sig = jwcrypto_jwk.JWK(**ledger.alice.key.card.sig.as_dict(private=False))
    opened = []
    for grant in grants:
        signed = jwcrypto_jws.JWS()
        signed.deserialize(grant)
        signed.verify(alice_sig, alg="ES256")
        payload = json.loads(signed.payload)
        assert payload["collection"] == "jwcrypto"
        for reader in payload["readers"]:
            if reader["id"] != ledger.bob.key.reader_id:
                continue
            wrapped = jwcrypto_jwe.JWE()
            wrapped.deserialize(reader["key"], key=jwcrypto_jwk.JWK(**bob_file["enc"]))
            data_key = jwcrypto_jwk.JWK(**json.loads(wrapped.payload))
            entry = jwcrypto_jwe.JWE()
            entry.deserialize(envelope, key=data_key)
            assert json.loads(entry.objects["protected"])["collection"] == "jwcrypto"
            opened.append(entry.payload.decode())
    assert opened == ["opened by jwcrypto ✓"]


@pytest.mark.parametrize("oracle", ["acl2", "acl1"])
def test_the_azure_sdk_sees_the_envelope_and_verifies_its_receipt(ledger: Ledger, oracle: str) -> None:
    with ledger.client() as admin:
        sealed = SealedCollection(admin, f"sdk-{oracle}", ledger.alice.key)
        txs = [str(sealed.append(f"for the SDK {i}").txid) for i in range(2)]
        envelopes = {tx: admin.get(tx).contents for tx in txs}
    config = {
        "endpoint": ledger.server.url,
        "serviceCert": str(ledger.server.service_cert),
        "pem": str(ledger.server.admin_pem),
        "entries": [{"transactionId": tx, "collectionId": f"sdk-{oracle}"} for tx in txs],
    }
    proc = subprocess.run(
        [str(interpreter(oracle)), "-I", str(SDK_SCENARIO)],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["get"] == envelopes
    assert seen["list"] == envelopes
    assert seen["receipt"] == envelopes
    for tx, envelope in envelopes.items():
        assert crypto.envelope_header(envelope) is not None, tx


def test_what_the_operator_can_do_is_caught(ledger: Ledger) -> None:
    """Whoever runs the ledger (or any user who may write) signs a grant with another key, moves
    an envelope to another collection, writes a plaintext entry into the sealed collection."""
    mallory = ReaderKey.generate()
    with ledger.client() as admin:
        sealed = SealedCollection(admin, "guarded", ledger.alice.key)
        first = sealed.append("genuine")
        real_kid = sealed.ring.current().kid  # type: ignore[union-attr]
        forged_key = crypto.DataKey.generate()
        payload = {
            "type": "notarium-e2e-grant",
            "v": 1,
            "collection": "guarded",
            "kid": forged_key.kid,
            "epoch": 2,
            "previous": real_kid,
            "readers": [
                {
                    "id": r.reader_id,
                    "enc": r.card.enc.as_dict(private=False),
                    "key": crypto.wrap(forged_key, r.card.enc, "guarded"),
                }
                for r in (ledger.alice.key, mallory)
            ],
        }
        admin.append(crypto.sign_grant(payload, mallory), collection=keys_collection("guarded"))
        fresh = SealedCollection(admin, "guarded", ledger.alice.key)
        after = fresh.append("still under the real key")
        header = crypto.envelope_header(admin.get(after.txid).contents)
        assert header is not None
        assert header.kid == real_kid
        assert len(fresh.ring.rejected) == 1
        assert "not a trusted writer" in fresh.ring.rejected[0].reason

        moved = admin.append(admin.get(first.txid).contents, collection="elsewhere")
        with pytest.raises(VerificationError) as caught:
            fresh.open(admin.get(moved.txid))
        assert caught.value.check == "e2e-collection"

        injected = admin.append("pay mallory", collection="guarded")
        assert fresh.open(admin.get(injected.txid)).state == "plain"

    as_alice = {**ledger.alice.env, "NOTARIUM_E2E_KEY": str(ledger.alice.key_file)}
    failed = cli("get", str(moved.txid), "--json", env=as_alice)
    assert failed.returncode == EXIT_VERIFY, failed.stdout + failed.stderr
    assert "sealed for collection 'guarded'" in json.loads(failed.stdout)["error"]
    listed = ok_json("readers", "list", "-c", "guarded", env=as_alice)
    assert [r["reason"] for r in listed["rejected"]] == [
        f"signed by {mallory.writer_id}, not a trusted writer of this collection"
    ]
    warned = cli("list", "-c", "guarded", env=as_alice)
    assert warned.returncode == 0
    assert "[NOT e2e] pay mallory" in warned.stdout


# --- nothing to decrypt with, anywhere the operator looks --------------------------------------------


def _forms(secret: bytes) -> list[bytes]:
    """A secret as bytes, hex, base64 and base64url (with and without padding)."""
    b64 = base64.b64encode(secret)
    url = base64.urlsafe_b64encode(secret)
    return [secret, secret.hex().encode(), b64, b64.rstrip(b"="), url, url.rstrip(b"=")]


def _write_sealed(server: Server, root: Path) -> list[bytes]:
    """Seal marked entries in two collections through ``server`` (a rotation in between, a second
    reader added); the markers: every data key and every reader private key in every form, and the
    plaintexts."""
    alice, bob = ReaderKey.generate(), ReaderKey.generate()
    plaintexts = [f"plaintext-{secrets.token_hex(8)}" for _ in range(6)]
    with Client(server.url, server.service_cert, cert=server.admin_pem) as client:
        rings = []
        for collection, texts in (("vault", plaintexts[:3]), ("vault-2", plaintexts[3:])):
            sealed = SealedCollection(client, collection, alice, memory=root / f"{collection}.seen")
            sealed.append(texts[0], tags=["t"])
            sealed.add_reader(bob.card)
            sealed.append(texts[1])
            sealed.remove_reader(bob.reader_id)
            sealed.append(texts[2])
            assert [o.text for o in sealed.entries()] == texts
            rings.append(sealed.ring)
    data_keys = [r.data_key(kid) for r in rings for kid in r.keys]
    assert len(data_keys) == 4
    private = [base64.urlsafe_b64decode(k.to_json()[p]["d"] + "==") for k in (alice, bob) for p in ("enc", "sig")]
    markers = [m for k in data_keys if k is not None for m in _forms(k.secret)]
    markers += [m for d in private for m in _forms(d)]
    return markers + [p.encode() for p in plaintexts]


def test_no_data_key_reader_key_or_plaintext_in_the_service_directory_or_its_logs(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    init_service(directory)
    with running(directory, verbose=2) as server:
        markers = _write_sealed(server, tmp_path)
    assert files_holding(directory, markers) == []
    log = "".join(server.output).encode()
    assert b'"path":"/app/transactions"' in log  # the access log did record the requests
    assert [m.decode(errors="replace") for m in markers if m in log] == []


def _wait_primary(server: Server) -> None:
    """A node on a store serves once it listens; it sequences once it holds the lease."""
    for _ in range(400):
        with contextlib.suppress(requests.RequestException, ValueError):
            r = requests.get(f"{server.url}/node/state", verify=str(server.service_cert), timeout=3)
            if r.json().get("role") == "Primary":
                return
        time.sleep(0.05)
    raise AssertionError("the node never became primary")


def test_no_data_key_reader_key_or_plaintext_in_postgresql(tmp_path: Path, pg_dsn: str) -> None:
    directory = tmp_path / "node"
    init_service(directory)
    with running(directory, "--store", pg_dsn, verbose=2, timeout=60) as server:
        _wait_primary(server)
        markers = _write_sealed(server, tmp_path)
    assert tables_holding(pg_dsn, markers) == []
    assert files_holding(directory, markers) == []
    log = "".join(server.output).encode()
    assert [m.decode(errors="replace") for m in markers if m in log] == []
