"""notarium.cluster.join: sealing to a node key, the join request and its answer (no mocks).

- Sealing matches the committed vectors (tests/vectors/join/, written by an independent generator),
  round-trips, and refuses, as a VerificationError and nothing else, any change to any field, a
  truncation or extension, another key, another context, and random bytes.
- A join request proves possession of its key: one naming a key its sender does not hold is
  refused; so is a request altered after signing, a quote for another key or of another platform,
  a malformed request, and a stale one.
- An admission's answer opens, for the node that asked only, to the service key and the same
  ledger secret chain; a recorded node certificate is reused while valid.
"""

from __future__ import annotations

import base64
import datetime
import importlib.util
import json
import time
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from notarium.cluster import join as join_module
from notarium.cluster import limits as limits_module
from notarium.cluster.join import (
    CHECK_ANSWER,
    CHECK_EXPIRED,
    CHECK_MALFORMED,
    CHECK_QUOTE,
    CHECK_SIGNATURE,
    admit,
    make_join_request,
    node_info,
    open_join_secrets,
    parse_join_answer,
    parse_join_request,
    pending_answer,
    secrets_context,
    trusted_answer,
    verify_quote,
    virtual_quote,
)
from notarium.cluster.sealing import CHECK_SEALED, SEAL_MIN_BYTES, _seal_with, open_from_node, seal_to_node
from notarium.errors import VerificationError
from notarium.ledger.identity import cert_pem, endorse_previous_identity, new_ec_key, public_pem, service_certificate
from notarium.recovery.chain import LedgerSecrets
from notarium.verify.keys import check_endorsement, key_id, load_pem_cert

TESTS = Path(__file__).resolve().parents[2]
VECTORS = TESTS / "vectors" / "join" / "seal.json"
GENERATOR = TESTS / "tools" / "gen_join_vectors.py"
NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
ADDRESS = "https://node2.example:8443"


@cache
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("notarium_tests_gen_join_vectors", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cases() -> list[dict[str, str]]:
    return list(json.loads(VECTORS.read_text())["cases"])


def p384(scalar_hex: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int(scalar_hex, 16), ec.SECP384R1())


def fails(check: str, fn: Any, *args: Any, **kwargs: Any) -> VerificationError:
    with pytest.raises(VerificationError) as info:
        fn(*args, **kwargs)
    assert info.value.check == check, (info.value.check, str(info.value))
    return info.value


# --- sealing: vectors ------------------------------------------------------------------------------


def test_vectors_are_what_the_independent_generator_writes() -> None:
    assert VECTORS.read_text() == json.dumps(generator().vectors(), indent=2) + "\n"
    assert len(cases()) == 3


@pytest.mark.parametrize("n", range(3))
def test_vector_seals_and_opens(n: int) -> None:
    case = cases()[n]
    recipient, ephemeral = p384(case["recipientPrivateScalar"]), p384(case["ephemeralPrivateScalar"])
    context, plaintext, blob = (bytes.fromhex(case[k]) for k in ("context", "plaintext", "blob"))
    point = recipient.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert point.hex() == case["recipientPublicPoint"]
    assert _seal_with(ephemeral, recipient.public_key(), plaintext, context) == blob
    assert open_from_node(recipient, blob, context=context) == plaintext
    assert len(blob) == 1 + 97 + len(plaintext) + 16
    assert blob[0] == 1


# --- sealing: properties ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 31, 32, 4096, 100_000])
def test_round_trip(size: int) -> None:
    key = new_ec_key()
    text = bytes(range(256)) * (size // 256) + bytes(size % 256)
    blob = seal_to_node(key.public_key(), text, context=b"ctx")
    assert open_from_node(key, blob, context=b"ctx") == text
    assert seal_to_node(key.public_key(), text, context=b"ctx") != blob  # a fresh ephemeral key each time


def _vector() -> tuple[ec.EllipticCurvePrivateKey, bytes, bytes]:
    case = cases()[0]
    return p384(case["recipientPrivateScalar"]), bytes.fromhex(case["blob"]), bytes.fromhex(case["context"])


# every field: the version, the point's format byte, x and y of the point, the ciphertext, the tag
TAMPERED_OFFSETS = {
    "version": 0,
    "point-format": 1,
    "point-x-first": 2,
    "point-x-last": 49,
    "point-y-first": 50,
    "point-y-last": 97,
    "ciphertext-first": 98,
    "ciphertext-last": -17,
    "tag-first": -16,
    "tag-last": -1,
}


@pytest.mark.parametrize("field", list(TAMPERED_OFFSETS))
@pytest.mark.parametrize("flip", [0x01, 0x80, 0xFF])
def test_tampering_with_any_field_is_refused(field: str, flip: int) -> None:
    key, blob, context = _vector()
    tampered = bytearray(blob)
    tampered[TAMPERED_OFFSETS[field]] ^= flip
    fails(CHECK_SEALED, open_from_node, key, bytes(tampered), context=context)


def test_every_single_byte_change_is_refused() -> None:
    key, blob, context = _vector()
    for i in range(len(blob)):
        tampered = bytearray(blob)
        tampered[i] ^= 0x40
        fails(CHECK_SEALED, open_from_node, key, bytes(tampered), context=context)


def test_truncation_and_extension_are_refused() -> None:
    key, blob, context = _vector()
    for n in (0, 1, 97, 98, SEAL_MIN_BYTES - 1, SEAL_MIN_BYTES, len(blob) - 1):
        fails(CHECK_SEALED, open_from_node, key, blob[:n], context=context)
    fails(CHECK_SEALED, open_from_node, key, blob + b"\x00", context=context)


def test_another_valid_ephemeral_point_is_refused() -> None:
    key, blob, context = _vector()
    other = (
        new_ec_key()
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    fails(CHECK_SEALED, open_from_node, key, blob[:1] + other + blob[98:], context=context)


def test_compressed_ephemeral_point_is_refused() -> None:
    key, blob, context = _vector()
    point = blob[1:98]
    compressed = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), point).public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    fails(CHECK_SEALED, open_from_node, key, blob[:1] + compressed + blob[98:], context=context)


def test_wrong_key_and_wrong_context_are_refused() -> None:
    key, blob, context = _vector()
    fails(CHECK_SEALED, open_from_node, new_ec_key(), blob, context=context)
    fails(CHECK_SEALED, open_from_node, key, blob, context=context + b"x")
    fails(CHECK_SEALED, open_from_node, key, blob, context=b"")


def test_keys_of_other_curves_are_caller_errors() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="P-384"):
        seal_to_node(p256.public_key(), b"x", context=b"")
    with pytest.raises(ValueError, match="P-384"):
        open_from_node(p256, bytes(200), context=b"")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_are_a_verification_error(data: bytes) -> None:
    key, _blob, context = _vector()
    fails(CHECK_SEALED, open_from_node, key, data, context=context)


# --- the join request ------------------------------------------------------------------------------


def request_for(key: ec.EllipticCurvePrivateKey, **overrides: Any) -> dict[str, Any]:
    body = make_join_request(key, hosts=["node2.example", "10.0.0.2"], address=ADDRESS, created_at=int(time.time()))
    body.update(overrides)
    return body


def test_a_signed_request_is_accepted() -> None:
    key = new_ec_key()
    req = parse_join_request(json.loads(json.dumps(request_for(key))), now=time.time())
    assert req.node_id == key_id(key.public_key())
    assert req.public_key == key.public_key()
    assert req.hosts == ("node2.example", "10.0.0.2")
    assert req.address == ADDRESS
    assert req.quote == virtual_quote(key.public_key())
    assert req.quote["reportData"] == req.node_id  # the quote binds SHA-256 of the key
    info = node_info(req, "Pending")
    assert info["status"] == "Pending"
    assert info["node_data"] == {"hosts": ["node2.example", "10.0.0.2"], "address": ADDRESS}
    assert info["quote_info"]["report_data"] == req.node_id


def test_a_key_the_sender_does_not_hold_is_refused() -> None:
    """Proof of possession: naming the victim's key (and its quote) but signing with one's own."""
    victim, attacker = new_ec_key(), new_ec_key()
    forged = request_for(attacker)
    forged["publicKey"] = public_pem(victim.public_key()).decode()
    forged["quote"] = virtual_quote(victim.public_key())
    error = fails(CHECK_SIGNATURE, parse_join_request, forged, now=time.time())
    assert "node key" in str(error)


@pytest.mark.parametrize(
    "change",
    [
        {"hosts": ["node2.example", "evil.example"]},
        {"address": "https://evil.example:8443"},
        {"createdAt": 1},
    ],
    ids=["hosts", "address", "createdAt"],
)
def test_a_request_altered_after_signing_is_refused(change: dict[str, Any]) -> None:
    body = request_for(new_ec_key(), **change)
    fails(CHECK_SIGNATURE, parse_join_request, body, now=time.time())


def test_a_corrupted_signature_is_refused() -> None:
    body = request_for(new_ec_key())
    signature = bytearray(base64.b64decode(body["signature"]))
    signature[-1] ^= 1
    fails(
        CHECK_SIGNATURE,
        parse_join_request,
        {**body, "signature": base64.b64encode(signature).decode()},
        now=time.time(),
    )
    fails(
        CHECK_SIGNATURE,
        parse_join_request,
        {**body, "signature": base64.b64encode(b"\x30\x00").decode()},
        now=time.time(),
    )


def _signed_with_quote(key: ec.EllipticCurvePrivateKey, quote: dict[str, Any]) -> dict[str, Any]:
    """A request correctly signed by ``key`` but carrying ``quote``: the signer is honest about
    its key, the quote is not."""
    body = request_for(key)
    fields = {k: v for k, v in body.items() if k != "signature"}
    fields["quote"] = quote
    signature = key.sign(join_module._canonical(fields), ec.ECDSA(hashes.SHA384()))
    return {**fields, "signature": base64.b64encode(signature).decode()}


def test_a_quote_for_another_key_is_refused() -> None:
    key = new_ec_key()
    body = _signed_with_quote(key, virtual_quote(new_ec_key().public_key()))
    error = fails(CHECK_QUOTE, parse_join_request, body, now=time.time())
    assert "another key" in str(error)


@pytest.mark.parametrize(
    "change",
    [
        {"platform": "SNP"},
        {"virtual": False},
        {"quoteVersion": "OE_SGX_v1"},
        {"raw": "00ff"},
    ],
)
def test_only_virtual_quotes_are_accepted(change: dict[str, Any]) -> None:
    key = new_ec_key()
    body = _signed_with_quote(key, {**virtual_quote(key.public_key()), **change})
    fails(CHECK_QUOTE, parse_join_request, body, now=time.time())
    with pytest.raises(VerificationError):
        verify_quote({**virtual_quote(key.public_key()), **change}, key.public_key())


def _malformed_requests() -> dict[str, Any]:
    key = new_ec_key()
    good = request_for(key)
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return {
        "array": [good],
        "string": "join",
        "null": None,
        "empty": {},
        "missing field": {k: v for k, v in good.items() if k != "address"},
        "unknown field": {**good, "role": "primary"},
        "wrong format": {**good, "format": "notarium-join-request/2"},
        "public key not PEM": {**good, "publicKey": "not a key"},
        "public key a number": {**good, "publicKey": 5},
        "public key P-256": {**good, "publicKey": public_pem(p256).decode()},
        "public key RSA": {**good, "publicKey": public_pem(rsa_key).decode()},
        "public key huge": {**good, "publicKey": "A" * 10_000},
        "hosts not a list": {**good, "hosts": "node2.example"},
        "wildcard host": {**good, "hosts": ["*.example"]},
        "host with space": {**good, "hosts": ["a b"]},
        "host empty": {**good, "hosts": [""]},
        "host not a string": {**good, "hosts": [1]},
        "too many hosts": {**good, "hosts": [f"h{i}.example" for i in range(33)]},
        "address http": {**good, "address": "http://node2.example:8443"},
        "address without port": {**good, "address": "https://node2.example"},
        "address with path": {**good, "address": "https://node2.example:8443/x"},
        "address with user": {**good, "address": "https://u:p@node2.example:8443"},
        "address bad port": {**good, "address": "https://node2.example:99999"},
        "createdAt float": {**good, "createdAt": 1.5},
        "createdAt bool": {**good, "createdAt": True},
        "createdAt string": {**good, "createdAt": "now"},
        "quote not an object": {**good, "quote": "virtual"},
        "quote missing reportData": {**good, "quote": {k: v for k, v in good["quote"].items() if k != "reportData"}},
        "quote with a list": {**good, "quote": {**good["quote"], "raw": []}},
        "signature not base64": {**good, "signature": "***"},
        "signature a number": {**good, "signature": 7},
        "signature huge": {**good, "signature": "A" * 4000},
    }


MALFORMED = _malformed_requests()


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_requests_are_refused(name: str) -> None:
    fails(CHECK_MALFORMED, parse_join_request, MALFORMED[name], now=time.time())


def test_stale_and_future_requests_are_refused() -> None:
    key = new_ec_key()
    now = time.time()
    old = make_join_request(key, hosts=[], address=ADDRESS, created_at=int(now) - 301)
    fails(CHECK_EXPIRED, parse_join_request, old, now=now)
    future = make_join_request(key, hosts=[], address=ADDRESS, created_at=int(now) + 301)
    fails(CHECK_EXPIRED, parse_join_request, future, now=now)
    edge = make_join_request(key, hosts=[], address=ADDRESS, created_at=int(now) - 299)
    assert parse_join_request(edge, now=now).node_id == key_id(key.public_key())


def test_bad_hosts_and_addresses_are_caller_errors_when_making_a_request() -> None:
    key = new_ec_key()
    with pytest.raises(ValueError, match="not a DNS name"):
        make_join_request(key, hosts=["*.example"], address=ADDRESS, created_at=0)
    with pytest.raises(ValueError, match="https://host:port"):
        make_join_request(key, hosts=[], address="node2:8443", created_at=0)
    assert make_join_request(key, hosts=["::1"], address="https://[::1]:8443", created_at=0)["hosts"] == ["::1"]


# --- admission and its answer ----------------------------------------------------------------------


class Service:
    def __init__(self) -> None:
        self.key = new_ec_key()
        self.cert = service_certificate(self.key, now=NOW)
        self.secrets = LedgerSecrets([(1, bytes(32)), (10, bytes(range(32))), (57, b"\x07" * 32)])

    def admit(self, node: ec.EllipticCurvePrivateKey, node_cert_pem: str | None = None) -> dict[str, Any]:
        pem = public_pem(node.public_key()).decode()
        cert, sealed = admit(
            self.key, self.cert, self.secrets, pem, ["node2.example"], now=NOW, node_cert_pem=node_cert_pem
        )
        node_id = key_id(node.public_key())
        return trusted_answer(node_id, cert, cert_pem(self.cert).decode(), sealed, "ledger-1", "Private")


def test_admission_opens_for_the_node_to_the_service_key_and_secret_chain() -> None:
    service, node = Service(), new_ec_key()
    answer = json.loads(json.dumps(service.admit(node)))
    admission = parse_join_answer(answer, node_key=node, service_cert=service.cert)
    assert admission is not None
    assert admission.secrets == service.secrets
    assert admission.service_key.private_numbers() == service.key.private_numbers()
    check_endorsement(admission.node_cert, service.cert)
    assert admission.node_cert.public_key() == node.public_key()
    assert (admission.ledger_id, admission.ledger_type) == ("ledger-1", "Private")
    shown = repr(admission)  # never a secret
    assert "PRIVATE KEY" not in shown
    assert base64.b64encode(bytes(range(32))).decode() not in shown


def test_the_sealed_secrets_open_for_no_other_node() -> None:
    service, node, other = Service(), new_ec_key(), new_ec_key()
    sealed = base64.b64decode(service.admit(node)["sealedSecrets"])
    fails(CHECK_SEALED, open_join_secrets, other, service.key.public_key(), sealed)
    # nor as the secrets of another service (the context names the service's key)
    fails(CHECK_SEALED, open_join_secrets, node, new_ec_key().public_key(), sealed)
    key, secrets = open_join_secrets(node, service.key.public_key(), sealed)
    assert secrets == service.secrets
    assert key.public_key() == service.key.public_key()


def test_an_answer_for_another_node_is_refused() -> None:
    service, node, other = Service(), new_ec_key(), new_ec_key()
    answer = service.admit(other)
    fails(CHECK_ANSWER, parse_join_answer, answer, node_key=node, service_cert=service.cert)
    answer["nodeId"] = key_id(node.public_key())  # relabelled: the certificate is still the other's
    fails(CHECK_ANSWER, parse_join_answer, answer, node_key=node, service_cert=service.cert)


def test_an_answer_from_another_service_is_refused() -> None:
    pinned, impostor, node = Service(), Service(), new_ec_key()
    answer = impostor.admit(node)
    fails(CHECK_ANSWER, parse_join_answer, answer, node_key=node, service_cert=pinned.cert)
    answer["serviceCertificate"] = cert_pem(pinned.cert).decode()  # claims the pinned identity
    with pytest.raises(VerificationError):  # its node certificate is not endorsed by the pinned key
        parse_join_answer(answer, node_key=node, service_cert=pinned.cert)


def test_an_answer_with_swapped_secrets_is_refused() -> None:
    """The certificate is genuine, the sealed secrets are the service's but for another node."""
    service, node, other = Service(), new_ec_key(), new_ec_key()
    answer = service.admit(node)
    answer["sealedSecrets"] = service.admit(other)["sealedSecrets"]
    fails(CHECK_SEALED, parse_join_answer, answer, node_key=node, service_cert=service.cert)
    answer["sealedSecrets"] = "not base64!"
    fails(CHECK_SEALED, parse_join_answer, answer, node_key=node, service_cert=service.cert)


def test_a_sealed_document_with_another_service_key_is_refused() -> None:
    service, node = Service(), new_ec_key()
    document = join_module._secrets_document(new_ec_key(), service.secrets)
    context = secrets_context(service.key.public_key(), node.public_key())
    sealed = seal_to_node(node.public_key(), document, context=context)
    error = fails(CHECK_SEALED, open_join_secrets, node, service.key.public_key(), sealed)
    assert "service key" in str(error)
    for bad in (b"{}", b"[]", b"not json", json.dumps({"format": "notarium-join-secrets/1"}).encode()):
        sealed = seal_to_node(node.public_key(), bad, context=context)
        fails(CHECK_SEALED, open_join_secrets, node, service.key.public_key(), sealed)


def test_pending_answers_and_malformed_answers() -> None:
    service, node = Service(), new_ec_key()
    assert (
        parse_join_answer(pending_answer(key_id(node.public_key())), node_key=node, service_cert=service.cert) is None
    )
    for bad in (None, [], {}, {"state": "Retired", "nodeId": key_id(node.public_key())}):
        fails(CHECK_ANSWER, parse_join_answer, bad, node_key=node, service_cert=service.cert)
    answer = service.admit(node)
    for field in ("nodeCertificate", "sealedSecrets", "ledgerId"):
        fails(CHECK_ANSWER, parse_join_answer, {**answer, field: None}, node_key=node, service_cert=service.cert)
    fails(CHECK_ANSWER, parse_join_answer, {**answer, "ledgerType": "Secret"}, node_key=node, service_cert=service.cert)


def test_a_recorded_certificate_is_reused_while_valid() -> None:
    service, node = Service(), new_ec_key()
    first = service.admit(node)["nodeCertificate"]
    assert service.admit(node, first)["nodeCertificate"] == first
    # another node's certificate, or one of another service, is never handed out: a new one is issued
    other = service.admit(new_ec_key())["nodeCertificate"]
    fresh = service.admit(node, other)["nodeCertificate"]
    assert fresh != other
    assert load_pem_cert(fresh).public_key() == node.public_key()
    foreign = Service().admit(node)["nodeCertificate"]
    renewed = service.admit(node, foreign)["nodeCertificate"]
    check_endorsement(load_pem_cert(renewed), service.cert)
    assert service.admit(node, "garbage")["nodeCertificate"] != "garbage"


def test_the_previous_identities_come_with_the_answer_checked_as_a_chain() -> None:
    service, node = Service(), new_ec_key()
    older, old = service_certificate(new_ec_key(), now=NOW), new_ec_key()
    old_cert = service_certificate(old, now=NOW)
    # the current identity endorses the old one, which endorsed the older one (newest first)
    chain = [
        endorse_previous_identity(old_cert, service.key, service.cert, now=NOW),
        endorse_previous_identity(older, old, old_cert, now=NOW),
    ]
    answer = service.admit(node)
    answer["previousIdentityEndorsements"] = [cert_pem(c).decode() for c in chain]
    admission = parse_join_answer(answer, node_key=node, service_cert=service.cert)
    assert admission is not None
    assert list(admission.previous_endorsements) == chain
    # out of order, or one not issued by the identity after it: refused
    answer["previousIdentityEndorsements"] = [cert_pem(c).decode() for c in reversed(chain)]
    with pytest.raises(VerificationError):
        parse_join_answer(answer, node_key=node, service_cert=service.cert)
    answer["previousIdentityEndorsements"] = ["not a certificate"]
    with pytest.raises(VerificationError):
        parse_join_answer(answer, node_key=node, service_cert=service.cert)
    answer["previousIdentityEndorsements"] = "no list"
    fails(CHECK_ANSWER, parse_join_answer, answer, node_key=node, service_cert=service.cert)


# --- limits on joining (issue #15) ----------------------------------------------------------------


def test_a_pending_record_says_since_when() -> None:
    key = new_ec_key()
    body = make_join_request(key, hosts=["node2.example"], address=ADDRESS, created_at=int(time.time()))
    req = parse_join_request(body, now=time.time())
    info = node_info(req, "Pending", pending_since=1_700_000_000)
    assert info["pending_since"] == 1_700_000_000
    assert limits_module.pending_since(info) == 1_700_000_000
    assert "pending_since" not in node_info(req, "Trusted", pending_since=1_700_000_000)
    assert limits_module.pending_since({"status": "Pending"}) is None
    assert limits_module.pending_since({"status": "Pending", "pending_since": "1"}) is None


def test_the_join_budget_is_a_burst_then_a_steady_rate() -> None:
    budget = limits_module.JoinBudget(3, now=100.0)
    assert [budget.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]  # a burst of the rate
    assert budget.take(100.0) == pytest.approx(20.0)  # then one every 60 / 3 s
    assert budget.take(110.0) == pytest.approx(10.0)  # refused: nothing spent
    assert budget.take(120.0) == 0.0
    assert budget.take(120.0) > 0
    assert [budget.take(10_000.0) for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # refills to the burst, no more
    assert budget.take(10_000.0) > 0
    assert budget.take(9_000.0) > 0  # a clock going back refills nothing
    with pytest.raises(ValueError, match="at least 1"):
        limits_module.JoinBudget(0, now=0.0)


def test_pending_nodes_expire_by_their_own_age_unless_protected() -> None:
    ttl = 100.0
    nodes = {
        b"a" * 64: json.dumps({"status": "Pending", "pending_since": 1000}).encode(),
        b"b" * 64: json.dumps({"status": "Pending", "pending_since": 1050}).encode(),
        b"c" * 64: json.dumps({"status": "Pending", "pending_since": 900}).encode(),  # a proposal would trust it
        b"d" * 64: json.dumps({"status": "Pending"}).encode(),  # recorded before pending_since existed
        b"e" * 64: json.dumps({"status": "Trusted", "pending_since": 0}).encode(),
        b"f" * 64: json.dumps({"status": "Retired"}).encode(),
        b"g" * 64: b"not json",
    }
    pending = limits_module.pending_records(nodes)
    assert sorted(pending) == [b"a" * 64, b"b" * 64, b"c" * 64, b"d" * 64]

    def expired(now: float, first_seen: dict[bytes, float] | None = None) -> list[bytes]:
        return limits_module.expired_pending(
            pending, now=now, ttl_s=ttl, protected={"c" * 64}, first_seen=first_seen or {}
        )

    assert expired(1100.0) == []  # exactly the TTL: not yet
    assert expired(1100.5) == [b"a" * 64]
    assert expired(1151.0) == [b"a" * 64, b"b" * 64]
    assert expired(10**9) == [b"a" * 64, b"b" * 64]  # never the protected one; never one of unknown age
    assert expired(10**9, {b"d" * 64: 10**9 - 101}) == [b"a" * 64, b"b" * 64, b"d" * 64]
    assert expired(10**9, {b"d" * 64: 10**9 - 99}) == [b"a" * 64, b"b" * 64]
    # a record's own age only: many younger nodes remove nothing older sooner
    crowd = {f"{i:064x}".encode(): {"status": "Pending", "pending_since": 1090} for i in range(1000)}
    assert limits_module.expired_pending(
        {**pending, **crowd}, now=1101.0, ttl_s=ttl, protected=set(), first_seen={}
    ) == [
        b"a" * 64,
        b"c" * 64,
    ]
