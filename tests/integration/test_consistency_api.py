"""Signed roots and consistency proofs over HTTPS, against a real ``notarium serve``.

A client takes the newest signed root, the ledger grows, and the proof that the new ledger extends
the kept root verifies offline with the service certificate (``verify_extension``), also after a
restart (a new view). Bad queries get ACL-shaped 4xx answers; a Reader may ask, strangers may not.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509

from integration.server import Server, new_identity, running
from notarium.errors import VerificationError
from notarium.ledger import init_service
from notarium.types import TxId
from notarium.verify import SignedRoot, proof_from_json, verify_extension, verify_signed_root


def session(server: Server, cert: Path | None) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # the pinned service certificate is the only trust anchor
    s.verify = str(server.service_cert)
    s.cert = str(cert) if cert is not None else None
    return s


def append(s: requests.Session, url: str, n: int) -> list[str]:
    txids = []
    for i in range(n):
        r = s.post(f"{url}/app/transactions", json={"contents": f"entry {i}"}, params={"collectionId": "c"})
        assert r.status_code == 200, r.text
        txids.append(r.headers["x-ms-ccf-transaction-id"])
    deadline = time.monotonic() + 10
    while s.get(f"{url}/app/transactions/{txids[-1]}/status").json()["state"] != "Committed":
        assert time.monotonic() < deadline, f"{txids[-1]} was not committed"
        time.sleep(0.01)
    return txids


def get_json(s: requests.Session, url: str, path: str, **params: str) -> dict[str, Any]:
    r = s.get(f"{url}{path}", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert TxId.parse(r.headers["x-ms-ccf-transaction-id"])
    body: dict[str, Any] = r.json()
    return body


def refused(s: requests.Session, url: str, status: int, code: str, **params: str) -> str:
    r = s.get(f"{url}/app/consistency", params=params)
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    error = r.json()["error"]
    assert error["code"] == code, error
    message: str = error["message"]
    assert message
    return message


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("consistency") / "ledger"
    init_service(d)
    return d


@pytest.fixture(scope="module")
def server(directory: Path) -> Iterator[Server]:
    with running(directory) as srv:
        yield srv
        assert srv.stop() == 0, "".join(srv.output[-50:])


@pytest.fixture(scope="module")
def admin(server: Server) -> Iterator[requests.Session]:
    s = session(server, server.admin_pem)
    yield s
    s.close()


def service_cert(server: Server) -> x509.Certificate:
    return x509.load_pem_x509_certificate(server.service_cert.read_bytes())


def test_a_kept_root_is_extended(server: Server, admin: requests.Session) -> None:
    url, cert = server.url, service_cert(server)
    append(admin, url, 3)
    kept = get_json(admin, url, "/app/signedRoot")
    assert set(kept) == {"transactionId", "treeSize", "root", "signature"}
    old = SignedRoot.from_json(kept)
    verify_signed_root(old, cert)
    assert old.tree_size == old.txid.seqno
    for _ in range(3):
        append(admin, url, 7)
    newest = SignedRoot.from_json(get_json(admin, url, "/app/signedRoot"))
    assert newest.tree_size > old.tree_size + 20

    body = get_json(admin, url, "/app/consistency", fromTransactionId=str(old.txid))
    assert set(body) == {"from", "to", "proof"}
    assert body["from"] == kept
    new = SignedRoot.from_json(body["to"])
    assert new.tree_size >= newest.tree_size
    proof = proof_from_json(body["proof"])
    assert proof
    verify_extension(old, new, proof, cert)

    # an explicit toTransactionId, and the same root at both ends
    body = get_json(admin, url, "/app/consistency", fromTransactionId=str(old.txid), toTransactionId=str(newest.txid))
    assert SignedRoot.from_json(body["to"]) == newest
    verify_extension(old, newest, proof_from_json(body["proof"]), cert)
    same = get_json(admin, url, "/app/consistency", fromTransactionId=str(old.txid), toTransactionId=str(old.txid))
    assert same == {"from": kept, "to": kept, "proof": []}
    # a tampered answer does not pass
    bad = proof_from_json(body["proof"])
    bad[0] = bytes(32)
    with pytest.raises(VerificationError, match="proof") as info:
        verify_extension(old, newest, bad, cert)
    assert info.value.check == "consistency"


def test_bad_queries(server: Server, admin: requests.Session) -> None:
    url = server.url
    entry = append(admin, url, 2)[-1]
    root = SignedRoot.from_json(get_json(admin, url, "/app/signedRoot"))
    later = append(admin, url, 1)[-1]
    newer = SignedRoot.from_json(get_json(admin, url, "/app/signedRoot"))
    assert TxId.parse(later) < newer.txid
    sig, view = str(root.txid), root.txid.view

    assert "required" in refused(admin, url, 400, "InvalidQueryParameterValue")
    assert "required" in refused(admin, url, 400, "InvalidQueryParameterValue", toTransactionId=sig)
    for malformed in ("abc", "2", "2.", ".5", "02.5", "-1.5", "2.5.6", "", "99999999999.1", "2147483648.1"):
        refused(admin, url, 400, "InvalidQueryParameterValue", fromTransactionId=malformed)
        refused(admin, url, 400, "InvalidQueryParameterValue", fromTransactionId=sig, toTransactionId=malformed)
    # committed, but not a signature transaction
    message = refused(admin, url, 400, "InvalidQueryParameterValue", fromTransactionId=entry)
    assert "not a signature transaction" in message
    message = refused(admin, url, 400, "InvalidQueryParameterValue", fromTransactionId=sig, toTransactionId=entry)
    assert "not a signature transaction" in message
    # never committed: unknown seqnos, a wrong view, seqno 0
    for never in (f"{view}.{10**9}", f"{view + 7}.{root.txid.seqno}", f"{view - 1}.{root.txid.seqno}", f"{view}.0"):
        message = refused(admin, url, 404, "InvalidTransactionId", fromTransactionId=never)
        assert never in message
        refused(admin, url, 404, "InvalidTransactionId", fromTransactionId=sig, toTransactionId=never)
    # from after to
    message = refused(
        admin, url, 400, "InvalidQueryParameterValue", fromTransactionId=str(newer.txid), toTransactionId=sig
    )
    assert "comes after" in message
    # refusals change nothing: the newest signed root is still the same
    assert SignedRoot.from_json(get_json(admin, url, "/app/signedRoot")) == newer


def test_who_may_ask(server: Server, admin: requests.Session, tmp_path: Path) -> None:
    url = server.url
    reader_pem, reader_id = new_identity(tmp_path, "reader")
    stranger_pem, _ = new_identity(tmp_path, "stranger")
    r = admin.patch(
        f"{url}/app/users/{reader_id}",
        data='{"assignedRole": "Reader"}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    sig = get_json(admin, url, "/app/signedRoot")["transactionId"]
    with session(server, reader_pem) as reader:
        assert get_json(reader, url, "/app/signedRoot")["transactionId"]
        assert get_json(reader, url, "/app/consistency", fromTransactionId=sig)["from"]["transactionId"] == sig
    for pem in (stranger_pem, None):
        with session(server, pem) as other:
            for path in ("/app/signedRoot", f"/app/consistency?fromTransactionId={sig}"):
                r = other.get(f"{url}{path}")
                assert r.status_code == 401, r.text
                assert r.json()["error"]["code"] == "InvalidAuthenticationInfo"


def test_proofs_across_a_restart(directory: Path, server: Server, admin: requests.Session) -> None:
    """Runs last in this module: it stops the module's server and serves the directory again."""
    cert = service_cert(server)
    kept = [get_json(admin, server.url, "/app/signedRoot")]
    append(admin, server.url, 5)
    kept.append(get_json(admin, server.url, "/app/signedRoot"))
    assert server.stop() == 0, "".join(server.output[-50:])
    with running(directory) as again, session(again, again.admin_pem) as s:
        append(s, again.url, 4)
        newest = SignedRoot.from_json(get_json(s, again.url, "/app/signedRoot"))
        assert newest.txid.view > max(SignedRoot.from_json(k).txid.view for k in kept)
        for obj in kept:
            old = SignedRoot.from_json(obj)
            body = get_json(s, again.url, "/app/consistency", fromTransactionId=str(old.txid))
            assert body["from"] == obj
            verify_extension(old, SignedRoot.from_json(body["to"]), proof_from_json(body["proof"]), cert)
        assert again.stop() == 0, "".join(again.output[-50:])
