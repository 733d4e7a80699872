"""notarium's ledgers and receipts, checked by independent verifiers (the "oracles").

- ``ccf.ledger.LedgerValidator`` (ccf 6.0.28) re-verifies every chunk file, Merkle root, node
  signature and COSE root signature of a closed ledger (ccf-ledger-format.md §12).
- ``azure.confidentialledger.receipt.verify_receipt`` (SDK 1.1.1 and 2.0.0b2) checks the ACL JSON
  receipts (acl-rest-api.md §8).
- ``ccf.cose.verify_receipt`` checks the RFC 9942 COSE receipts (CCF profile).

Each oracle runs in its own venv through ``oracle.py``; a missing venv fails the test. Every case
is also run through notarium's own verifiers, which must agree: they may be stricter than an
oracle, but must never accept what an oracle rejects.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import random
import re
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from integration.oracle import (
    CoseCase,
    JsonCase,
    Verdict,
    ccf_validate,
    ccf_verify_cose_receipts,
    sdk_verify_receipts,
)
from notarium.errors import VerificationError
from notarium.ledger import EngineConfig, Receipt, init_service, open_ledger
from notarium.types import TxId
from notarium.verify import verify_cose_receipt, verify_json_receipt

CONFIG = EngineConfig(chunk_size=20_000, signature_tx_count=50, signature_interval_ms=10)
N_ENTRIES = 1500
COLLECTIONS = ("subledger:0", "alpha", "beta:2", "gamma")
SAMPLE_SIZE = 100
LEDGER_TYPES = ("Private", "Public")
SDK_ORACLES = ("acl1", "acl2")
ZERO_DIGEST = bytes(32)
HEX = "0123456789abcdef"
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
CHUNK_NAME = re.compile(r"^ledger_(\d+)-(\d+)\.committed$")


# --------------------------------------------------------------------------- building a ledger


@dataclass
class BuiltLedger:
    root: Path
    entries: dict[TxId, tuple[str, str]]  # txid -> (collection, contents) as appended
    genesis_committed: TxId  # the last signature written by init_service
    committed: TxId  # the last signature of the closed ledger
    signatures: list[TxId]  # signatures after genesis: the seqnos the API did not hand out
    chunks: list[tuple[int, int]]  # (first, last) seqno of each chunk file
    sample: list[Receipt]  # JSON receipts of ~SAMPLE_SIZE transactions, entries and others
    cose: dict[TxId, bytes]  # COSE receipts of the same sample

    @property
    def service_cert_path(self) -> Path:
        return self.root / "service_cert.pem"

    @property
    def service_cert_pem(self) -> str:
        return self.service_cert_path.read_text()

    @property
    def service_cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.service_cert_path.read_bytes())

    def covering_signature(self, txid: TxId) -> TxId:
        return next(s for s in [self.genesis_committed, *self.signatures] if s.seqno > txid.seqno)

    def chunk_of(self, txid: TxId) -> tuple[int, int]:
        return next(c for c in self.chunks if c[0] <= txid.seqno <= c[1])


def _contents(i: int) -> str:
    """Varied contents: JSON-special characters, non-ASCII text, and different sizes."""
    return f'entry #{i} "quoted" \\ back\\slash\ttab é ✓ 𝄞 {"x" * (i % 37)}\n'


def build_ledger(root: Path, ledger_type: str, seed: int = 7) -> BuiltLedger:
    """A closed ledger of N_ENTRIES entries with many signatures and chunk files.

    Appends go in batches of 10 to 60, each waited for, so the flusher signs every batch (or
    every 50 transactions) instead of being starved by a tight append loop.
    """
    init_service(root, ledger_type=ledger_type)
    rng = random.Random(seed)
    entries: dict[TxId, tuple[str, str]] = {}
    ledger = open_ledger(root, CONFIG)
    try:
        genesis_committed = ledger.committed
        order: list[TxId] = []
        while len(order) < N_ENTRIES:
            for _ in range(min(rng.randint(10, 60), N_ENTRIES - len(order))):
                i = len(order)
                collection, contents = COLLECTIONS[i % len(COLLECTIONS)], _contents(i)
                txid = ledger.append_entry(contents, collection)
                entries[txid] = (collection, contents)
                order.append(txid)
            assert ledger.wait_committed(order[-1], timeout=10) == "Committed"
        committed = ledger.committed
        handed_out = {t.seqno for t in order}
        signatures = [TxId(ledger.view, s) for s in range(order[0].seqno, committed.seqno + 1) if s not in handed_out]
        assert signatures[-1] == committed
        # The sample: entries spread evenly, the first and last entry, genesis transactions, and
        # signature transactions (all but the last, which no later signature covers).
        step = max(1, len(order) // (SAMPLE_SIZE - 10))
        picked = {*order[::step], order[0], order[-1], TxId(1, 1), genesis_committed, *signatures[:-1:6]}
        sample = []
        cose = {}
        for txid in sorted(picked, key=lambda t: t.seqno):
            r = ledger.receipt(txid)
            c = ledger.cose_receipt(txid)
            assert r is not None, f"no receipt for committed {txid}"
            assert c is not None, f"no COSE receipt for committed {txid}"
            sample.append(r)
            cose[txid] = c
    finally:
        ledger.close()
    chunks = []
    for path in sorted((root / "ledger").iterdir()):
        m = CHUNK_NAME.match(path.name)
        assert m, f"closed ledger holds a file the ccf reader would skip: {path.name}"
        chunks.append((int(m.group(1)), int(m.group(2))))
    chunks.sort()
    return BuiltLedger(root, entries, genesis_committed, committed, signatures, chunks, sample, cose)


def other_service_cert(root: Path) -> str:
    """The certificate of a second, unrelated service."""
    init_service(root)
    return (root / "service_cert.pem").read_text()


def expected_claims_digest(built: BuiltLedger, r: Receipt) -> bytes:
    """The claims digest a receipt must carry, computed here from what was appended."""
    if r.txid not in built.entries:
        assert r.application_claims is None
        return ZERO_DIGEST
    collection, contents = built.entries[r.txid]
    assert r.application_claims is not None
    (claim,) = r.application_claims
    entry = claim["ledgerEntry"]
    assert claim["kind"] == "LedgerEntry"
    assert (entry["collectionId"], entry["contents"], entry["protocol"]) == (collection, contents, "LedgerEntryV1")
    return ledger_entry_claims_digest(r.application_claims)


def ledger_entry_claims_digest(claims: list[dict[str, Any]]) -> bytes:
    """compute_claims_digest for LedgerEntry claims (acl-rest-api.md §8.3), written independently."""
    digests = []
    for claim in claims:
        entry = claim["ledgerEntry"]
        key = base64.b64decode(entry["secretKey"], validate=True)
        macs = [hmac.digest(key, entry[field].encode(), "sha256") for field in ("collectionId", "contents")]
        inner = hashlib.sha256(b"".join(macs)).digest()
        digests.append(hashlib.sha256(b"LedgerEntryV1" + inner).digest())
    return hashlib.sha256(struct.pack("<I", len(digests)) + b"".join(digests)).digest()


# --------------------------------------------------------------------------- (a) ccf.ledger


@pytest.mark.parametrize("ledger_type", LEDGER_TYPES)
def test_ccf_validator_accepts_whole_ledger(tmp_path: Path, ledger_type: str) -> None:
    built = build_ledger(tmp_path / "svc", ledger_type)
    assert len(built.signatures) >= 20
    assert len(built.chunks) >= 5
    assert built.chunks[0][0] == 1
    assert built.chunks[-1][1] == built.committed.seqno

    report = ccf_validate(built.root / "ledger", built.service_cert_path)

    assert report.ok, report.error
    assert report.chunks == [f"ledger_{a}-{b}.committed" for a, b in built.chunks]
    assert report.transactions == built.committed.seqno
    genesis = [t for t in report.signature_txids if TxId.parse(t).seqno <= built.genesis_committed.seqno]
    after = report.signature_txids[len(genesis) :]
    assert genesis
    assert genesis[-1] == str(built.genesis_committed)
    assert after == [str(s) for s in built.signatures]
    assert report.signature_count == len(report.signature_txids) == len(genesis) + len(built.signatures)
    assert report.last_verified_txid == str(built.committed)
    assert report.service_cert_matches
    assert report.node_certificates >= 1

    # Controls: the same oracle rejects one flipped bit in a middle chunk, and a foreign pin.
    tampered = tmp_path / "tampered"
    shutil.copytree(built.root / "ledger", tampered)
    first, last = built.chunks[len(built.chunks) // 2]
    victim = tampered / f"ledger_{first}-{last}.committed"
    data = bytearray(victim.read_bytes())
    positions_table = int.from_bytes(data[:8], "little")
    data[positions_table // 2] ^= 0x01  # inside the chunk's transactions
    victim.write_bytes(bytes(data))
    report = ccf_validate(tampered, built.service_cert_path)
    assert not report.ok
    assert TxId.parse(report.last_verified_txid) < built.committed

    other_service_cert(tmp_path / "other")
    report = ccf_validate(built.root / "ledger", tmp_path / "other" / "service_cert.pem")
    assert not report.ok
    assert report.error is not None
    assert report.error.startswith("EndorsementError")
    assert not report.service_cert_matches


# --------------------------------------------------------------------------- (b) the ACL SDK


def _swap(text: str, i: int, alphabet: str) -> str:
    """Replace the character at ``i`` by the next one of ``alphabet``."""
    c = text[i]
    return text[:i] + alphabet[(alphabet.index(c) + 1) % len(alphabet)] + text[i + 1 :]


def _mutate_pem_body(pem: str, fraction: float) -> str:
    """Change one base64 character of a PEM body, away from the final (padding) quantum."""
    lines = pem.strip().split("\n")
    body = "".join(lines[1:-1])
    i = min(int(len(body) * fraction), len(body) - 5)
    original, body = body, _swap(body, i, B64)
    assert base64.b64decode(body, validate=True) != base64.b64decode(original, validate=True)
    wrapped = [body[k : k + 64] for k in range(0, len(body), 64)]
    return "\n".join([lines[0], *wrapped, lines[-1]]) + "\n"


def _with(receipt: dict[str, Any], edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    changed = copy.deepcopy(receipt)
    edit(changed)
    return changed


@dataclass(frozen=True)
class Labelled:
    label: str
    case: JsonCase
    accept: bool


def json_cases(built: BuiltLedger, wrong_service_pem: str) -> list[Labelled]:
    cases: list[Labelled] = []
    for r in built.sample:
        cases.append(Labelled(f"{r.txid} genuine, no claims", JsonCase(r.receipt, None), True))
        if r.application_claims is not None:
            cases.append(Labelled(f"{r.txid} genuine, with claims", JsonCase(r.receipt, r.application_claims), True))

    entries = [r for r in built.sample if r.application_claims is not None]
    others = [r for r in built.sample if r.application_claims is None and r.receipt["proof"]]
    mutated = [entries[0], entries[len(entries) // 2], entries[-1], others[-1]]
    for r in mutated:
        t = r.txid
        variants: list[tuple[str, dict[str, Any]]] = []
        for j in range(len(r.receipt["proof"])):
            (side,) = r.receipt["proof"][j]

            def edit_proof(d: dict[str, Any], j: int = j, side: str = side) -> None:
                d["proof"][j][side] = _swap(d["proof"][j][side], (7 * j + 5) % 64, HEX)

            variants.append((f"proof[{j}].{side}", _with(r.receipt, edit_proof)))
        lc = r.receipt["leafComponents"]
        leaf_positions = {"writeSetDigest": 10, "commitEvidence": len(lc["commitEvidence"]) - 5, "claimsDigest": 20}
        for field, pos in leaf_positions.items():

            def edit_leaf(d: dict[str, Any], field: str = field, pos: int = pos) -> None:
                d["leafComponents"][field] = _swap(d["leafComponents"][field], pos, HEX)

            variants.append((f"leafComponents.{field}", _with(r.receipt, edit_leaf)))
        sig = r.receipt["signature"]
        for pos in (1, 12, len(sig) // 2, len(sig) - 12):

            def edit_sig(d: dict[str, Any], pos: int = pos) -> None:
                before, d["signature"] = d["signature"], _swap(d["signature"], pos, B64)
                assert base64.b64decode(d["signature"], validate=True) != base64.b64decode(before, validate=True)

            variants.append((f"signature[{pos}]", _with(r.receipt, edit_sig)))
        for fraction in (0.02, 0.2, 0.45, 0.7, 0.9, 0.99):

            def edit_cert(d: dict[str, Any], fraction: float = fraction) -> None:
                d["cert"] = _mutate_pem_body(d["cert"], fraction)

            variants.append((f"cert body at {fraction:.0%}", _with(r.receipt, edit_cert)))

        def edit_node_id(d: dict[str, Any]) -> None:
            d["nodeId"] = _swap(d["nodeId"], 3, HEX)

        variants.append(("nodeId", _with(r.receipt, edit_node_id)))
        for name, receipt in variants:
            cases.append(Labelled(f"{t} {name}, no claims", JsonCase(receipt, None), False))
            if r.application_claims is not None:
                cases.append(Labelled(f"{t} {name}, with claims", JsonCase(receipt, r.application_claims), False))

    for r in mutated[:3]:
        assert r.application_claims is not None
        for key in ("contents", "collectionId", "secretKey"):
            claims = copy.deepcopy(r.application_claims)
            entry = claims[0]["ledgerEntry"]
            if key == "secretKey":  # another valid 32-byte key
                entry[key] = base64.b64encode(hashlib.sha256(entry[key].encode()).digest()).decode()
            else:
                entry[key] += "!"
            label = f"{r.txid} application claims with altered {key}"
            cases.append(Labelled(label, JsonCase(r.receipt, claims), False))

    for r in [*mutated, *built.sample[:: max(1, len(built.sample) // 10)]]:
        cases.append(Labelled(f"{r.txid} wrong service cert", JsonCase(r.receipt, None, wrong_service_pem), False))
        if r.application_claims is not None:
            cases.append(
                Labelled(
                    f"{r.txid} wrong service cert, with claims",
                    JsonCase(r.receipt, r.application_claims, wrong_service_pem),
                    False,
                )
            )
    return cases


def notarium_json_verdict(case: JsonCase, service_cert: x509.Certificate) -> Verdict:
    cert = service_cert
    if case.service_cert_pem is not None:
        cert = x509.load_pem_x509_certificate(case.service_cert_pem.encode())
    try:
        verify_json_receipt(case.receipt, cert, application_claims=case.application_claims)
    except VerificationError as exc:
        return Verdict(False, f"VerificationError: {exc}")
    return Verdict(True, None)


@pytest.mark.parametrize("ledger_type", LEDGER_TYPES)
def test_sdk_verify_receipt_accepts_genuine_and_rejects_tampered(tmp_path: Path, ledger_type: str) -> None:
    built = build_ledger(tmp_path / "svc", ledger_type)
    wrong = other_service_cert(tmp_path / "other")
    # The sample spreads over many signatures and chunk files.
    assert len(built.sample) >= 90
    assert len({built.covering_signature(r.txid) for r in built.sample}) >= 20
    assert len({built.chunk_of(r.txid) for r in built.sample}) >= 5
    for r in built.sample:
        assert r.receipt["leafComponents"]["claimsDigest"] == expected_claims_digest(built, r).hex()

    cases = json_cases(built, wrong)
    assert sum(not c.accept for c in cases) >= 100
    verdicts = {o: sdk_verify_receipts(o, [c.case for c in cases], built.service_cert_path) for o in SDK_ORACLES}
    service_cert = built.service_cert

    wrong_verdicts = []
    for i, c in enumerate(cases):
        mine = notarium_json_verdict(c.case, service_cert)
        for o in SDK_ORACLES:
            if verdicts[o][i].ok != c.accept:
                wrong_verdicts.append(f"SDK {o}: {c.label}: expected ok={c.accept}, got {verdicts[o][i]}")
            # notarium may be stricter, never laxer, than an oracle; on these cases it must agree.
            if mine.ok and not verdicts[o][i].ok:
                wrong_verdicts.append(f"notarium accepts what SDK {o} rejects: {c.label}: {verdicts[o][i].error}")
        if mine.ok != c.accept:
            wrong_verdicts.append(f"notarium: {c.label}: expected ok={c.accept}, got {mine}")
    assert not wrong_verdicts, f"{len(wrong_verdicts)} wrong verdicts:\n" + "\n".join(wrong_verdicts[:40])


# --------------------------------------------------------------------------- (c) ccf.cose


@dataclass(frozen=True)
class LabelledCose:
    label: str
    case: CoseCase
    accept: bool | None  # None: the oracle's verdict is not asserted (notarium must still reject)


def _semantics(data: bytes) -> Any:
    """The decoded receipt with its inclusion proofs decoded too (None if it does not decode)."""
    try:
        tag = cbor2.loads(data)
        protected, unprotected, payload, signature = tag.value
        proofs = [cbor2.loads(p) for p in unprotected[396][-1]]
        return (tag.tag, cbor2.loads(protected), dict(unprotected), payload, signature, proofs)
    except Exception:
        return None


def _flip(data: bytes, offset: int, mask: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def _regions(data: bytes) -> tuple[range, range]:
    """Offsets of the COSE signature and of the (single) inclusion proof inside a receipt."""
    tag = cbor2.loads(data)
    signature = tag.value[3]
    (proof,) = tag.value[1][396][-1]
    s, p = data.rfind(signature), data.find(proof)
    assert s == len(data) - len(signature)
    assert p > 0
    return range(s, s + len(signature)), range(p, p + len(proof))


def _first_left_flag(data: bytes, proof: range) -> int | None:
    """Offset of the first ``true`` (left sibling) flag of the inclusion path, if any."""
    m = re.search(rb"\x82\xf5\x58\x20", data[proof.start : proof.stop])
    return None if m is None else proof.start + m.start() + 1


def cose_cases(built: BuiltLedger, wrong_service_pem: str) -> list[LabelledCose]:
    cases: list[LabelledCose] = []
    digests = {r.txid: expected_claims_digest(built, r) for r in built.sample}
    for r in built.sample:
        data, digest = built.cose[r.txid], digests[r.txid]
        cases.append(LabelledCose(f"{r.txid} genuine", CoseCase(data, digest), True))
        cases.append(LabelledCose(f"{r.txid} wrong service key", CoseCase(data, digest, wrong_service_pem), False))
    for r in built.sample[::5]:
        data, digest = built.cose[r.txid], digests[r.txid]
        wrong_digests = [("flipped", _flip(digest, 31, 0x01))]
        wrong_digests.append(("zeros", ZERO_DIGEST) if digest != ZERO_DIGEST else ("ones", b"\x01" * 32))
        for name, wrong in wrong_digests:
            cases.append(LabelledCose(f"{r.txid} claims digest {name}", CoseCase(data, wrong), False))

    entries = [r for r in built.sample if r.application_claims is not None]
    # Single-bit flips: every byte of the signature and every other byte of the inclusion proof
    # of one receipt (every fifth elsewhere), and a spread of offsets in two more.
    for k, r in enumerate((entries[len(entries) // 3], entries[1], entries[-1])):
        data, digest = built.cose[r.txid], digests[r.txid]
        sig, proof = _regions(data)
        if k == 0:
            offsets = {*sig, *proof[::2], *range(0, len(data), 5)}
        else:
            offsets = {*sig[k::6], *proof[k::6], *range(k, len(data), 31)}
        for off in sorted(offsets):
            where = "signature" if off in sig else "inclusion proof" if off in proof else "header"
            cases.append(
                LabelledCose(f"{r.txid} bit flip at {off} ({where})", CoseCase(_flip(data, off, 0x01), digest), False)
            )
    # A path direction `true` (0xf5) turned into the integer 10 (0x0a): ccf 6.0.28 folds with
    # `if left:` and so still accepts it; notarium requires a CBOR bool and must reject it.
    for r in entries:
        data = built.cose[r.txid]
        flag = _first_left_flag(data, _regions(data)[1])
        if flag is not None:
            cases.append(
                LabelledCose(f"{r.txid} path flag true -> 10", CoseCase(_flip(data, flag, 0xFF), digests[r.txid]), None)
            )
            break
    return cases


def notarium_cose_verdict(case: CoseCase, service_key: ec.EllipticCurvePublicKey) -> Verdict:
    key = service_key
    if case.service_cert_pem is not None:
        other = x509.load_pem_x509_certificate(case.service_cert_pem.encode()).public_key()
        assert isinstance(other, ec.EllipticCurvePublicKey)
        key = other
    try:
        verify_cose_receipt(case.receipt, key, claims_digest=case.claims_digest)
    except VerificationError as exc:
        return Verdict(False, f"VerificationError: {exc}")
    return Verdict(True, None)


@pytest.mark.parametrize("ledger_type", LEDGER_TYPES)
def test_ccf_cose_verify_receipt_accepts_genuine_and_rejects_tampered(tmp_path: Path, ledger_type: str) -> None:
    built = build_ledger(tmp_path / "svc", ledger_type)
    wrong = other_service_cert(tmp_path / "other")
    cases = cose_cases(built, wrong)
    assert sum(c.accept is False for c in cases) >= 400
    assert any(c.accept is None for c in cases)
    verdicts = ccf_verify_cose_receipts([c.case for c in cases], built.service_cert_path)
    service_key = built.service_cert.public_key()
    assert isinstance(service_key, ec.EllipticCurvePublicKey)

    wrong_verdicts = []
    for c, theirs in zip(cases, verdicts, strict=True):
        mine = notarium_cose_verdict(c.case, service_key)
        if c.accept is None:
            if mine.ok:
                wrong_verdicts.append(f"notarium: {c.label}: accepted a malformed receipt")
            continue
        if theirs.ok != c.accept:
            # A flipped receipt that ccf accepts must mean exactly what the original meant.
            original = _semantics(built.cose[TxId.parse(c.label.split()[0])])
            unchanged = original is not None and _semantics(c.case.receipt) == original
            if not (theirs.ok and unchanged):
                wrong_verdicts.append(f"ccf: {c.label}: expected ok={c.accept}, got {theirs}")
        if mine.ok and not theirs.ok:
            wrong_verdicts.append(f"notarium accepts what ccf rejects: {c.label}: {theirs.error}")
        if not mine.ok and c.accept:
            wrong_verdicts.append(f"notarium: {c.label}: rejected a genuine receipt: {mine.error}")
    assert not wrong_verdicts, f"{len(wrong_verdicts)} wrong verdicts:\n" + "\n".join(wrong_verdicts[:40])
