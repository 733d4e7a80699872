"""The building blocks under the receipts: cose.py, signature.py and keys.py."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from typing import TYPE_CHECKING, Any

import cbor2
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from notarium.errors import VerificationError
from notarium.ledger import signing
from notarium.ledger.merkle import root_of, serialise_tree
from notarium.ledger.signing import cose_root_protected_header, sign_root
from notarium.types import TxId
from notarium.verify import cose
from notarium.verify.keys import (
    acl_user_id,
    cert_fingerprint,
    check_endorsement,
    ec_public_key,
    key_id,
    load_pem_cert,
    spki_der,
)
from notarium.verify.merkle import Frontier
from notarium.verify.signature import (
    PrimarySignature,
    b64decode_strict,
    check_cose_root_header,
    decode_cose_signature_value,
    verify_root_signature,
    verify_signature_transaction,
)

if TYPE_CHECKING:
    from conftest import Identity, Pki

CURVES = {"P256": (ec.SECP256R1(), -7, 32), "P384": (ec.SECP384R1(), -35, 48), "P521": (ec.SECP521R1(), -36, 66)}
HASHES = {-7: hashes.SHA256(), -35: hashes.SHA384(), -36: hashes.SHA512()}
ROOT = hashlib.sha256(b"root").digest()


@pytest.fixture(scope="module")
def p384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


# ====================================================================================================
# cose.py
# ====================================================================================================


@pytest.mark.parametrize("name", list(CURVES))
def test_alg_for_key(name: str) -> None:
    curve, alg, _size = CURVES[name]
    assert cose.alg_for_key(ec.generate_private_key(curve).public_key()) == alg


def test_alg_for_unsupported_curve() -> None:
    with pytest.raises(ValueError, match="no COSE algorithm"):
        cose.alg_for_key(ec.generate_private_key(ec.SECP256K1()).public_key())


def test_sig_structure_is_rfc9052_signature1() -> None:
    protected = cbor2.dumps({1: -35})
    assert cose.sig_structure(protected, ROOT) == cbor2.dumps(["Signature1", protected, b"", ROOT])
    # definite-length array of 4: 0x84, then the text "Signature1"
    assert cose.sig_structure(protected, ROOT)[:12] == b"\x84\x6aSignature1"


@pytest.mark.parametrize("name", list(CURVES))
def test_sign_detached_is_raw_r_s_and_verifies(name: str) -> None:
    curve, alg, size = CURVES[name]
    key = ec.generate_private_key(curve)
    protected = cbor2.dumps({1: alg})
    sig = signing.sign_detached(key, protected, ROOT)
    assert len(sig) == 2 * size
    # independent check with cryptography: DER from r || s, hash of the alg over Sig_structure
    der = encode_dss_signature(int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big"))
    key.public_key().verify(der, cbor2.dumps(["Signature1", protected, b"", ROOT]), ec.ECDSA(HASHES[alg]))
    sign1 = cose.Sign1.decode(signing.encode_sign1(protected, {}, sig))
    sign1.verify_detached(key.public_key(), ROOT)
    with pytest.raises(VerificationError, match="does not verify"):
        sign1.verify_detached(key.public_key(), hashlib.sha256(ROOT).digest())


def test_encode_and_decode_sign1() -> None:
    protected = cbor2.dumps({1: -35, 4: b"kid"})
    data = signing.encode_sign1(protected, {396: {-1: [b"x"]}}, b"s" * 96)
    assert data == cbor2.dumps(cbor2.CBORTag(18, [protected, {396: {-1: [b"x"]}}, None, b"s" * 96]))
    assert data[:2] == b"\xd2\x84"  # tag 18, array of four
    sign1 = cose.Sign1.decode(data)
    assert sign1.protected_bytes == protected
    assert sign1.protected == {1: -35, 4: b"kid"}
    # cbor2 may decode the tagged content as immutable containers: compare encodings
    assert cbor2.dumps(sign1.unprotected) == cbor2.dumps({396: {-1: [b"x"]}})
    assert sign1.signature == b"s" * 96


def _sign1(protected: dict[Any, Any], signature: bytes = b"") -> cose.Sign1:
    return cose.Sign1.decode(signing.encode_sign1(cbor2.dumps(protected), {}, signature))


P384_ORDER = int("ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973", 16)


def test_verify_detached_rejections(p384: ec.EllipticCurvePrivateKey) -> None:
    protected = {1: -35}
    good = signing.sign_detached(p384, cbor2.dumps(protected), ROOT)
    key = p384.public_key()
    _sign1(protected, good).verify_detached(key, ROOT)
    cases = {
        "other key": (_sign1(protected, good), ec.generate_private_key(ec.SECP384R1()).public_key()),
        "alg of another curve": (_sign1({1: -7}, good), key),
        "no alg": (_sign1({}, good), key),
        "EdDSA alg": (_sign1({1: -8}, good), key),
        "short signature": (_sign1(protected, good[:-1]), key),
        "long signature": (_sign1(protected, good + b"\x00"), key),
        "zero signature": (_sign1(protected, bytes(96)), key),
        "s = n": (_sign1(protected, good[:48] + P384_ORDER.to_bytes(48, "big")), key),
        "all-ones signature": (_sign1(protected, b"\xff" * 96), key),
    }
    results = {}
    for name, (sign1, k) in cases.items():
        results[name] = "ok"
        try:
            sign1.verify_detached(k, ROOT)
        except VerificationError:
            results[name] = "VerificationError"
    assert results == dict.fromkeys(cases, "VerificationError")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "CBOR"),
        (b"\xd2", "CBOR"),
        (cbor2.dumps(1), "tag 18"),
        (cbor2.dumps(cbor2.CBORTag(17, [b"", {}, None, b""])), "tag 18"),
        (cbor2.dumps(cbor2.CBORTag(18, {})), "four items"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"", {}, None, b"", b""])), "four items"),
        (cbor2.dumps(cbor2.CBORTag(18, ["", {}, None, b""])), "byte strings"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"\xa0", None, None, b""])), "unprotected header must be a map"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"\xa0", {}, b"", b""])), "detached"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"", {}, None, b""])), "protected header is not valid CBOR"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"\x01", {}, None, b""])), "protected header must be a map"),
        (bytes(cose.MAX_COSE_SIZE + 1), "too large"),
    ],
)
def test_sign1_decode_rejections(data: bytes, match: str) -> None:
    with pytest.raises(VerificationError, match=match):
        cose.Sign1.decode(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_sign1_decode_random_bytes(data: bytes) -> None:
    try:
        sign1 = cose.Sign1.decode(data)
    except VerificationError:
        return
    assert isinstance(sign1.protected, dict)


# ====================================================================================================
# signature.py
# ====================================================================================================


@pytest.mark.parametrize("name", list(CURVES))
def test_sign_root_is_prehashed_ecdsa(name: str) -> None:
    key = ec.generate_private_key(CURVES[name][0])
    sig = sign_root(key, ROOT)
    key.public_key().verify(sig, ROOT, ec.ECDSA(Prehashed(hashes.SHA256())))
    with pytest.raises(InvalidSignature):
        # not a signature over SHA-256(root)
        key.public_key().verify(sig, ROOT, ec.ECDSA(hashes.SHA256()))
    verify_root_signature(key.public_key(), ROOT, sig)


@pytest.mark.parametrize("signature", [b"", b"\x30\x00", b"\x30\x06\x02\x01\x00\x02\x01\x00", b"\x00" * 70, b"garbage"])
def test_verify_root_signature_rejects_malformed(p384: ec.EllipticCurvePrivateKey, signature: bytes) -> None:
    with pytest.raises(VerificationError):
        verify_root_signature(p384.public_key(), ROOT, signature)


def test_verify_root_signature_rejects_other_root_and_key(p384: ec.EllipticCurvePrivateKey) -> None:
    sig = sign_root(p384, ROOT)
    with pytest.raises(VerificationError):
        verify_root_signature(p384.public_key(), bytes(32), sig)
    with pytest.raises(VerificationError):
        verify_root_signature(ec.generate_private_key(ec.SECP384R1()).public_key(), ROOT, sig)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=120))
def test_verify_root_signature_random_bytes(signature: bytes) -> None:
    key = ec.derive_private_key(12345, ec.SECP256R1()).public_key()
    with pytest.raises(VerificationError):
        verify_root_signature(key, ROOT, signature)


def test_b64decode_strict() -> None:
    assert b64decode_strict("AAEC", "x") == b"\x00\x01\x02"
    assert b64decode_strict("", "x") == b""
    for bad in ("AAE", "AA=C", "AA\nEC", "AA EC", "AA_C", "AAE\u00e9", "\ud800"):
        with pytest.raises(VerificationError, match="not valid base64"):
            b64decode_strict(bad, "x")


def _primary(**changes: Any) -> PrimarySignature:
    fields: dict[str, Any] = {
        "sig": b"\x30\x01\x02",
        "node": "ab" * 32,
        "seqno": 42,
        "view": 2,
        "root": ROOT,
        "cert": "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n",
        "hashed_nonce": "cd" * 32,
    }
    fields.update(changes)
    return PrimarySignature(**fields)


def test_primary_signature_json_round_trip() -> None:
    for sig in (_primary(), _primary(cert=None)):
        data = sig.to_json()
        assert PrimarySignature.from_json(data) == sig
        obj = json.loads(data)
        assert list(obj) == sorted(obj)
        assert b", " not in data
        assert b'": ' not in data
        assert obj["commit_seqno"] == 0
        assert obj["commit_view"] == 0
        assert obj["root"] == ROOT.hex()
        assert base64.b64decode(obj["sig"]) == sig.sig
        assert ("cert" in obj) == (sig.cert is not None)


def _record(**changes: Any) -> bytes:
    obj = json.loads(_primary().to_json())
    for key, value in changes.items():
        if value is _DELETE:
            del obj[key]
        else:
            obj[key] = value
    return json.dumps(obj).encode()


_DELETE = object()

BAD_RECORDS: dict[str, bytes] = {
    "not JSON": b"{",
    "not UTF-8": b'{"sig": "\xff"}',
    "a list": b"[]",
    "a string": b'"sig"',
    "no sig": _record(sig=_DELETE),
    "no node": _record(node=_DELETE),
    "no seqno": _record(seqno=_DELETE),
    "no view": _record(view=_DELETE),
    "no root": _record(root=_DELETE),
    "sig not a string": _record(sig=1),
    "sig not base64": _record(sig="!!"),
    "node not a string": _record(node=None),
    "seqno a string": _record(seqno="42"),
    "seqno a bool": _record(seqno=True),
    "seqno a float": _record(seqno=42.0),
    "view a bool": _record(view=False),
    "root not a string": _record(root=0),
    "root not hex": _record(root="zz" * 32),
    "root 31 bytes": _record(root="00" * 31),
    "root 33 bytes": _record(root="00" * 33),
    "cert not a string": _record(cert=["pem"]),
}


@pytest.mark.parametrize("data", list(BAD_RECORDS.values()), ids=list(BAD_RECORDS))
def test_primary_signature_rejects(data: bytes) -> None:
    with pytest.raises(VerificationError):
        PrimarySignature.from_json(data)


@pytest.mark.parametrize("parser", ["PrimarySignature.from_json", "decode_cose_signature_value"])
def test_deeply_nested_json_is_a_verification_error(parser: str) -> None:
    fn = PrimarySignature.from_json if parser == "PrimarySignature.from_json" else decode_cose_signature_value
    try:
        fn(b"[" * 100_000)
    except VerificationError:
        return
    except Exception as exc:
        pytest.fail(f"{type(exc).__name__} escaped")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_primary_signature_random_bytes(data: bytes) -> None:
    with contextlib.suppress(VerificationError):
        assert isinstance(PrimarySignature.from_json(data), PrimarySignature)


def test_cose_root_protected_header(p384: ec.EllipticCurvePrivateKey) -> None:
    txid = TxId(3, 1000)
    protected = cose_root_protected_header(p384.public_key(), txid, iat=1234, issuer="iss", subject="sub")
    assert isinstance(protected, bytes)
    header = cbor2.loads(protected)
    kid = hashlib.sha256(
        p384.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).hexdigest()
    assert header == {1: -35, 4: kid.encode(), 15: {1: "iss", 2: "sub", 6: 1234}, 395: 2, "ccf.v1": {"txid": "3.1000"}}
    assert len(header[4]) == 64
    # deterministic: the same inputs give the same bytes
    assert protected == cose_root_protected_header(p384.public_key(), txid, iat=1234, issuer="iss", subject="sub")


def test_check_cose_root_header(p384: ec.EllipticCurvePrivateKey) -> None:
    txid = TxId(3, 1000)
    header = cbor2.loads(cose_root_protected_header(p384.public_key(), txid, iat=1, issuer="i", subject="s"))
    check_cose_root_header(_sign1(header), p384.public_key(), None)
    check_cose_root_header(_sign1(header), p384.public_key(), txid)
    with pytest.raises(VerificationError, match="txid"):
        check_cose_root_header(_sign1(header), p384.public_key(), TxId(3, 1001))
    with pytest.raises(VerificationError, match="txid"):
        check_cose_root_header(_sign1({**header, "ccf.v1": "3.1000"}), p384.public_key(), txid)
    without = {k: v for k, v in header.items() if k != "ccf.v1"}
    check_cose_root_header(_sign1(without), p384.public_key(), None)
    with pytest.raises(VerificationError, match="txid"):
        check_cose_root_header(_sign1(without), p384.public_key(), txid)
    with pytest.raises(VerificationError, match="kid"):
        check_cose_root_header(_sign1(header), ec.generate_private_key(ec.SECP384R1()).public_key(), None)
    with pytest.raises(VerificationError, match="kid"):
        check_cose_root_header(_sign1({**header, 4: header[4].decode()}), p384.public_key(), None)
    with pytest.raises(VerificationError, match="vds"):
        check_cose_root_header(_sign1({**header, 395: 1}), p384.public_key(), None)


def test_decode_cose_signature_value() -> None:
    raw = b"\xd2\x84anything"
    assert decode_cose_signature_value(json.dumps(base64.b64encode(raw).decode()).encode()) == raw
    for bad in (b"", b"not json", b"1", b'["AAEC"]', b'"AA=C"', b"\xff"):
        with pytest.raises(VerificationError):
            decode_cose_signature_value(bad)


# ====================================================================================================
# keys.py
# ====================================================================================================


def test_key_id_is_sha256_of_spki(node: Identity) -> None:
    public = node.key.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert spki_der(public) == der
    assert key_id(public) == hashlib.sha256(der).hexdigest()


def test_fingerprints_and_acl_user_id(node: Identity) -> None:
    der = node.cert.public_bytes(serialization.Encoding.DER)
    assert cert_fingerprint(node.cert) == hashlib.sha256(der).hexdigest()
    user_id = acl_user_id(node.cert)
    assert user_id == ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    assert len(user_id) == 95
    assert user_id.replace(":", "").lower() == cert_fingerprint(node.cert)


def test_sdk_vector_fingerprint_and_key_id(acl_receipts: dict[str, Any]) -> None:
    cert = load_pem_cert(acl_receipts["receipts"]["1"]["receipt"]["cert"])
    assert cert_fingerprint(cert) == "77fb9a8a919396675028ea322eba826c7b123c6f2bb21a0c1f55e96f6015ae05"
    assert key_id(ec_public_key(cert)) == "708c2e71b2533e5eb38e05cc344390d133c8fb336cb80481ab4e5e902e6131a5"


def test_load_pem_cert_accepts_str_and_bytes(node: Identity) -> None:
    assert load_pem_cert(node.pem) == node.cert
    assert load_pem_cert(node.pem.encode()) == node.cert


@pytest.mark.parametrize(
    "pem",
    [
        "",
        "garbage",
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        b"\x00\xff",
    ],
)
def test_load_pem_cert_rejects(pem: str | bytes) -> None:
    with pytest.raises(VerificationError, match=r"not a PEM X\.509 certificate"):
        load_pem_cert(pem, "test certificate")


def test_load_pem_cert_rejects_der(node: Identity) -> None:
    with pytest.raises(VerificationError):
        load_pem_cert(node.cert.public_bytes(serialization.Encoding.DER))


def test_ec_public_key(pki: Pki, service: Identity, node: Identity, rsa_key: rsa.RSAPrivateKey) -> None:
    assert ec_public_key(node.cert) == node.key.public_key()
    rsa_node = pki.node(service, key=rsa_key)
    with pytest.raises(VerificationError, match="elliptic-curve"):
        ec_public_key(rsa_node.cert)


def test_check_endorsement(pki: Pki, service: Identity, node: Identity) -> None:
    check_endorsement(node.cert, service.cert)
    check_endorsement(service.cert, service.cert)  # self-signed
    with pytest.raises(VerificationError, match="not endorsed"):
        check_endorsement(node.cert, pki.service().cert)
    with pytest.raises(VerificationError, match="not endorsed"):
        check_endorsement(service.cert, node.cert)


def test_check_endorsement_uses_the_certificate_hash(pki: Pki, service: Identity) -> None:
    for algorithm in (hashes.SHA256(), hashes.SHA384(), hashes.SHA512()):
        node = pki.node(service, algorithm=algorithm)
        check_endorsement(node.cert, service.cert)
        assert isinstance(node.cert.signature_hash_algorithm, type(algorithm))


# ====================================================================================================
# signature.py: verify_signature_transaction
# ====================================================================================================

SIG_TABLE = "public:ccf.internal.signatures"
COSE_TABLE = "public:ccf.internal.cose_signatures"
TREE_TABLE = "public:ccf.internal.tree"
SINGLETON = bytes(8)


class SignatureTx:
    """A signature transaction at seqno ``seqno`` over leaves 0 … seqno−1, and its inputs."""

    def __init__(self, service: Identity, node: Identity, seqno: int = 21, flushed: int = 16) -> None:
        assert isinstance(service.key, ec.EllipticCurvePrivateKey)
        assert isinstance(node.key, ec.EllipticCurvePrivateKey)
        self.service_key, self.node_key = service.key, node.key
        self.txid = TxId(2, seqno)
        self.leaves = [bytes(32), *(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(1, seqno))]
        self.root = root_of(self.leaves)
        self.flushed = flushed

    def primary(self, **changes: Any) -> PrimarySignature:
        fields: dict[str, Any] = {
            "sig": sign_root(self.node_key, self.root),
            "node": key_id(self.node_key.public_key()),
            "seqno": self.txid.seqno,
            "view": self.txid.view,
            "root": self.root,
            "cert": None,
            "hashed_nonce": "00" * 32,
        }
        fields.update(changes)
        return PrimarySignature(**fields)

    def cose_value(self, txid: TxId | None = None, root: bytes | None = None) -> bytes:
        protected = cose_root_protected_header(
            self.service_key.public_key(), txid or self.txid, iat=1, issuer="i", subject="s"
        )
        sig = signing.sign_detached(self.service_key, protected, root or self.root)
        sign1 = signing.encode_sign1(protected, {}, sig)
        return json.dumps(base64.b64encode(sign1).decode()).encode()

    def tree(self, size: int | None = None) -> bytes:
        size = len(self.leaves) if size is None else size
        frontier = Frontier()
        for leaf in self.leaves[: self.flushed]:
            frontier.append(leaf)
        return serialise_tree(frontier, self.leaves[self.flushed : size])

    def public(self) -> dict[str, dict[bytes, bytes | None]]:
        return {
            SIG_TABLE: {SINGLETON: self.primary().to_json()},
            COSE_TABLE: {SINGLETON: self.cose_value()},
            TREE_TABLE: {SINGLETON: self.tree()},
        }

    def verify(self, public: dict[str, dict[bytes, bytes | None]], **changes: Any) -> PrimarySignature:
        kwargs: dict[str, Any] = {
            "txid": self.txid,
            "root": self.root,
            "service_key": self.service_key.public_key(),
            "node_key": lambda _sig: self.node_key.public_key(),
        }
        kwargs.update(changes)
        return verify_signature_transaction(public, **kwargs)


@pytest.fixture(scope="module")
def sig_tx(service: Identity, node: Identity) -> SignatureTx:
    return SignatureTx(service, node)


def test_signature_transaction_accepted(sig_tx: SignatureTx) -> None:
    public = sig_tx.public()
    sig = sig_tx.verify(public)
    assert sig == PrimarySignature.from_json(public[SIG_TABLE][SINGLETON] or b"")
    assert (sig.view, sig.seqno, sig.root) == (2, 21, sig_tx.root)


@pytest.mark.parametrize("flushed", [0, 1, 5, 16, 21])
def test_signature_transaction_any_flush_point(service: Identity, node: Identity, flushed: int) -> None:
    tx = SignatureTx(service, node, flushed=flushed)
    tx.verify(tx.public())


def _bad_signature_transactions(tx: SignatureTx) -> dict[str, tuple[dict[str, Any], dict[str, Any], str]]:
    def public(**tables: Any) -> dict[str, Any]:
        p: dict[str, Any] = tx.public()
        for name, value in tables.items():
            table = {"sig": SIG_TABLE, "cose": COSE_TABLE, "tree": TREE_TABLE}[name]
            if value is _DELETE:
                del p[table]
            else:
                p[table] = {SINGLETON: value}
        return p

    extra = tx.public()
    extra["public:ccf.gov.nodes.info"] = {b"k": b"v"}
    two_keys = tx.public()
    two_keys[SIG_TABLE][b"\x01" * 8] = b"{}"
    other_key = tx.public()
    other_key[TREE_TABLE] = {b"\x01" * 8: tx.tree()}
    other_node = ec.generate_private_key(ec.SECP384R1())
    other_service = ec.generate_private_key(ec.SECP384R1())

    def refuse(_sig: PrimarySignature) -> ec.EllipticCurvePublicKey:
        raise VerificationError("unknown node")

    return {
        "extra table": (extra, {}, "signature-format"),
        "no tree table": (public(tree=_DELETE), {}, "signature-format"),
        "two signature keys": (two_keys, {}, "signature-format"),
        "tree under another key": (other_key, {}, "signature-format"),
        "signature deleted": (public(sig=None), {}, ""),
        "signature not JSON": (public(sig=b"{"), {}, ""),
        "signature for another seqno": (public(sig=tx.primary(seqno=20).to_json()), {}, "signature-txid"),
        "signature for another view": (public(sig=tx.primary(view=3).to_json()), {}, "signature-txid"),
        "signature over another root": (public(sig=tx.primary(root=bytes(32)).to_json()), {}, "signature-root"),
        "rebuilt root differs": (tx.public(), {"root": bytes(32)}, "signature-root"),
        "node signature by another key": (
            public(sig=tx.primary(sig=sign_root(other_node, tx.root)).to_json()),
            {},
            "signature-node",
        ),
        "node key refused": (tx.public(), {"node_key": refuse}, ""),
        "COSE for another txid": (public(cose=tx.cose_value(txid=TxId(2, 20))), {}, "signature-cose"),
        "COSE over another root": (public(cose=tx.cose_value(root=bytes(32))), {}, "signature-cose"),
        "COSE not base64": (public(cose=b'"!!"'), {}, "signature-cose"),
        "COSE deleted": (public(cose=None), {}, "signature-cose"),
        "COSE other service": (tx.public(), {"service_key": other_service.public_key()}, "signature-cose"),
        "tree of fewer leaves": (public(tree=tx.tree(20)), {}, "signature-tree"),
        "tree garbage": (public(tree=b"\x00" * 17), {}, "signature-tree"),
        "tree deleted": (public(tree=None), {}, "signature-tree"),
    }


def test_signature_transaction_rejections(sig_tx: SignatureTx) -> None:
    results = {}
    for name, (public, changes, check) in _bad_signature_transactions(sig_tx).items():
        try:
            sig_tx.verify(public, **changes)
            results[name] = "ok"
        except VerificationError as exc:
            results[name] = "VerificationError" if not check or exc.check == check else f"check={exc.check}"
        except Exception as exc:
            results[name] = type(exc).__name__
    assert results == dict.fromkeys(results, "VerificationError")
