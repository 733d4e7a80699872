"""JSON receipts (ACL / CCF) and COSE receipts (RFC 9942, CCF profile).

* The Azure SDK test vectors (tests/unit/verify/vectors/acl-sdk/, acl-rest-api.md §8.4): the three valid receipts
  and every "expected failure" of the SDK's own test module.
* Round trips with freshly generated keys, and single-character / single-byte tampering.

Every rejection must be a :class:`notarium.errors.VerificationError`, never another exception.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from notarium.errors import VerificationError
from notarium.ledger import signing
from notarium.ledger.merkle import inclusion_path, perfect_root_over, root_of
from notarium.ledger.proofs import build_cose_receipt, build_json_receipt
from notarium.ledger.signing import cose_root_protected_header, sign_root
from notarium.types import TxId
from notarium.verify import cose
from notarium.verify.keys import key_id
from notarium.verify.leaf import ZERO_CLAIMS, compute_claims_digest
from notarium.verify.merkle import ZERO_HASH, PathElement
from notarium.verify.receipt import (
    MAX_PROOF_LENGTH,
    CoseReceiptResult,
    JsonReceiptResult,
    LeafComponents,
    ReceiptVerifier,
    verify_cose_receipt,
    verify_json_receipt,
)
from notarium.verify.secrets import commit_evidence

if TYPE_CHECKING:
    from conftest import Identity, Pki

# --- values from acl-rest-api.md §8.4 ---

# SHA-256 of the DER certificates (the doc gives vectors 1 and 3; vector 2's are pinned from the fixture)
FINGERPRINTS = {
    ("node", "1"): "77fb9a8a919396675028ea322eba826c7b123c6f2bb21a0c1f55e96f6015ae05",
    ("service", "1"): "b6009db4d2d690bf8ac09f30cdfd048e8c61a59a190481bc51a578f9ccb50bdb",
    ("node", "2"): "651b9fe6a8a843f8d8dd857d68135cecbd355f8c9fbe0987bfee0d824e498784",
    ("service", "2"): "2247c1e94de7a362667aeda97e2067b3635a3c449c89a7da89349ace057ed4a9",
    ("node", "3"): "a56affd3b5de384a2d11cd3d862e15f6bc5614ec9d16747fb757e0ef98350b35",
    ("service", "3"): "67206eef4b4c7f9db9d15ebdeba42c4aa66eea735de6f3a8fe1b98f73e0d53b4",
}
LEAF_AND_ROOT = {
    "1": (
        "52ce29a3663b093b34c34bda0e8714b83015429577c00078eb73fdb13bb6e9b7",
        "283afa446263bcc3be31a980957fe3d0196494bf100df6774249f09d10755101",
    ),
    "2": (
        "69b8b4060ffe8c6fa639a70aeb7f9d1cad5a839a86282724fec2e498779b9d48",
        "b27c68aaafa33f67bdfe0854f8460f03d16caef750ba1927946bfbe1d9720a47",
    ),
    "3": (
        "ab64db6ebde6fa0427dd5b7d74e1ac3376f463648515a180adc2bb8cfaac4b4a",
        "f7b9072e3235ea1f5fe150f7153527bd670009ebbc48a37e4fd6c4428f6fa148",
    ),
}
NODE_IDS = {
    "1": "708c2e71b2533e5eb38e05cc344390d133c8fb336cb80481ab4e5e902e6131a5",
    "2": "a16d14661618d220365594fc4986f4401ff74785b70818b00e6590bb3c1a1a5d",
    "3": "0db9a22e9301d1167a2a81596fa234642ad24bc742451a415b8d653af056795c",
}
CLAIMS_DIGEST_3 = "d08d8764437d09b2d4d07d52293cddaf40f44a3ea2176a0528819a80002df9f6"

HEX = "0123456789abcdef"
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def load_cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def sdk_receipt(vectors: dict[str, Any], n: str) -> dict[str, Any]:
    receipt: dict[str, Any] = copy.deepcopy(vectors["receipts"][n]["receipt"])
    return receipt


def sdk_service_cert(vectors: dict[str, Any], n: str) -> x509.Certificate:
    return load_cert(vectors["service_certificates"][n]["pem"])


def expect_rejection(receipt: Any, service_cert: x509.Certificate, **kwargs: Any) -> VerificationError:
    """Assert that verification fails with VerificationError (and with nothing else)."""
    try:
        verify_json_receipt(receipt, service_cert, **kwargs)
    except VerificationError as exc:
        return exc
    except Exception as exc:  # pragma: no cover - reported as a failure
        pytest.fail(f"expected VerificationError, got {type(exc).__name__}: {exc}")
    pytest.fail("receipt was accepted")


def outcome(fn: Callable[[], object]) -> str:
    """'ok', 'VerificationError' or the name of any other exception type."""
    try:
        fn()
    except VerificationError:
        return "VerificationError"
    except Exception as exc:
        return type(exc).__name__
    return "ok"


def camel(receipt: dict[str, Any]) -> dict[str, Any]:
    """Vector 1 rewritten with ACL camelCase keys."""
    r = copy.deepcopy(receipt)
    lc = r.pop("leaf_components")
    r["leafComponents"] = {
        "claimsDigest": lc["claims_digest"],
        "commitEvidence": lc["commit_evidence"],
        "writeSetDigest": lc["write_set_digest"],
    }
    r["nodeId"] = r.pop("node_id")
    r["serviceEndorsements"] = r.pop("service_endorsements")
    return r


# ====================================================================================================
# SDK fixtures
# ====================================================================================================


@pytest.mark.parametrize(("kind", "n"), sorted(FINGERPRINTS))
def test_fixture_certificate_fingerprints(acl_receipts: dict[str, Any], kind: str, n: str) -> None:
    pem = (
        acl_receipts["receipts"][n]["receipt"]["cert"]
        if kind == "node"
        else acl_receipts["service_certificates"][n]["pem"]
    )
    assert load_cert(pem).fingerprint(hashes.SHA256()).hex() == FINGERPRINTS[(kind, n)]


def test_fixture_certificate_details(acl_receipts: dict[str, Any]) -> None:
    node1 = load_cert(acl_receipts["receipts"]["1"]["receipt"]["cert"])
    svc1 = sdk_service_cert(acl_receipts, "1")
    assert node1.subject.rfc4514_string() == "CN=CCF Node"
    assert node1.issuer.rfc4514_string() == "CN=CCF Network"
    assert svc1.subject == svc1.issuer
    key1 = node1.public_key()
    assert isinstance(key1, ec.EllipticCurvePublicKey)
    assert key1.curve.name == "secp256r1"
    node3 = load_cert(acl_receipts["receipts"]["3"]["receipt"]["cert"])
    key3 = node3.public_key()
    assert isinstance(key3, ec.EllipticCurvePublicKey)
    assert key3.curve.name == "secp384r1"
    san = node3.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


@pytest.mark.parametrize("n", ["1", "2", "3"])
def test_fixture_node_ids_are_key_ids(acl_receipts: dict[str, Any], n: str) -> None:
    receipt = acl_receipts["receipts"][n]["receipt"]
    key = load_cert(receipt["cert"]).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key_id(key) == NODE_IDS[n] == receipt.get("nodeId", receipt.get("node_id"))


# ====================================================================================================
# SDK vectors: accepted
# ====================================================================================================


def check_result(result: JsonReceiptResult, n: str) -> None:
    leaf, root = LEAF_AND_ROOT[n]
    assert result.root.hex() == root
    assert result.leaf.leaf().hex() == leaf
    assert result.node_id == NODE_IDS[n]


def test_vector_1_snake_case_keys(acl_receipts: dict[str, Any]) -> None:
    receipt = sdk_receipt(acl_receipts, "1")
    assert "leaf_components" in receipt
    assert "is_signature_transaction" in receipt  # extra top-level keys are fine
    check_result(verify_json_receipt(receipt, sdk_service_cert(acl_receipts, "1")), "1")


def test_vector_1_camel_case_keys(acl_receipts: dict[str, Any]) -> None:
    receipt = camel(sdk_receipt(acl_receipts, "1"))
    check_result(verify_json_receipt(receipt, sdk_service_cert(acl_receipts, "1")), "1")


def test_vector_1_leaf_components(acl_receipts: dict[str, Any]) -> None:
    result = verify_json_receipt(sdk_receipt(acl_receipts, "1"), sdk_service_cert(acl_receipts, "1"))
    assert result.leaf == LeafComponents(
        write_set_digest=bytes.fromhex("fef1aa22972daba05864a7e986c1bb94aa6b8fea43781cb48907c972e9761e71"),
        commit_evidence="ce:2.35:fa08b4eae4a034971b97f0b21810951ec64b06fb2f4b5a1e80f6f4b83a23c719",
        claims_digest=ZERO_CLAIMS,
    )


def test_vector_1_without_service_endorsements(acl_receipts: dict[str, Any]) -> None:
    receipt = sdk_receipt(acl_receipts, "1")
    del receipt["service_endorsements"]
    check_result(verify_json_receipt(receipt, sdk_service_cert(acl_receipts, "1")), "1")


def test_vector_1_with_empty_application_claims_is_unchecked(acl_receipts: dict[str, Any]) -> None:
    """Like the SDK, an empty claims list means "no claims to check"."""
    receipt = sdk_receipt(acl_receipts, "1")
    check_result(verify_json_receipt(receipt, sdk_service_cert(acl_receipts, "1"), application_claims=[]), "1")


def test_vector_2(acl_receipts: dict[str, Any]) -> None:
    receipt = sdk_receipt(acl_receipts, "2")
    assert len(receipt["proof"]) == 10
    check_result(verify_json_receipt(receipt, sdk_service_cert(acl_receipts, "2")), "2")


def test_vector_3_without_claims(acl_receipts: dict[str, Any]) -> None:
    check_result(verify_json_receipt(sdk_receipt(acl_receipts, "3"), sdk_service_cert(acl_receipts, "3")), "3")


@pytest.mark.parametrize("form", ["ledger_entry", "claim_digest"])
def test_vector_3_with_application_claims(acl_receipts: dict[str, Any], acl_claims: dict[str, Any], form: str) -> None:
    claims = acl_claims[form]["claims"]
    assert compute_claims_digest(claims).hex() == CLAIMS_DIGEST_3
    result = verify_json_receipt(
        sdk_receipt(acl_receipts, "3"), sdk_service_cert(acl_receipts, "3"), application_claims=claims
    )
    check_result(result, "3")
    assert result.leaf.claims_digest.hex() == CLAIMS_DIGEST_3


def test_vector_3_with_expected_claims_digest(acl_receipts: dict[str, Any]) -> None:
    receipt, svc = sdk_receipt(acl_receipts, "3"), sdk_service_cert(acl_receipts, "3")
    check_result(verify_json_receipt(receipt, svc, expected_claims_digest=bytes.fromhex(CLAIMS_DIGEST_3)), "3")
    expect_rejection(receipt, svc, expected_claims_digest=ZERO_CLAIMS)


# ====================================================================================================
# SDK vectors: the expected failures (acl-rest-api.md §8.4), applied to vector 1 / service cert 1
# ====================================================================================================

Mutation = Callable[[dict[str, Any], dict[str, Any]], None]


def _set(path: tuple[str | int, ...], value: Callable[[dict[str, Any]], Any]) -> Mutation:
    def mutate(receipt: dict[str, Any], vectors: dict[str, Any]) -> None:
        target: Any = receipt
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value(vectors)

    return mutate


def _const(value: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda _vectors: copy.deepcopy(value)


def _from_v2(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda vectors: copy.deepcopy(vectors["receipts"]["2"]["receipt"][key])


def _delete(key: str) -> Mutation:
    def mutate(receipt: dict[str, Any], _vectors: dict[str, Any]) -> None:
        del receipt[key]

    return mutate


_V1_CLAIMS = "0" * 64
_V1_WSD = "fef1aa22972daba05864a7e986c1bb94aa6b8fea43781cb48907c972e9761e71"

EXPECTED_FAILURES: dict[str, Mutation] = {
    # leaf components
    "writeSetDigest changed": _set(("leaf_components", "write_set_digest"), _const("00" + _V1_WSD[2:])),
    "writeSetDigest of vector 2": _set(
        ("leaf_components", "write_set_digest"),
        lambda v: v["receipts"]["2"]["receipt"]["leafComponents"]["writeSetDigest"],
    ),
    "commitEvidence changed": _set(
        ("leaf_components", "commit_evidence"),
        _const("ce:2.35:fa08b4eae4a034971b97f0b21810951ec64b06fb2f4b5a1e80f6f4b83a23c718"),
    ),
    "commitEvidence other txid": _set(
        ("leaf_components", "commit_evidence"),
        _const("ce:2.36:fa08b4eae4a034971b97f0b21810951ec64b06fb2f4b5a1e80f6f4b83a23c719"),
    ),
    "claimsDigest changed": _set(("leaf_components", "claims_digest"), _const("0" * 63 + "1")),
    "leafComponents null": _set(("leaf_components",), _const(None)),
    "leafComponents all invalid": _set(
        ("leaf_components",),
        _const(
            {
                "claimsDigest": "invalid_claims_digest",
                "commitEvidence": "invalid_commit_evidence",
                "writeSetDigest": "invalid_write_set_digest",
            }
        ),
    ),
    "leafComponents valid claims, invalid others": _set(
        ("leaf_components",),
        _const(
            {
                "claimsDigest": _V1_CLAIMS,
                "commitEvidence": "invalid_commit_evidence",
                "writeSetDigest": "invalid_write_set_digest",
            }
        ),
    ),
    "leafComponents valid writeSetDigest, invalid others": _set(
        ("leaf_components",),
        _const(
            {
                "claimsDigest": "invalid_claims_digest",
                "commitEvidence": "invalid_commit_evidence",
                "writeSetDigest": _V1_WSD,
            }
        ),
    ),
    "leafComponents of vector 2": _set(("leaf_components",), _from_v2("leafComponents")),
    "leafComponents missing a field": _set(
        ("leaf_components",), _const({"claims_digest": _V1_CLAIMS, "write_set_digest": _V1_WSD})
    ),
    # certificate
    "cert null": _set(("cert",), _const(None)),
    "cert garbage": _set(("cert",), _const("invalid_cert_string")),
    "cert of vector 2": _set(("cert",), _from_v2("cert")),
    "cert of vector 3": _set(("cert",), lambda v: v["receipts"]["3"]["receipt"]["cert"]),
    "cert empty PEM": _set(("cert",), _const("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")),
    # node id
    "nodeId garbage": _set(("node_id",), _const("invalid_node_id")),
    "nodeId null": _set(("node_id",), _const(None)),
    "nodeId of vector 2": _set(("node_id",), _from_v2("nodeId")),
    "nodeId upper-case": _set(("node_id",), _const(NODE_IDS["1"].upper())),
    # proof
    "proof None": _set(("proof",), _const(None)),
    "proof []": _set(("proof",), _const([])),
    "proof of vector 2": _set(("proof",), _from_v2("proof")),
    "proof element with neither key": _set(("proof",), _const([{}])),
    "proof element with both keys": _set(
        ("proof",), _const([{"left": "invalid_node_hash", "right": "invalid_node_hash"}])
    ),
    "proof element with both valid keys": _set(
        ("proof",),
        _const([{"left": "5e949d6d17b88900aeb8fb292f041075272d3b58108f2016a3ceea2a47ffad8f", "right": "00" * 32}]),
    ),
    "proof element non-hex": _set(("proof",), _const([{"right": "invalid_node_hash"}])),
    "proof element side flipped": _set(
        ("proof", 0), _const({"right": "5e949d6d17b88900aeb8fb292f041075272d3b58108f2016a3ceea2a47ffad8f"})
    ),
    "proof element dropped": lambda r, _v: r["proof"].pop(),
    "proof element not an object": _set(
        ("proof", 0), _const("5e949d6d17b88900aeb8fb292f041075272d3b58108f2016a3ceea2a47ffad8f")
    ),
    "proof not a list": _set(("proof",), _const({"left": "00" * 32})),
    # endorsements
    "serviceEndorsements 1": _set(("service_endorsements",), _const(1)),
    "serviceEndorsements 2": _set(("service_endorsements",), _const(2)),
    "serviceEndorsements a string": _set(("service_endorsements",), lambda v: v["service_certificates"]["1"]["pem"]),
    "serviceEndorsements [None]": _set(("service_endorsements",), _const([None])),
    "serviceEndorsements [garbage]": _set(("service_endorsements",), _const(["invalid_cert_string"])),
    "serviceEndorsements [service cert 2]": _set(
        ("service_endorsements",), lambda v: [v["service_certificates"]["2"]["pem"]]
    ),
    # signature
    "signature None": _set(("signature",), _const(None)),
    "signature of vector 2": _set(("signature",), _from_v2("signature")),
    "signature not base64": _set(("signature",), _const("not base64!")),
    "signature empty": _set(("signature",), _const("")),
    # notarium is stricter than the SDK: nodeId is required
    "nodeId absent": _delete("node_id"),
}


@pytest.mark.parametrize("mutation", list(EXPECTED_FAILURES.values()), ids=list(EXPECTED_FAILURES))
def test_sdk_expected_failures(acl_receipts: dict[str, Any], mutation: Mutation) -> None:
    receipt = sdk_receipt(acl_receipts, "1")
    mutation(receipt, acl_receipts)
    expect_rejection(receipt, sdk_service_cert(acl_receipts, "1"))


def test_sdk_literal_leaf_components_override(acl_receipts: dict[str, Any]) -> None:
    """The SDK test sets camelCase ``leafComponents`` on the snake_case vector 1."""
    receipt = sdk_receipt(acl_receipts, "1")
    receipt["leafComponents"] = None
    expect_rejection(receipt, sdk_service_cert(acl_receipts, "1"))


@pytest.mark.parametrize("service", ["2", "3"])
def test_sdk_wrong_service_certificate(acl_receipts: dict[str, Any], service: str) -> None:
    expect_rejection(sdk_receipt(acl_receipts, "1"), sdk_service_cert(acl_receipts, service))


def test_vector_2_and_3_need_their_own_service_certificate(acl_receipts: dict[str, Any]) -> None:
    expect_rejection(sdk_receipt(acl_receipts, "2"), sdk_service_cert(acl_receipts, "1"))
    expect_rejection(sdk_receipt(acl_receipts, "3"), sdk_service_cert(acl_receipts, "1"))


@pytest.mark.parametrize(
    ("n", "form"),
    [("1", "claim_digest"), ("1", "ledger_entry"), ("2", "ledger_entry")],
)
def test_sdk_application_claims_mismatch(
    acl_receipts: dict[str, Any], acl_claims: dict[str, Any], n: str, form: str
) -> None:
    expect_rejection(
        sdk_receipt(acl_receipts, n), sdk_service_cert(acl_receipts, n), application_claims=acl_claims[form]["claims"]
    )


@pytest.mark.parametrize(
    "claims",
    [
        [{"kind": "Unknown"}],
        [{"kind": "LedgerEntry", "ledgerEntry": {"collectionId": "subledger:0"}}],
        [{"kind": "ClaimDigest", "digest": {"protocol": "LedgerEntryV1", "value": "not hex"}}],
        ["not an object"],
    ],
)
def test_malformed_application_claims_are_verification_errors(acl_receipts: dict[str, Any], claims: Any) -> None:
    expect_rejection(sdk_receipt(acl_receipts, "3"), sdk_service_cert(acl_receipts, "3"), application_claims=claims)


def test_tampered_claim_contents_rejected(acl_receipts: dict[str, Any], acl_claims: dict[str, Any]) -> None:
    claims = copy.deepcopy(acl_claims["ledger_entry"]["claims"])
    claims[0]["ledgerEntry"]["contents"] = "Hello world!"
    expect_rejection(sdk_receipt(acl_receipts, "3"), sdk_service_cert(acl_receipts, "3"), application_claims=claims)


# --- strictness beyond the SDK ---

STRICT_FAILURES: dict[str, Mutation] = {
    "upper-case writeSetDigest": _set(("leaf_components", "write_set_digest"), _const(_V1_WSD.upper())),
    "short writeSetDigest": _set(("leaf_components", "write_set_digest"), _const(_V1_WSD[:-2])),
    "long writeSetDigest": _set(("leaf_components", "write_set_digest"), _const(_V1_WSD + "00")),
    "writeSetDigest with spaces": _set(
        ("leaf_components", "write_set_digest"), _const(" ".join([_V1_WSD[:32], _V1_WSD[32:]]))
    ),
    "writeSetDigest not a string": _set(("leaf_components", "write_set_digest"), _const(bytes.fromhex(_V1_WSD))),
    "claimsDigest not a string": _set(("leaf_components", "claims_digest"), _const(0)),
    "commitEvidence without ce: prefix": _set(
        ("leaf_components", "commit_evidence"),
        _const("2.35:fa08b4eae4a034971b97f0b21810951ec64b06fb2f4b5a1e80f6f4b83a23c719"),
    ),
    "commitEvidence not a string": _set(("leaf_components", "commit_evidence"), _const(None)),
    "extra key in leafComponents": _set(("leaf_components", "extra"), _const("x")),
    "extra key in proof element": _set(
        ("proof", 0),
        _const({"left": "5e949d6d17b88900aeb8fb292f041075272d3b58108f2016a3ceea2a47ffad8f", "extra": "x"}),
    ),
    "upper-case proof hash": _set(
        ("proof", 0), _const({"left": "5e949d6d17b88900aeb8fb292f041075272d3b58108f2016a3ceea2a47ffad8f".upper()})
    ),
    "proof hash not a string": _set(("proof", 0), _const({"left": None})),
    "unknown proof side": _set(
        ("proof", 0), _const({"middle": "5e949d6d17b88900aeb8fb292f041075272d3b58108f2016a3ceea2a47ffad8f"})
    ),
    "nodeId not a string": _set(("node_id",), _const(0x708C)),
    "cert not a string": _set(("cert",), lambda v: v["receipts"]["1"]["receipt"]["cert"].encode()),
    "signature not a string": _set(
        ("signature",), lambda v: base64.b64decode(v["receipts"]["1"]["receipt"]["signature"])
    ),
    "signature with a newline": _set(
        ("signature",),
        lambda v: (
            v["receipts"]["1"]["receipt"]["signature"][:40] + "\n" + v["receipts"]["1"]["receipt"]["signature"][40:]
        ),
    ),
    "signature without padding": _set(("signature",), _const("MEYCIQC05OyTn/a5ZKphfY4AsnnBF2Rfj0j0pNrfPtHHO5Jv")),
}


@pytest.mark.parametrize("mutation", list(STRICT_FAILURES.values()), ids=list(STRICT_FAILURES))
def test_strict_failures(acl_receipts: dict[str, Any], mutation: Mutation) -> None:
    receipt = sdk_receipt(acl_receipts, "1")
    mutation(receipt, acl_receipts)
    expect_rejection(receipt, sdk_service_cert(acl_receipts, "1"))


@pytest.mark.parametrize("receipt", [None, [], "receipt", 1, b"{}"])
def test_receipt_not_an_object(acl_receipts: dict[str, Any], receipt: Any) -> None:
    expect_rejection(receipt, sdk_service_cert(acl_receipts, "1"))


def test_whole_response_instead_of_inner_receipt_rejected(acl_receipts: dict[str, Any]) -> None:
    response = {"receipt": sdk_receipt(acl_receipts, "1"), "state": "Ready", "transactionId": "2.35"}
    expect_rejection(response, sdk_service_cert(acl_receipts, "1"))


def test_receipt_is_not_modified(acl_receipts: dict[str, Any]) -> None:
    receipt = sdk_receipt(acl_receipts, "1")
    before = copy.deepcopy(receipt)
    verify_json_receipt(receipt, sdk_service_cert(acl_receipts, "1"))
    assert receipt == before


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_json_values_in_any_field_raise_verification_error_only(
    acl_receipts: dict[str, Any], data: st.DataObject
) -> None:
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
        max_leaves=12,
    )
    receipt = sdk_receipt(acl_receipts, "1")
    paths: list[tuple[str | int, ...]] = [
        ("cert",),
        ("node_id",),
        ("signature",),
        ("proof",),
        ("proof", 0),
        ("proof", 1, "left"),
        ("service_endorsements",),
        ("leaf_components",),
        ("leaf_components", "write_set_digest"),
        ("leaf_components", "commit_evidence"),
        ("leaf_components", "claims_digest"),
    ]
    path = data.draw(st.sampled_from(paths), label="field")
    original: Any = receipt
    for key in path:
        original = original[key]
    value = data.draw(json_values, label="value")
    assume(value != original)
    _set(path, _const(value))(receipt, acl_receipts)
    result = outcome(lambda: verify_json_receipt(receipt, sdk_service_cert(acl_receipts, "1")))
    assert result == "VerificationError"


# --- inputs that once escaped as other exception types: every one is a VerificationError ---

SURROGATE = "\ud800"  # what json.loads makes of the escape "\\ud800"


def test_commit_evidence_with_lone_surrogate(acl_receipts: dict[str, Any]) -> None:
    receipt = sdk_receipt(acl_receipts, "1")
    receipt["leaf_components"]["commit_evidence"] = json.loads('"ce:2.35:\\ud800"')
    assert outcome(lambda: verify_json_receipt(receipt, sdk_service_cert(acl_receipts, "1"))) == "VerificationError"


@pytest.mark.parametrize("field", ["cert", "service_endorsements"])
def test_certificate_text_with_lone_surrogate(acl_receipts: dict[str, Any], field: str) -> None:
    receipt = sdk_receipt(acl_receipts, "1")
    receipt[field] = SURROGATE if field == "cert" else [SURROGATE]
    assert outcome(lambda: verify_json_receipt(receipt, sdk_service_cert(acl_receipts, "1"))) == "VerificationError"


def test_deeply_nested_extra_field(acl_receipts: dict[str, Any]) -> None:
    depth = 600  # json.loads accepts this depth
    nested = json.loads('{"a":' * depth + "1" + "}" * depth)
    receipt = sdk_receipt(acl_receipts, "1")
    receipt["extra"] = nested
    assert outcome(lambda: verify_json_receipt(receipt, sdk_service_cert(acl_receipts, "1"))) in {
        "ok",
        "VerificationError",
    }


# ====================================================================================================
# Round trips with fresh keys
# ====================================================================================================


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class Built:
    leaf: LeafComponents
    path: list[PathElement]
    root: bytes
    index: int
    size: int


def build_tree(index: int = 6, size: int = 11, *, claims: bytes = ZERO_CLAIMS, seed: bytes = b"t") -> Built:
    """Leaf 0 is zero (§4.3); leaf ``index`` is a real entry; a signature at seqno ``size`` signs the root."""
    leaf = LeafComponents(
        write_set_digest=_h(seed + b"entry"),
        commit_evidence=commit_evidence(_h(seed + b"ledger secret"), TxId(2, index)),
        claims_digest=claims,
    )
    leaves = [ZERO_HASH, *(_h(seed + i.to_bytes(4, "big")) for i in range(1, size))]
    leaves[index] = leaf.leaf()
    path = inclusion_path(index, size, perfect_root_over(leaves))
    return Built(leaf, path, root_of(leaves), index, size)


def json_receipt(node: Identity, built: Built, endorsements: tuple[str, ...] = ()) -> dict[str, Any]:
    assert isinstance(node.key, ec.EllipticCurvePrivateKey)
    return build_json_receipt(
        built.leaf, built.path, sign_root(node.key, built.root), node.pem, node.node_id, endorsements
    )


@pytest.mark.parametrize(
    ("service_curve", "node_curve"),
    [
        (ec.SECP384R1(), ec.SECP384R1()),
        (ec.SECP384R1(), ec.SECP256R1()),
        (ec.SECP256R1(), ec.SECP384R1()),
        (ec.SECP521R1(), ec.SECP521R1()),
    ],
    ids=["P384-P384", "P384-P256", "P256-P384", "P521-P521"],
)
def test_round_trip_curves(pki: Pki, service_curve: ec.EllipticCurve, node_curve: ec.EllipticCurve) -> None:
    service = pki.service(service_curve)
    node = pki.node(service, node_curve)
    built = build_tree()
    result = verify_json_receipt(json_receipt(node, built), service.cert)
    assert result == JsonReceiptResult(root=built.root, node_id=node.node_id, leaf=built.leaf)


def test_built_receipt_shape(node: Identity) -> None:
    built = build_tree()
    receipt = json_receipt(node, built)
    assert set(receipt) == {"cert", "leafComponents", "nodeId", "proof", "serviceEndorsements", "signature"}
    assert set(receipt["leafComponents"]) == {"claimsDigest", "commitEvidence", "writeSetDigest"}
    assert receipt["leafComponents"]["claimsDigest"] == "00" * 32
    assert receipt["serviceEndorsements"] == []
    assert all(len(e) == 1 and set(e) <= {"left", "right"} for e in receipt["proof"])
    assert "\n" not in receipt["signature"]
    assert json.loads(json.dumps(receipt)) == receipt


@pytest.mark.parametrize(("index", "size"), [(1, 2), (1, 3), (2, 3), (5, 8), (7, 8), (6, 11), (10, 11), (64, 100)])
def test_round_trip_positions(service: Identity, node: Identity, index: int, size: int) -> None:
    built = build_tree(index, size)
    assert verify_json_receipt(json_receipt(node, built), service.cert).root == built.root


def test_round_trip_empty_proof(service: Identity, node: Identity) -> None:
    """A one-leaf tree: the root is the leaf and the proof is empty."""
    leaf = build_tree().leaf
    built = Built(leaf, [], leaf.leaf(), 0, 1)
    assert verify_json_receipt(json_receipt(node, built), service.cert).root == leaf.leaf()


def test_round_trip_snake_case(service: Identity, node: Identity) -> None:
    receipt = json_receipt(node, build_tree())
    snake = {
        "cert": receipt["cert"],
        "leaf_components": {
            "claims_digest": receipt["leafComponents"]["claimsDigest"],
            "commit_evidence": receipt["leafComponents"]["commitEvidence"],
            "write_set_digest": receipt["leafComponents"]["writeSetDigest"],
        },
        "node_id": receipt["nodeId"],
        "proof": receipt["proof"],
        "service_endorsements": receipt["serviceEndorsements"],
        "signature": receipt["signature"],
    }
    verify_json_receipt(snake, service.cert)


def test_round_trip_with_claims(service: Identity, node: Identity, acl_claims: dict[str, Any]) -> None:
    claims = acl_claims["ledger_entry"]["claims"]
    built = build_tree(claims=compute_claims_digest(claims))
    receipt = json_receipt(node, built)
    verify_json_receipt(receipt, service.cert, application_claims=claims)
    verify_json_receipt(receipt, service.cert, application_claims=acl_claims["claim_digest"]["claims"])
    verify_json_receipt(receipt, service.cert, expected_claims_digest=compute_claims_digest(claims))
    other = [{"kind": "ClaimDigest", "digest": {"protocol": "LedgerEntryV1", "value": "00" * 32}}]
    expect_rejection(receipt, service.cert, application_claims=other)
    expect_rejection(receipt, service.cert, expected_claims_digest=ZERO_CLAIMS)


def test_round_trip_node_cert_signed_with_sha256(pki: Pki, service: Identity) -> None:
    node = pki.node(service, algorithm=hashes.SHA256())
    verify_json_receipt(json_receipt(node, build_tree()), service.cert)


def test_service_endorsement_chain(pki: Pki) -> None:
    """After a recovery the new service certifies the old identity, which endorsed the node."""
    old_service, new_service = pki.service(cn="CCF Network old"), pki.service()
    node = pki.node(old_service)
    endorsement = pki.endorse(old_service, new_service).public_bytes(serialization.Encoding.PEM).decode()
    built = build_tree()
    with_chain = json_receipt(node, built, (endorsement,))
    verify_json_receipt(with_chain, new_service.cert)
    expect_rejection(with_chain, old_service.cert)  # the endorsement is signed by the new key
    verify_json_receipt(json_receipt(node, built), old_service.cert)
    expect_rejection(json_receipt(node, built), new_service.cert)  # no chain to the new service
    expect_rejection(json_receipt(node, built, (endorsement, endorsement)), new_service.cert)
    unrelated = pki.service().cert.public_bytes(serialization.Encoding.PEM).decode()
    expect_rejection(json_receipt(node, built, (unrelated,)), new_service.cert)


def test_node_cert_not_endorsed_by_the_service(pki: Pki, service: Identity) -> None:
    rogue_service = pki.service()
    rogue_node = pki.node(rogue_service)
    expect_rejection(json_receipt(rogue_node, build_tree()), service.cert)


def test_self_signed_node_cert_rejected(pki: Pki, service: Identity) -> None:
    self_signed = pki.service(cn="CCF Node")
    expect_rejection(json_receipt(self_signed, build_tree()), service.cert)


def test_receipt_signed_by_another_node_key(pki: Pki, service: Identity, node: Identity) -> None:
    other = pki.node(service)
    built = build_tree()
    receipt = json_receipt(node, built)
    assert isinstance(other.key, ec.EllipticCurvePrivateKey)
    receipt["signature"] = base64.b64encode(sign_root(other.key, built.root)).decode()
    expect_rejection(receipt, service.cert)


def test_signature_over_another_root(service: Identity, node: Identity) -> None:
    built = build_tree()
    receipt = json_receipt(node, built)
    assert isinstance(node.key, ec.EllipticCurvePrivateKey)
    receipt["signature"] = base64.b64encode(sign_root(node.key, _h(built.root))).decode()
    expect_rejection(receipt, service.cert)


def test_signature_over_hashed_root_rejected(service: Identity, node: Identity) -> None:
    """The root is the prehashed digest: an ordinary ECDSA-SHA256 signature over it must not verify."""
    built = build_tree()
    receipt = json_receipt(node, built)
    assert isinstance(node.key, ec.EllipticCurvePrivateKey)
    receipt["signature"] = base64.b64encode(node.key.sign(built.root, ec.ECDSA(hashes.SHA256()))).decode()
    expect_rejection(receipt, service.cert)


def test_proof_length_bound(service: Identity, node: Identity) -> None:
    built = build_tree()
    receipt = json_receipt(node, built)
    receipt["proof"] = [{"left": "00" * 32}] * (MAX_PROOF_LENGTH + 1)
    assert "64" in str(expect_rejection(receipt, service.cert))


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_node_cert_with_non_ec_key(pki: Pki, service: Identity, rsa_key: rsa.RSAPrivateKey, kind: str) -> None:
    key: Any = rsa_key if kind == "rsa" else ed25519.Ed25519PrivateKey.generate()
    odd_node = pki.node(service, key=key)
    ec_node = pki.node(service)
    built = build_tree()
    receipt = json_receipt(ec_node, built)
    receipt["cert"] = odd_node.pem
    expect_rejection(receipt, service.cert)


def test_rsa_service_certificate(pki: Pki, rsa_key: rsa.RSAPrivateKey) -> None:
    rsa_service = pki.service(key=rsa_key, algorithm=hashes.SHA256())
    node = pki.node(rsa_service, algorithm=hashes.SHA256())
    expect_rejection(json_receipt(node, build_tree()), rsa_service.cert)


def test_ed25519_service_certificate(pki: Pki) -> None:
    ed_service = pki.service(key=ed25519.Ed25519PrivateKey.generate())
    node = pki.node(ed_service)
    expect_rejection(json_receipt(node, build_tree()), ed_service.cert)


# --- single-character tampering ---


@pytest.fixture(scope="module")
def tamper_identities(pki: Pki) -> tuple[Identity, Identity]:
    service = pki.service()
    return service, pki.node(service)


@pytest.fixture(scope="module")
def tamper_case(tamper_identities: tuple[Identity, Identity]) -> tuple[Identity, dict[str, Any]]:
    service, node = tamper_identities
    return service, json_receipt(node, build_tree(5, 13, claims=_h(b"claims")))


def _replace(text: str, i: int, char: str) -> str:
    return text[:i] + char + text[i + 1 :]


def _hex_fields(receipt: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    fields: list[tuple[tuple[str | int, ...], str]] = [
        (("leafComponents", "writeSetDigest"), receipt["leafComponents"]["writeSetDigest"]),
        (("leafComponents", "claimsDigest"), receipt["leafComponents"]["claimsDigest"]),
        (("nodeId",), receipt["nodeId"]),
    ]
    for k, element in enumerate(receipt["proof"]):
        ((side, value),) = element.items()
        fields.append((("proof", k, side), value))
    return fields


def test_tamper_fixture_verifies(tamper_case: tuple[Identity, dict[str, Any]]) -> None:
    service, receipt = tamper_case
    verify_json_receipt(receipt, service.cert)
    assert len(receipt["proof"]) == 4


def test_flip_any_hex_character(tamper_case: tuple[Identity, dict[str, Any]]) -> None:
    service, receipt = tamper_case
    accepted = []
    for path, value in _hex_fields(receipt):
        for i, c in enumerate(value):
            for replacement in (HEX[(HEX.index(c) + 1) % 16], *((c.upper(),) if c.isalpha() and i % 4 == 0 else ())):
                mutated = copy.deepcopy(receipt)
                _set(path, _const(_replace(value, i, replacement)))(mutated, {})
                result = outcome(lambda m=mutated: verify_json_receipt(m, service.cert))
                if result != "VerificationError":
                    accepted.append((path, i, replacement, result))
    assert accepted == []


def test_flip_any_commit_evidence_character(tamper_case: tuple[Identity, dict[str, Any]]) -> None:
    service, receipt = tamper_case
    ce = receipt["leafComponents"]["commitEvidence"]
    accepted = []
    for i, c in enumerate(ce):
        mutated = copy.deepcopy(receipt)
        mutated["leafComponents"]["commitEvidence"] = _replace(ce, i, chr(ord(c) ^ 1))
        result = outcome(lambda m=mutated: verify_json_receipt(m, service.cert))
        if result != "VerificationError":
            accepted.append((i, result))
    assert accepted == []


def test_flip_any_signature_character(tamper_case: tuple[Identity, dict[str, Any]]) -> None:
    service, receipt = tamper_case
    sig = receipt["signature"]
    original = base64.b64decode(sig)
    accepted, tested = [], 0
    for i, c in enumerate(sig):
        for replacement in {B64[(B64.index(c) + 1) % 64] if c in B64 else "A", "=" if c != "=" else "A"}:
            mutated_sig = _replace(sig, i, replacement)
            try:
                if base64.b64decode(mutated_sig, validate=True) == original:
                    continue  # only unused padding bits changed: the same signature
            except ValueError:
                pass
            tested += 1
            mutated = {**receipt, "signature": mutated_sig}
            result = outcome(lambda m=mutated: verify_json_receipt(m, service.cert))
            if result != "VerificationError":
                accepted.append((i, replacement, result))
    assert tested > len(sig)
    assert accepted == []


def _pem_body_positions(pem: str) -> list[int]:
    lines_start = pem.index("\n") + 1
    lines_end = pem.index("-----END")
    return [i for i in range(lines_start, lines_end) if pem[i] in B64]


def _pem_der(pem: str) -> bytes | None:
    try:
        return load_cert(pem).public_bytes(serialization.Encoding.DER)
    except Exception:  # cryptography raises ValueError, InvalidVersion, ...
        return None


def _same_signed_content(pem: str, original: x509.Certificate) -> bool:
    """True if the certificate carries the same signed bytes, signature and key as ``original``."""
    cert = load_cert(pem)
    return (
        cert.tbs_certificate_bytes == original.tbs_certificate_bytes
        and cert.signature == original.signature
        and cert.public_key() == original.public_key()
    )


def test_flip_any_node_cert_character(tamper_case: tuple[Identity, dict[str, Any]]) -> None:
    service, receipt = tamper_case
    pem = receipt["cert"]
    original = load_cert(pem)
    outcomes: dict[str, list[int]] = {}
    for i in _pem_body_positions(pem):
        mutated_pem = _replace(pem, i, B64[(B64.index(pem[i]) + 1) % 64])
        if _pem_der(mutated_pem) == _pem_der(pem):
            continue  # only unused base64 padding bits changed
        mutated = {**receipt, "cert": mutated_pem}
        result = outcome(lambda m=mutated: verify_json_receipt(m, service.cert))
        if result == "ok":
            # e.g. the unused-bits octet of the outer signature BIT STRING: cryptography reads
            # the same signature, so nothing that is verified has changed
            assert _same_signed_content(mutated_pem, original), i
        outcomes.setdefault(result, []).append(i)
    assert len(outcomes.get("ok", [])) <= 2, outcomes
    assert set(outcomes) <= {"VerificationError", "ok"}, outcomes


def test_flip_any_service_cert_character(tamper_case: tuple[Identity, dict[str, Any]]) -> None:
    """A corrupted pinned service certificate (that still parses) validates only with the same key."""
    service, receipt = tamper_case
    pem = service.pem
    outcomes: dict[str, list[int]] = {}
    for i in _pem_body_positions(pem):
        mutated_pem = _replace(pem, i, B64[(B64.index(pem[i]) + 1) % 64])
        der = _pem_der(mutated_pem)
        if der is None or der == _pem_der(pem):
            continue  # the caller could not have loaded it, or nothing changed
        result = outcome(lambda p=mutated_pem: verify_json_receipt(receipt, load_cert(p)))
        if result == "ok":
            # names, dates, extensions and its self-signature are not checked (§8.2 step 5)
            assert load_cert(mutated_pem).public_key() == service.cert.public_key(), i
        outcomes.setdefault(result, []).append(i)
    assert set(outcomes) <= {"VerificationError", "ok"}, outcomes
    assert "VerificationError" in outcomes


def _patched_node_cert(node: Identity, old: bytes, new: bytes) -> str:
    der = node.cert.public_bytes(serialization.Encoding.DER)
    assert old in der
    body = base64.b64encode(der.replace(old, new)).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


CORRUPT_CERTS = {
    # [0] { INTEGER 2 } -> INTEGER 5: raises x509.InvalidVersion in load_pem_x509_certificate (keys.py:40)
    "version 6": (bytes.fromhex("a003020102"), bytes.fromhex("a003020105")),
    # id-ecPublicKey 1.2.840.10045.2.1 -> ...2.5: cert.public_key() raises UnsupportedAlgorithm (keys.py:47)
    "unknown key type": (bytes.fromhex("06072a8648ce3d0201"), bytes.fromhex("06072a8648ce3d0205")),
    # secp384r1 1.3.132.0.34 -> 1.3.132.0.50: cert.public_key() raises UnsupportedAlgorithm (keys.py:47)
    "unsupported curve": (bytes.fromhex("06052b81040022"), bytes.fromhex("06052b81040032")),
    # ecdsa-with-SHA384 1.2.840.10045.4.3.3 -> ...4.3.67: cert.signature_hash_algorithm raises
    # UnsupportedAlgorithm (keys.py:58)
    "unknown signature algorithm": (bytes.fromhex("06082a8648ce3d040303"), bytes.fromhex("06082a8648ce3d040343")),
}


@pytest.mark.parametrize("corruption", list(CORRUPT_CERTS), ids=list(CORRUPT_CERTS))
def test_corrupt_node_certificate_is_a_verification_error(
    tamper_identities: tuple[Identity, Identity], tamper_case: tuple[Identity, dict[str, Any]], corruption: str
) -> None:
    _service, node = tamper_identities
    service, receipt = tamper_case
    old, new = CORRUPT_CERTS[corruption]
    mutated = {**receipt, "cert": _patched_node_cert(node, old, new)}
    assert outcome(lambda: verify_json_receipt(mutated, service.cert)) == "VerificationError"


# ====================================================================================================
# COSE receipts
# ====================================================================================================

TXID = TxId(2, 13)
CWT = {"iat": 1_700_000_000, "issuer": "service.example", "subject": "ledger.signature"}


@dataclass(frozen=True)
class CoseCase:
    key: ec.EllipticCurvePrivateKey
    built: Built
    signature: bytes  # the bare COSE root signature (empty unprotected header)
    receipt: bytes

    @property
    def public(self) -> ec.EllipticCurvePublicKey:
        return self.key.public_key()


def make_cose(key: ec.EllipticCurvePrivateKey, built: Built, txid: TxId = TXID, **header: Any) -> CoseCase:
    protected = cose_root_protected_header(key.public_key(), txid, **{**CWT, **header})
    sig = signing.sign_detached(key, protected, built.root)
    sign1 = signing.encode_sign1(protected, {}, sig)
    return CoseCase(key, built, sign1, build_cose_receipt(sign1, built.leaf, built.path))


@pytest.fixture(scope="module")
def cose_case() -> CoseCase:
    return make_cose(ec.generate_private_key(ec.SECP384R1()), build_tree(5, 13, claims=_h(b"claims"), seed=b"cose"))


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()], ids=["P256", "P384", "P521"])
def test_cose_round_trip(curve: ec.EllipticCurve) -> None:
    case = make_cose(ec.generate_private_key(curve), build_tree())
    result = verify_cose_receipt(case.receipt, case.public)
    assert result == CoseReceiptResult(signature_txid=TXID, leaves=(case.built.leaf,))


def test_cose_round_trip_with_claims_digest(cose_case: CoseCase) -> None:
    result = verify_cose_receipt(cose_case.receipt, cose_case.public, claims_digest=_h(b"claims"))
    assert result.leaves == (cose_case.built.leaf,)
    assert result.signature_txid == TXID


def test_cose_wrong_claims_digest(cose_case: CoseCase) -> None:
    for digest in (ZERO_CLAIMS, _h(b"other"), _h(b"claims")[:31]):
        with pytest.raises(VerificationError, match="claims digest"):
            verify_cose_receipt(cose_case.receipt, cose_case.public, claims_digest=digest)


def test_cose_receipt_structure(cose_case: CoseCase) -> None:
    obj = cbor2.loads(cose_case.receipt)
    assert isinstance(obj, cbor2.CBORTag)
    assert obj.tag == 18
    protected, unprotected, payload, signature = obj.value
    assert payload is None
    assert len(signature) == 96
    header = cbor2.loads(protected)
    assert header[1] == -35
    assert header[4] == key_id(cose_case.public).encode()
    assert header[395] == 2
    assert header["ccf.v1"] == {"txid": "2.13"}
    assert header[15] == {1: CWT["issuer"], 2: CWT["subject"], 6: CWT["iat"]}
    (proof_bytes,) = unprotected[396][-1]
    proof = cbor2.loads(proof_bytes)
    leaf = cose_case.built.leaf
    assert proof[1] == [leaf.write_set_digest, leaf.commit_evidence, leaf.claims_digest]
    assert proof[2] == [[is_left, h] for is_left, h in cose_case.built.path]
    # the receipt keeps the root signature's protected header and signature unchanged
    assert cbor2.loads(cose_case.signature).value[0] == protected
    assert cbor2.loads(cose_case.signature).value[3] == signature


def test_cose_empty_path(cose_case: CoseCase) -> None:
    leaf = cose_case.built.leaf
    case = make_cose(cose_case.key, Built(leaf, [], leaf.leaf(), 0, 1))
    assert verify_cose_receipt(case.receipt, case.public).leaves == (leaf,)


def test_cose_wrong_key(cose_case: CoseCase) -> None:
    for curve in (ec.SECP384R1(), ec.SECP256R1()):
        with pytest.raises(VerificationError):
            verify_cose_receipt(cose_case.receipt, ec.generate_private_key(curve).public_key())


def test_cose_wrong_kid(cose_case: CoseCase) -> None:
    """Signed by the service key, but the kid names another key."""
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    protected = cose_root_protected_header(other, TXID, **CWT)
    sig = signing.sign_detached(cose_case.key, protected, cose_case.built.root)
    receipt = build_cose_receipt(signing.encode_sign1(protected, {}, sig), cose_case.built.leaf, cose_case.built.path)
    with pytest.raises(VerificationError, match="kid"):
        verify_cose_receipt(receipt, cose_case.public)


def test_cose_signed_by_another_key_with_our_kid(cose_case: CoseCase) -> None:
    impostor = ec.generate_private_key(ec.SECP384R1())
    protected = cose_root_protected_header(cose_case.public, TXID, **CWT)
    sig = signing.sign_detached(impostor, protected, cose_case.built.root)
    receipt = build_cose_receipt(signing.encode_sign1(protected, {}, sig), cose_case.built.leaf, cose_case.built.path)
    with pytest.raises(VerificationError, match="does not verify"):
        verify_cose_receipt(receipt, cose_case.public)


def test_cose_signature_over_another_root(cose_case: CoseCase) -> None:
    protected = cose_root_protected_header(cose_case.public, TXID, **CWT)
    sig = signing.sign_detached(cose_case.key, protected, _h(cose_case.built.root))
    receipt = build_cose_receipt(signing.encode_sign1(protected, {}, sig), cose_case.built.leaf, cose_case.built.path)
    with pytest.raises(VerificationError, match="does not verify"):
        verify_cose_receipt(receipt, cose_case.public)


def test_cose_bare_root_signature_is_not_a_receipt(cose_case: CoseCase) -> None:
    with pytest.raises(VerificationError, match="no inclusion proof"):
        verify_cose_receipt(cose_case.signature, cose_case.public)


def _resign(case: CoseCase, header: dict[Any, Any], unprotected: dict[Any, Any] | None = None) -> bytes:
    protected = cbor2.dumps(header)
    sig = signing.sign_detached(case.key, protected, case.built.root)
    if unprotected is None:
        unprotected = cbor2.loads(case.receipt).value[1]
    return signing.encode_sign1(protected, unprotected, sig)


def _header(case: CoseCase) -> dict[Any, Any]:
    header: dict[Any, Any] = cbor2.loads(cbor2.loads(case.receipt).value[0])
    return header


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({395: 1}, "vds"),
        ({395: None}, "vds"),
        ({1: -7}, "curve"),
        ({1: -36}, "curve"),
        ({1: -8}, "algorithm"),
        ({1: "ES384"}, "algorithm"),
        ({4: b"00" * 32}, "kid"),
        ({"ccf.v1": {"txid": "2.x"}}, "txid"),
    ],
)
def test_cose_bad_protected_headers(cose_case: CoseCase, change: dict[Any, Any], match: str) -> None:
    receipt = _resign(cose_case, {**_header(cose_case), **change})
    with pytest.raises(VerificationError, match=match):
        verify_cose_receipt(receipt, cose_case.public)


def test_cose_without_txid_is_accepted_with_no_txid(cose_case: CoseCase) -> None:
    header = _header(cose_case)
    del header["ccf.v1"]
    result = verify_cose_receipt(_resign(cose_case, header), cose_case.public)
    assert result.signature_txid is None


@pytest.mark.parametrize("alg", [[-35], {"alg": -35}])
def test_cose_unhashable_alg_is_a_verification_error(cose_case: CoseCase, alg: Any) -> None:
    receipt = _resign(cose_case, {**_header(cose_case), 1: alg})
    assert outcome(lambda: verify_cose_receipt(receipt, cose_case.public)) == "VerificationError"


def _proof(case: CoseCase) -> dict[int, Any]:
    proof: dict[int, Any] = cbor2.loads(cbor2.loads(case.receipt).value[1][396][-1][0])
    return proof


def _with_unprotected(case: CoseCase, unprotected: Any) -> bytes:
    protected, _u, _p, sig = cbor2.loads(case.receipt).value
    return cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, None, sig]))


def _with_proof(case: CoseCase, proof: Any, *, raw: bool = False) -> bytes:
    return _with_unprotected(case, {396: {-1: [proof if raw else cbor2.dumps(proof)]}})


def _bad_proofs(case: CoseCase) -> dict[str, tuple[Any, bool]]:
    p = _proof(case)
    wsd, ce, claims = p[1]
    path = p[2]
    return {
        "proof not bytes": ({1: p[1], 2: p[2]}, True),
        "proof not CBOR": (b"\xff\x00", True),
        "proof truncated CBOR": (cbor2.dumps(p)[:-1], True),
        "proof not a map": ([p[1], p[2]], False),
        "leaf missing": ({2: path}, False),
        "path missing": ({1: p[1]}, False),
        "leaf with two parts": ({1: [wsd, ce], 2: path}, False),
        "leaf with four parts": ({1: [wsd, ce, claims, b""], 2: path}, False),
        "wsd short": ({1: [wsd[:31], ce, claims], 2: path}, False),
        "wsd as hex text": ({1: [wsd.hex(), ce, claims], 2: path}, False),
        "claims short": ({1: [wsd, ce, claims[:31]], 2: path}, False),
        "commit evidence bytes": ({1: [wsd, ce.encode(), claims], 2: path}, False),
        "commit evidence empty": ({1: [wsd, "", claims], 2: path}, False),
        "commit evidence too long": ({1: [wsd, "c" * 1025, claims], 2: path}, False),
        "commit evidence changed": ({1: [wsd, ce[:-1] + "0", claims], 2: path}, False),
        "wsd changed": ({1: [bytes(32), ce, claims], 2: path}, False),
        "claims changed": ({1: [wsd, ce, bytes(32)], 2: path}, False),
        "path not a list": ({1: p[1], 2: {0: path[0]}}, False),
        "path too long": ({1: p[1], 2: [path[0]] * (MAX_PROOF_LENGTH + 1)}, False),
        "path element short": ({1: p[1], 2: [[path[0][0]], *path[1:]]}, False),
        "path element side is int": ({1: p[1], 2: [[int(path[0][0]), path[0][1]], *path[1:]]}, False),
        "path element hash short": ({1: p[1], 2: [[path[0][0], path[0][1][:31]], *path[1:]]}, False),
        "path element flipped side": ({1: p[1], 2: [[not path[0][0], path[0][1]], *path[1:]]}, False),
        "path truncated": ({1: p[1], 2: path[:-1]}, False),
        "path extended": ({1: p[1], 2: [*path, [False, bytes(32)]]}, False),
        "path empty": ({1: p[1], 2: []}, False),
    }


def test_cose_bad_inclusion_proofs(cose_case: CoseCase) -> None:
    results = {}
    for name, (proof, raw) in _bad_proofs(cose_case).items():
        data = _with_proof(cose_case, proof, raw=raw)
        results[name] = outcome(lambda d=data: verify_cose_receipt(d, cose_case.public))
    assert results == dict.fromkeys(results, "VerificationError")


@pytest.mark.parametrize(
    "unprotected",
    [{}, {396: {}}, {396: {-1: []}}, {396: []}, {396: {-1: b""}}, {396: {1: [b""]}}, {395: {-1: []}}],
    ids=["empty", "vdp empty", "no proofs", "vdp list", "proofs bytes", "wrong proof label", "wrong vdp label"],
)
def test_cose_missing_inclusion_proofs(cose_case: CoseCase, unprotected: Any) -> None:
    with pytest.raises(VerificationError):
        verify_cose_receipt(_with_unprotected(cose_case, unprotected), cose_case.public)


def test_cose_two_proofs_one_bad(cose_case: CoseCase) -> None:
    good = cbor2.loads(cose_case.receipt).value[1][396][-1][0]
    bad = cbor2.dumps({**_proof(cose_case), 2: []})
    for proofs in ([good, bad], [bad, good]):
        with pytest.raises(VerificationError):
            verify_cose_receipt(_with_unprotected(cose_case, {396: {-1: proofs}}), cose_case.public)
    result = verify_cose_receipt(_with_unprotected(cose_case, {396: {-1: [good, good]}}), cose_case.public)
    assert result.leaves == (cose_case.built.leaf, cose_case.built.leaf)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\xd2",
        cbor2.dumps([b"", {}, None, b""]),
        cbor2.dumps(cbor2.CBORTag(98, [b"", {}, None, b""])),
        cbor2.dumps(cbor2.CBORTag(18, [b"", {}, None])),
        cbor2.dumps(cbor2.CBORTag(18, [b"\xa0", {}, b"payload", b""])),
        cbor2.dumps(cbor2.CBORTag(18, [{}, {}, None, b""])),
        cbor2.dumps(cbor2.CBORTag(18, [b"\xa0", [], None, b""])),
        cbor2.dumps(cbor2.CBORTag(18, [b"\xa0", {}, None, "sig"])),
        cbor2.dumps(cbor2.CBORTag(18, [b"\xff", {}, None, b""])),
        cbor2.dumps(cbor2.CBORTag(18, [b"\x80", {}, None, b""])),
        b"\x9f" * 100_000,
        bytes(cose.MAX_COSE_SIZE + 1),
    ],
)
def test_cose_malformed_envelopes(cose_case: CoseCase, data: bytes) -> None:
    with pytest.raises(VerificationError):
        verify_cose_receipt(data, cose_case.public)


def test_cose_wrong_signature_length(cose_case: CoseCase) -> None:
    protected, unprotected, _p, sig = cbor2.loads(cose_case.receipt).value
    for bad in (sig[:-1], sig + b"\x00", b"", sig[:48]):
        data = cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, None, bad]))
        with pytest.raises(VerificationError):
            verify_cose_receipt(data, cose_case.public)


# --- byte flips ---


def _regions(case: CoseCase) -> dict[str, range]:
    """Where the signature, the proof hashes and the leaf parts sit in the receipt bytes."""
    data, leaf = case.receipt, case.built.leaf
    regions: dict[str, range] = {}

    def locate(name: str, needle: bytes) -> None:
        at = data.find(needle)
        assert at >= 0
        assert data.find(needle, at + 1) == -1
        regions[name] = range(at, at + len(needle))

    locate("signature", cbor2.loads(data).value[3])
    locate("writeSetDigest", leaf.write_set_digest)
    locate("commitEvidence", leaf.commit_evidence.encode())
    locate("claimsDigest", leaf.claims_digest)
    for k, (_is_left, h) in enumerate(case.built.path):
        locate(f"path[{k}]", h)
    return regions


def _semantics(data: bytes) -> tuple[Any, ...]:
    sign1 = cose.Sign1.decode(data)
    proofs = sign1.unprotected[396][-1]
    return sign1.protected_bytes, sign1.signature, tuple(cbor2.dumps(cbor2.loads(p)) for p in proofs)


def test_cose_flip_any_byte(cose_case: CoseCase) -> None:
    data = cose_case.receipt
    regions = _regions(cose_case)
    critical = {i: name for name, r in regions.items() for i in r}
    bad: list[tuple[int, int, str]] = []
    accepted: list[tuple[int, int]] = []
    for i in range(len(data)):
        for mask in (0x01, 0xFF):
            mutated = bytearray(data)
            mutated[i] ^= mask
            result = outcome(lambda m=bytes(mutated): verify_cose_receipt(m, cose_case.public))
            if result == "ok":
                accepted.append((i, mask))
                # an accepted flip must not change anything that is verified
                assert i not in critical, (i, mask, critical.get(i))
                assert _semantics(bytes(mutated)) == _semantics(data), (i, mask)
            elif result != "VerificationError":
                bad.append((i, mask, result))
    assert bad == []
    assert len(accepted) <= len(data) // 10  # irrelevant flips are rare


@pytest.mark.parametrize(
    "region", ["signature", "writeSetDigest", "commitEvidence", "claimsDigest", "path[0]", "path[3]"]
)
def test_cose_flip_in_critical_region_fails(cose_case: CoseCase, region: str) -> None:
    data = cose_case.receipt
    positions = _regions(cose_case)[region]
    for i in positions:
        for bit in (0, 3, 7):
            mutated = bytearray(data)
            mutated[i] ^= 1 << bit
            with pytest.raises(VerificationError):
                verify_cose_receipt(bytes(mutated), cose_case.public)


@pytest.mark.parametrize("where", ["after the COSE_Sign1", "after the inclusion proof"])
def test_cose_trailing_garbage_rejected(cose_case: CoseCase, where: str) -> None:
    if where == "after the COSE_Sign1":
        data = cose_case.receipt + b"\x00"
    else:
        proof = cbor2.loads(cose_case.receipt).value[1][396][-1][0]
        data = _with_unprotected(cose_case, {396: {-1: [proof + b"\x00"]}})
    assert outcome(lambda: verify_cose_receipt(data, cose_case.public)) == "VerificationError"


def test_cose_truncation_rejected(cose_case: CoseCase) -> None:
    data = cose_case.receipt
    for n in range(len(data)):
        with pytest.raises(VerificationError):
            verify_cose_receipt(data[:n], cose_case.public)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600))
def test_cose_random_bytes(cose_case: CoseCase, data: bytes) -> None:
    assert outcome(lambda: verify_cose_receipt(data, cose_case.public)) == "VerificationError"


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.binary(max_size=40) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.integers(-400, 400) | st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cbor_values, cbor_values, cbor_values)
def test_cose_random_structures(cose_case: CoseCase, protected: Any, unprotected: Any, proof: Any) -> None:
    """Random headers and proofs, keeping the kid and vds right so that the checks go deep."""
    header = {**_header(cose_case), 99: protected}
    data = signing.encode_sign1(
        cbor2.dumps(header), {396: {-1: [cbor2.dumps(proof)]}, 7: unprotected}, cbor2.loads(cose_case.receipt).value[3]
    )
    assert outcome(lambda: verify_cose_receipt(data, cose_case.public)) == "VerificationError"


# --- ReceiptVerifier: the same answers with a memory of successful checks ---


@pytest.mark.parametrize("mutation", list(EXPECTED_FAILURES.values()), ids=list(EXPECTED_FAILURES))
def test_a_warm_verifier_rejects_what_the_plain_function_rejects(
    acl_receipts: dict[str, Any], mutation: Mutation
) -> None:
    """After the genuine receipt verified (node certificate and root signature remembered), every
    mutation is still refused: only the exact bytes that verified are remembered."""
    cert = sdk_service_cert(acl_receipts, "1")
    verifier = ReceiptVerifier(cert)
    verifier.verify_json(sdk_receipt(acl_receipts, "1"))
    receipt = sdk_receipt(acl_receipts, "1")
    mutation(receipt, acl_receipts)
    with pytest.raises(VerificationError):
        verifier.verify_json(receipt)


def test_verifier_results_match_the_plain_function(acl_receipts: dict[str, Any]) -> None:
    for n in ("1", "2", "3"):
        cert = sdk_service_cert(acl_receipts, n)
        verifier = ReceiptVerifier(cert)
        expected = verify_json_receipt(sdk_receipt(acl_receipts, n), cert)
        for _ in range(3):  # cold, then from memory
            assert verifier.verify_json(sdk_receipt(acl_receipts, n)) == expected


def test_verifier_memory_is_per_service_certificate(acl_receipts: dict[str, Any]) -> None:
    verifier = ReceiptVerifier(sdk_service_cert(acl_receipts, "1"))
    verifier.verify_json(sdk_receipt(acl_receipts, "1"))
    with pytest.raises(VerificationError):
        verifier.verify_json(sdk_receipt(acl_receipts, "2"))  # another service's node and signature


def test_verifier_memory_is_bounded(acl_receipts: dict[str, Any]) -> None:
    verifier = ReceiptVerifier(sdk_service_cert(acl_receipts, "1"), memory=1)
    for _ in range(3):
        verifier.verify_json(sdk_receipt(acl_receipts, "1"))
        assert len(verifier._nodes) <= 1
        assert len(verifier._signatures) <= 1
