"""notarium.client against real servers: verified reads and receipts, and signed roots that may
only grow.

- Client and AsyncClient append, read, list across pages, fetch receipts (verified against the
  pinned service certificate, and checked to be the receipt of the transaction asked for), manage
  users.
- An honest server's growth is accepted across many signatures and a restart; the trusted root
  survives in its state file.
- Forks and rollbacks are built for real: copies of one service directory (same service identity)
  given different histories, or an older copy served again. The client refuses each, with both
  signed roots (and the proof, when the server gave one) as evidence that verifies on its own.
- A server that lies in a consistency proof (the sans-I/O core fed a tampered answer) is caught.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from integration.server import new_identity, running
from notarium.client import AsyncClient, Client, ForkError
from notarium.client.operations import Answer, Call, op_sync
from notarium.errors import VerificationError
from notarium.ledger import EngineConfig, init_service, open_ledger
from notarium.types import TxStatus
from notarium.verify.consistency import SignedRoot, verify_signed_root
from notarium.verify.receipt import ReceiptVerifier

CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture(autouse=True)
def no_system_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CA_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def client_for(url: str, directory: Path, state: Path | None = None, pem: Path | None = None) -> Client:
    return Client(url, directory / "service_cert.pem", cert=pem or directory / "user0_combined.pem", state_file=state)


def grow(directory: Path, contents: list[str]) -> None:
    """Append ``contents`` with the engine in-process, one signature at the end (deterministic)."""
    led = open_ledger(directory, EngineConfig(auto_sign=False))
    try:
        for text in contents:
            led.append_entry(text)
        led.wait_committed(led.sign(), timeout=10)
    finally:
        led.close()


def test_client_reads_writes_and_verifies(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    init_service(directory)
    with running(directory, "--page-size", "3") as srv, client_for(srv.url, directory) as c:
        done = [c.append(f"entry {i}", collection="docs", tags=["t"] if i % 2 else None) for i in range(7)]
        assert {d.status for d in done} == {TxStatus.COMMITTED}
        pending = c.append("later", collection="docs", wait=False)
        assert pending.status == TxStatus.PENDING
        entry = c.get(done[1].txid)
        assert (entry.contents, entry.collection_id, entry.tags) == ("entry 1", "docs", ["t"])
        listed = list(c.entries(collection="docs", last=done[-1].txid))  # 3 pages of 3
        assert [e.contents for e in listed] == [f"entry {i}" for i in range(7)]
        assert [e.txid for e in c.entries(collection="docs", tag="t", last=done[-1].txid)] == [
            d.txid for d in done[1::2]
        ]
        assert c.status(done[0].txid) == TxStatus.COMMITTED
        receipt = c.receipt(done[2].txid)
        assert receipt.verified
        assert receipt.application_claims is not None
        assert receipt.application_claims[0]["ledgerEntry"]["contents"] == "entry 2"
        assert c.cose_receipt(done[2].txid)[:1] in (b"\xd2", b"\x84")  # COSE_Sign1, tagged or not
        pem, user_id = new_identity(tmp_path, "reader")
        user = c.set_user(user_id, ["Reader"])
        assert user.roles == ["Reader"]
        assert user_id in {u.user_id for u in c.users()}
        with client_for(srv.url, directory, pem=pem) as reader:
            assert reader.get(done[0].txid).contents == "entry 0"
        # roles are added (ACL's merge-patch); the answer is every role the user holds
        assert c.set_user(user_id, ["Contributor"]).roles == ["Contributor", "Reader"]
        c.remove_user(user_id)
        assert user_id not in {u.user_id for u in c.users()}
        c.remove_user(user_id)  # removing nobody is done already (ACL: 204)


def test_a_receipt_for_another_transaction_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    init_service(directory)
    with running(directory) as srv, client_for(srv.url, directory) as c:
        a, b = c.append("a"), c.append("b")
        other = c.receipt(b.txid).to_json()
    from cryptography import x509

    from notarium.client.operations import check_json_receipt

    verifier = ReceiptVerifier(x509.load_pem_x509_certificate((directory / "service_cert.pem").read_bytes()))
    with pytest.raises(VerificationError, match=f"receipt of {b.txid}, not of {a.txid}"):
        check_json_receipt(other, a.txid, verifier)
    other["applicationClaims"][0]["ledgerEntry"]["contents"] = "forged"
    with pytest.raises(VerificationError, match="claims"):
        check_json_receipt(other, b.txid, verifier)


def test_async_client(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    init_service(directory)

    async def main(url: str) -> None:
        async with AsyncClient(url, directory / "service_cert.pem", cert=directory / "user0_combined.pem") as c:
            done = await asyncio.gather(*(c.append(f"async {i}", collection="a") for i in range(5)))
            assert {d.status for d in done} == {TxStatus.COMMITTED}
            assert (await c.get(done[3].txid)).contents == "async 3"
            listed = [(e.txid, e.contents) async for e in c.entries(collection="a")]
            # concurrent appends: sequenced in whatever order they arrived, listed in TxId order
            assert listed == sorted((d.txid, f"async {i}") for i, d in enumerate(done))
            assert (await c.receipt(done[0].txid)).verified
            _pem, user_id = new_identity(tmp_path, "async-reader")
            assert (await c.set_user(user_id, ["Reader"])).roles == ["Reader"]
            assert user_id in {u.user_id for u in await c.users()}
            await c.remove_user(user_id)
            assert user_id not in {u.user_id for u in await c.users()}
            first = await c.sync()
            await c.append("more")
            assert (await c.sync()).tree_size > first.tree_size

    with running(directory) as srv:
        asyncio.run(main(srv.url))


def test_honest_growth_is_accepted_across_many_signatures_and_a_restart(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    init_service(directory)
    state = tmp_path / "trusted.json"
    sizes = []
    with running(directory) as srv, client_for(srv.url, directory, state) as c:
        for i in range(30):
            c.append(f"grow {i}")
            sizes.append(c.sync().tree_size)
    assert sizes == sorted(sizes)
    assert len(set(sizes)) == 30  # a new signature every time, each accepted with a proof
    with running(directory) as srv, client_for(srv.url, directory, state) as c:
        assert c.trusted.root is not None
        assert c.trusted.root.tree_size == sizes[-1]  # from the state file
        c.append("after the restart")  # a new view
        assert c.sync().tree_size > sizes[-1]


def test_a_fork_is_detected_with_evidence(tmp_path: Path) -> None:
    """Two copies of one service (same identity) given different histories of the same length."""
    honest, forked = tmp_path / "honest", tmp_path / "forked"
    init_service(honest)
    shutil.copytree(honest, forked)
    grow(honest, ["a1", "a2", "a3"])
    grow(forked, ["b1", "b2", "b3"])  # same view, same seqnos, other contents: a different root
    state = tmp_path / "trusted.json"
    with running(honest) as srv, client_for(srv.url, honest, state) as c:
        trusted = c.sync()
    with running(forked) as srv, client_for(srv.url, forked, state) as c:
        with pytest.raises(ForkError) as same_size:
            c.sync()
        c.append("b4")  # the forked ledger grows: now it must prove it extends the trusted root
        with pytest.raises(ForkError) as grown:
            c.sync()
        assert c.trusted.root == trusted  # nothing was accepted
    cert = c.service_cert
    assert same_size.value.kind == "fork"
    assert same_size.value.trusted == trusted
    presented = same_size.value.presented
    assert presented is not None
    assert presented.tree_size == trusted.tree_size
    assert presented.root != trusted.root
    verify_signed_root(presented, cert)  # both halves of the evidence are signed by the service
    verify_signed_root(trusted, cert)
    assert grown.value.kind == "fork"
    evidence = grown.value.evidence()
    assert evidence["trusted"] == trusted.to_json()
    assert SignedRoot.from_json(evidence["presented"]).tree_size == trusted.tree_size  # its root for that size
    assert evidence["proof"] is not None


def test_a_rollback_is_detected(tmp_path: Path) -> None:
    directory, old_copy = tmp_path / "ledger", tmp_path / "old"
    init_service(directory)
    grow(directory, ["x"])
    shutil.copytree(directory, old_copy)  # the operator keeps a backup ...
    grow(directory, ["y", "z"])
    state = tmp_path / "trusted.json"
    with running(directory) as srv, client_for(srv.url, directory, state) as c:
        trusted = c.sync()
    # ... and serves it later
    with running(old_copy) as srv, client_for(srv.url, old_copy, state) as c, pytest.raises(ForkError) as rolled:
        c.sync()
    assert rolled.value.kind == "rollback"
    assert rolled.value.trusted == trusted
    assert rolled.value.presented is not None
    assert rolled.value.presented.tree_size < trusted.tree_size


def test_a_lying_consistency_proof_is_caught(tmp_path: Path) -> None:
    """The sans-I/O core fed real signed roots and a tampered proof."""
    directory = tmp_path / "ledger"
    init_service(directory)
    with running(directory) as srv, client_for(srv.url, directory) as c:
        old = c.sync()
        for i in range(5):
            c.append(f"n{i}")
        r = c.http.get(
            "/app/consistency",
            params={"fromTransactionId": str(old.txid), "api-version": "2022-05-13"},
        )
        assert r.status_code == 200, r.text
        latest_json = r.json()["to"]
        proof = list(r.json()["proof"])
        cert = c.service_cert
    assert proof
    tampered = proof.copy()
    tampered[-1] = ("00" if tampered[-1][:2] != "00" else "11") + tampered[-1][2:]
    for bad in (tampered, proof[:-1], [*proof, proof[-1]]):
        op = op_sync(old, cert)
        call = next(op)
        assert isinstance(call, Call)
        assert call.path == "/app/signedRoot"
        body = {"from": old.to_json(), "to": latest_json, "proof": bad}
        import json

        call = op.send(Answer(200, {}, json.dumps(latest_json).encode()))
        assert isinstance(call, Call)
        assert call.path == "/app/consistency"
        with pytest.raises(ForkError) as caught:
            op.send(Answer(200, {}, json.dumps(body).encode()))
        assert caught.value.proof == [bytes.fromhex(p) for p in bad]


def test_a_listing_page_is_bounded_in_bytes(tmp_path: Path) -> None:
    """Pages end at about 4 MiB of contents whatever --page-size says, so a reader of large entries
    (the database trail's baseline) never holds a thousand of them at once."""
    directory = tmp_path / "ledger"
    init_service(directory)
    big = ["x" * 1_500_000 + str(i) for i in range(6)]
    with running(directory, "--max-entry-bytes", "2000000") as srv, client_for(srv.url, directory) as c:
        for text in big:
            c.append(text, collection="big", wait=False)
        c.append("last", collection="big")
        first = c.http.get("/app/transactions", params={"collectionId": "big", "api-version": "2022-05-13"}).json()
        assert 1 <= len(first["entries"]) <= 3
        assert "nextLink" in first
        assert [e.contents for e in c.entries(collection="big")] == [*big, "last"]
