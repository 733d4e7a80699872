"""Tampering with a closed ledger on disk: `notarium audit` must notice, and say where.

One private ledger (a few hundred entries, many small chunk files, many signatures) is built
once per module; every test works on its own copy. Damage at the level of entries and
signatures must fail the audit naming a TxId and a check; damage to a chunk's framing (header,
positions table, file name) must fail it. Most tests call the auditor in-process (fast); a
few go through the command line, in-process and as a real process.
"""

from __future__ import annotations

import base64
import datetime
import json
import random
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notarium.auditing import audit, find_target
from notarium.cli import main
from notarium.errors import LedgerAuditError
from notarium.ledger import EngineConfig, init_service, open_ledger
from notarium.ledger import identity as ids
from notarium.ledger.encoding import assemble_entry, chunk_positions_table, encode_tables
from notarium.ledger.signing import encode_sign1, sign_detached, sign_root
from notarium.types import TxId, TxStatus
from notarium.verify import tables
from notarium.verify.cose import Sign1
from notarium.verify.entry import (
    CHUNK_HEADER_SIZE,
    FIXED_SIZE,
    ChunkName,
    EntryView,
    decode_tables,
    parse_entry,
    read_positions,
)
from notarium.verify.keys import key_id
from notarium.verify.signature import PrimarySignature, decode_cose_signature_value

ENTRIES = 240
CONFIG = EngineConfig(chunk_size=9_000, signature_tx_count=12, signature_interval_ms=10)
TXID_RE = re.compile(r"^(\d+|\?)\.(\d+)$")

# ----------------------------------------------------------------------------------- the ledger


@dataclass(frozen=True)
class Entry:
    view: EntryView
    raw: bytes
    public: dict[str, dict[bytes, bytes | None]]

    @property
    def seqno(self) -> int:
        return self.view.seqno

    @property
    def txid(self) -> TxId:
        return TxId(self.view.view, self.view.seqno)

    @property
    def is_signature(self) -> bool:
        return tables.SIGNATURES in self.public


@dataclass(frozen=True)
class Chunk:
    path: Path
    name: ChunkName
    data: bytes
    entries: list[Entry]
    positions_offset: int

    @property
    def start(self) -> int:
        return self.name.start

    @property
    def end(self) -> int:
        assert self.name.end is not None
        return self.name.end


def load_chunks(ledger_dir: Path) -> list[Chunk]:
    """Every chunk file, in seqno order, with its entries parsed by the verification core."""
    chunks = []
    for path in ledger_dir.iterdir():
        name = ChunkName.parse(path.name)
        if name is None:
            continue
        data = path.read_bytes()
        entries_end, positions = read_positions(data)
        assert positions is not None, f"{path.name} is not complete"
        entries = []
        for off in positions:
            e = parse_entry(data, off, entries_end)
            public = decode_tables(data, e.tables_start, e.public_end) if e.tables_start < e.public_end else {}
            entries.append(Entry(e, data[e.start : e.end], public))
        chunks.append(Chunk(path, name, data, entries, entries_end))
    return sorted(chunks, key=lambda c: c.start)


def build_chunk(entries: list[bytes], *, complete: bool = True) -> bytes:
    """A chunk file holding ``entries``: header, entries, positions table (if complete)."""
    offsets, off = [], CHUNK_HEADER_SIZE
    for e in entries:
        offsets.append(off)
        off += len(e)
    if not complete:
        return bytes(CHUNK_HEADER_SIZE) + b"".join(entries)
    return struct.pack("<Q", off) + b"".join(entries) + chunk_positions_table(offsets)


def rewrite_chunk(chunk: Chunk, entries: list[bytes], first_seqno: int | None = None, *, complete: bool = True) -> Path:
    """Replace ``chunk`` by one holding ``entries``, named consistently with their number."""
    start = chunk.start if first_seqno is None else first_seqno
    name = ChunkName(start, start + len(entries) - 1, committed=True) if complete else ChunkName(start, None, False)
    chunk.path.unlink()
    path = chunk.path.with_name(str(name))
    path.write_bytes(build_chunk(entries, complete=complete))
    return path


def with_public_tables(entry: Entry, public: dict[str, dict[bytes, bytes | None]]) -> bytes:
    """The entry with its public map records replaced (tag, IV, header kept; sizes fixed up)."""
    e = entry.view
    header = entry.raw[FIXED_SIZE : e.tables_start - e.start]
    ciphertext = entry.raw[e.public_end - e.start :]
    return assemble_entry(e.tag, entry.raw[24:36], header + encode_tables(public), ciphertext, e.flags)


@dataclass(frozen=True)
class Built:
    service: Path
    last_signed: TxId


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    service = tmp_path_factory.mktemp("tamper") / "tamper-service"
    init_service(service)
    ledger = open_ledger(service, CONFIG)
    try:
        txids = []
        for i in range(ENTRIES):
            txids.append(ledger.append_entry(f"entry {i}: " + "z" * (i % 50), f"collection-{i % 3}"))
            if i % 10 == 9:  # small batches: many signatures
                assert ledger.wait_committed(txids[-1], timeout=10) == TxStatus.COMMITTED
        assert ledger.wait_committed(txids[-1], timeout=10) == TxStatus.COMMITTED
    finally:
        ledger.close()
    chunks = load_chunks(service / "ledger")
    signatures = [e for c in chunks for e in c.entries if e.is_signature]
    assert len(chunks) >= 6
    assert len(signatures) >= 20
    assert all(c.entries[-1].is_signature for c in chunks)
    report = audit(find_target(service))
    assert report.unsigned_tail == 0
    assert report.last_signed is not None
    assert report.last_signed.seqno > ENTRIES
    return Built(service, report.last_signed)


@pytest.fixture
def svc(built: Built, tmp_path: Path) -> Path:
    """A fresh copy of the service directory for one test to damage."""
    dst = tmp_path / "copy-service"
    shutil.copytree(built.service, dst)
    return dst


def audit_error(path: Path, *, service_cert: Path | None = None, expect: TxId | None = None) -> LedgerAuditError:
    with pytest.raises(LedgerAuditError) as info:
        audit(find_target(path, service_cert), expect=expect)
    return info.value


def txid_of(exc: LedgerAuditError) -> tuple[str, int]:
    assert exc.txid is not None, f"no TxId named: {exc.check}: {exc}"
    m = TXID_RE.match(exc.txid)
    assert m, exc.txid
    return m.group(1), int(m.group(2))


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["audit", *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


# ------------------------------------------------------------------------------------ baseline


def test_baseline_audit_passes(svc: Path, built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    report = audit(find_target(svc))
    assert report.last_signed == built.last_signed
    assert report.unsigned_tail == 0
    assert report.secrets_checked
    assert report.service_cert_pinned
    assert report.transactions == built.last_signed.seqno
    code, out = cli_json(capsys, str(svc))
    assert code == 0
    assert out["ok"] is True
    assert out["unsignedTail"] == 0
    assert out["lastSigned"] == str(built.last_signed)
    assert out["secretsChecked"] is True
    code, out = cli_json(capsys, str(svc), "--expect", str(built.last_signed))
    assert code == 0


def test_baseline_chunk_folder_with_pinned_certificate(svc: Path, built: Built) -> None:
    report = audit(find_target(svc / "ledger", svc / "service_cert.pem"))
    assert report.last_signed == built.last_signed
    assert not report.secrets_checked
    assert report.service_cert_pinned


def test_cli_process_reports_failure_as_json(svc: Path) -> None:
    """Through a real `python -m notarium` process: exit status and JSON on a damaged ledger."""
    chunks = load_chunks(svc / "ledger")
    victim = chunks[len(chunks) // 2]
    entry = next(e for e in victim.entries if not e.is_signature)
    data = bytearray(victim.data)
    data[entry.view.public_end + 3] ^= 0x10  # in the ciphertext
    victim.path.write_bytes(data)
    proc = subprocess.run(
        [sys.executable, "-m", "notarium", "audit", str(svc), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0, proc.stdout
    out = json.loads(proc.stdout)
    assert out["ok"] is False
    # the service directory's ledger secret names the changed entry (its GCM tag fails)
    assert out["check"] == "entry-secret"
    assert out["txid"] == str(entry.txid)
    next_sig = next(e for e in victim.entries if e.is_signature and e.seqno > entry.seqno)
    assert f"the root signed at {next_sig.txid}" in out["error"]
    proc = subprocess.run(
        [sys.executable, "-m", "notarium", "audit", str(svc)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode != 0
    assert str(entry.txid) in proc.stderr
    assert "entry-secret" in proc.stderr
    # the chunk files alone: the signature whose root no longer matches
    chunk_folder = [str(svc / "ledger"), "--service-cert", str(svc / "service_cert.pem")]
    proc = subprocess.run(
        [sys.executable, "-m", "notarium", "audit", *chunk_folder],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert str(next_sig.txid) in proc.stderr
    assert "signature-root" in proc.stderr


# ----------------------------------------------------------------------------------- bit flips


@dataclass(frozen=True)
class Flip:
    file: str
    offset: int
    bit: int
    what: str
    seqno: int | None = None  # the damaged entry
    covered_by: int | None = None  # the signature whose root first covers it (itself if none does)


def _coverage(chunks: list[Chunk]) -> dict[int, int]:
    """seqno → the first signature after it (the last signature maps to itself)."""
    entries = [e for c in chunks for e in c.entries]
    out, nxt = {}, entries[-1].seqno
    for entry in reversed(entries):
        out[entry.seqno] = nxt
        if entry.is_signature:
            nxt = entry.seqno
    return out


def _entry_flips(chunk: Chunk, entry: Entry, covered_by: int, lo: int, hi: int, what: str) -> Iterator[Flip]:
    for off in range(entry.view.start + lo, entry.view.start + hi):
        for bit in range(8):
            yield Flip(chunk.path.name, off, bit, what, entry.seqno, covered_by)


@dataclass(frozen=True)
class Span:
    file: str
    lo: int
    hi: int
    what: str
    seqno: int | None = None
    covered_by: int | None = None


def _regions(chunks: list[Chunk]) -> dict[str, list[Span]]:
    """Every byte of every chunk file, grouped by the part of the ledger it belongs to."""
    regions: dict[str, list[Span]] = {}
    covered = _coverage(chunks)
    last_sig = chunks[-1].entries[-1]
    for chunk in chunks:
        name = chunk.path.name
        regions.setdefault("chunk-header", []).append(Span(name, 0, CHUNK_HEADER_SIZE, "chunk header"))
        regions.setdefault("positions-table", []).append(
            Span(name, chunk.positions_offset, len(chunk.data), "positions table")
        )
        for entry in chunk.entries:
            e, c = entry.view, covered[entry.seqno]
            parts: list[tuple[str, int, int, str]]
            if entry is last_sig:
                parts = [("last-signature", e.start, e.end, "last signature transaction")]
            elif entry.is_signature:
                parts = [("signature", e.start, e.end, "signature transaction")]
            elif entry.seqno == 1:
                parts = [("genesis", e.start, e.end, "genesis transaction")]
            else:
                assert e.tables_start == e.public_end  # private ledger: no public tables in entries
                parts = [
                    ("entry-framing", e.start, e.start + FIXED_SIZE, "entry header, tag, IV"),
                    ("public-domain", e.start + FIXED_SIZE, e.public_end, "public header"),
                    ("ciphertext", e.public_end, e.end, "ciphertext"),
                ]
            for region, lo, hi, what in parts:
                regions.setdefault(region, []).append(Span(name, lo, hi, what, e.seqno, c))
    return regions


def _sample(spans: list[Span], k: int, rng: random.Random) -> list[Flip]:
    """``k`` flips at distinct byte offsets spread uniformly over ``spans``, one random bit each."""
    total = sum(s.hi - s.lo for s in spans)
    flips = []
    for pick in sorted(rng.sample(range(total), k)):
        n = pick
        for s in spans:
            if n < s.hi - s.lo:
                flips.append(Flip(s.file, s.lo + n, rng.randrange(8), s.what, s.seqno, s.covered_by))
                break
            n -= s.hi - s.lo
    return flips


_BEGIN = b"-----BEGIN CERTIFICATE-----"


def _pem_flips(
    chunk: Chunk, entry: Entry, covered_by: int, pem_at: int, newline: bytes, what: str, parts: set[str]
) -> list[Flip]:
    """All flips of the base64 characters that encode chosen DER fields of the PEM certificate at
    ``pem_at`` (lines of 64 characters, separated by ``newline`` as stored: raw or JSON-escaped)."""
    end = chunk.data.index(b"-----END CERTIFICATE-----", pem_at)
    cert = x509.load_pem_x509_certificate(
        chunk.data[pem_at:end].replace(newline, b"\n") + b"-----END CERTIFICATE-----\n"
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    assert der[:2] == b"\x30\x82"
    spki = der.index(
        cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    fields = {
        "version": range(8, 13),  # [0] { INTEGER 2 }: cryptography rejects other values with InvalidVersion
        "signature-algorithm": range(4 + len(cert.tbs_certificate_bytes), 4 + len(cert.tbs_certificate_bytes) + 12),
        "key-algorithm": range(spki + 6, spki + 9),  # the start of the id-ecPublicKey OID
    }
    body = pem_at + len(_BEGIN) + len(newline)
    offsets = set()
    for part in parts:
        for d in fields[part]:
            for c in ((4 * d) // 3, (4 * d) // 3 + 1):
                offsets.add(body + c + (c // 64) * len(newline))
    what = f"{what} ({', '.join(sorted(parts))})"
    return [Flip(chunk.path.name, o, b, what, entry.seqno, covered_by) for o in sorted(offsets) for b in range(8)]


def _targeted_flips(chunks: list[Chunk]) -> dict[str, list[Flip]]:
    """Flips tried every time, besides the random sample: the version and flags bytes of the last
    signature transaction (no later signature covers them), and the certificate fields that a
    certificate parser interprets (version, algorithms) in the genesis transaction and in the
    certificate that signature transactions carry."""
    covered = _coverage(chunks)
    out: dict[str, list[Flip]] = {}
    first, genesis = chunks[0], chunks[0].entries[0]
    node_pem = next(iter(genesis.public[tables.NODES_ENDORSED_CERTS].values()))
    assert node_pem is not None
    at = first.data.index(node_pem, genesis.view.start)
    out["genesis"] = _pem_flips(first, genesis, 2, at, b"\n", "node certificate", {"version", "signature-algorithm"})
    out["genesis"] += [Flip(first.path.name, at + len(node_pem) - 1, b, "node PEM end", 1, 2) for b in range(8)]
    info = first.data.index(b'"cert":"', first.data.index(tables.SERVICE_INFO.encode())) + len(b'"cert":"')
    out["genesis"] += _pem_flips(first, genesis, 2, info, b"\\n", "service certificate", {"version"})

    # (a signature early in the ledger: the cost of an audit grows with the offset)
    chunk = chunks[1]
    sig = next(e for e in chunk.entries if e.is_signature)
    at = chunk.data.index(b'"cert":"', sig.view.start) + len(b'"cert":"')
    out["signature"] = _pem_flips(
        chunk, sig, covered[sig.seqno], at, b"\\n", "signature's certificate", {"version", "key-algorithm"}
    )

    chunk, sig = chunks[-1], chunks[-1].entries[-1]
    out["last-signature"] = list(_entry_flips(chunk, sig, sig.seqno, 0, 2, "last signature: version, flags"))
    return out


SAMPLES = {  # 150 random flips over all regions
    "chunk-header": 14,
    "positions-table": 14,
    "entry-framing": 20,
    "public-domain": 16,
    "ciphertext": 20,
    "genesis": 10,
    "signature": 30,
    "last-signature": 26,
}


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@pytest.mark.parametrize("region", sorted(SAMPLES))
def test_bit_flip_is_detected(svc: Path, region: str) -> None:
    """A flipped bit anywhere in a chunk file fails the audit, without crashing the auditor; damage
    to an entry is reported between the entry and the first signature that covers it."""
    chunks = load_chunks(svc / "ledger")
    rng = random.Random(f"notarium-bit-flips-{region}")
    flips = _sample(_regions(chunks)[region], SAMPLES[region], rng) + _targeted_flips(chunks).get(region, [])
    target = find_target(svc)
    contents = {c.path.name: bytearray(c.data) for c in chunks}
    problems = []
    for flip in flips:
        path, data = svc / "ledger" / flip.file, contents[flip.file]
        data[flip.offset] ^= 1 << flip.bit
        path.write_bytes(data)
        where = f"{flip.file}+{flip.offset} bit {flip.bit} ({flip.what}, seqno {flip.seqno})"
        try:
            audit(target)
        except LedgerAuditError as exc:
            if flip.seqno is not None:
                assert flip.covered_by is not None
                m = TXID_RE.match(exc.txid or "")
                if m is None:
                    problems.append(f"{where}: failed [{exc.check}] without naming a TxId: {exc}")
                elif not flip.seqno <= int(m.group(2)) <= flip.covered_by + 1:
                    problems.append(
                        f"{where}: reported at {exc.txid} [{exc.check}], not in {flip.seqno}..{flip.covered_by}"
                    )
        except Exception as exc:  # every bad input must become a LedgerAuditError (with TxId and check)
            problems.append(f"{where}: auditor crashed with {type(exc).__name__}: {exc}")
        else:
            problems.append(f"{where}: NOT DETECTED")
        finally:
            data[flip.offset] ^= 1 << flip.bit
            path.write_bytes(data)
    audit(target)  # everything restored
    assert not problems, f"{len(problems)} of {len(flips)} flips in {region}:\n" + "\n".join(problems)


def test_flip_through_cli_names_txid(svc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chunks = load_chunks(svc / "ledger")
    last_sig = chunks[-1].entries[-1]
    data = bytearray(chunks[-1].data)
    nonce = data.index(b'"hashed_nonce":"', last_sig.view.start) + 20  # authenticated only by the GCM tag
    data[nonce] ^= 0x01
    chunks[-1].path.write_bytes(data)
    code, out = cli_json(capsys, str(svc))
    assert code != 0
    assert out == {"ok": False, "txid": str(last_sig.txid), "check": "entry-secret", "error": out["error"]}


# ---------------------------------------------------------------------- entries: delete, dup, swap


def _middle(chunks: list[Chunk]) -> tuple[Chunk, int]:
    """A chunk in the middle and the index of an application entry well inside it."""
    chunk = chunks[len(chunks) // 2]
    for i in range(1, len(chunk.entries) - 2):
        if not chunk.entries[i].is_signature and not chunk.entries[i + 1].is_signature:
            return chunk, i
    raise AssertionError("no two adjacent application entries")


def test_a_changed_entry_is_named_when_the_ledger_secret_is_known(svc: Path) -> None:
    """A changed entry breaks the root of the signature that covers it; with the ledger secret (a
    service directory's) the audit names the entry itself, which its GCM tag no longer
    authenticates. From the chunk files alone it can only name that signature."""
    chunks = load_chunks(svc / "ledger")
    chunk, i = _middle(chunks)
    victim = chunk.entries[i]
    covering = next(e for e in chunk.entries[i:] if e.is_signature)
    data = bytearray(chunk.data)
    data[victim.view.end - 1] ^= 0x01  # the last byte of its ciphertext
    chunk.path.write_bytes(data)
    exc = audit_error(svc)
    assert (exc.check, exc.txid) == ("entry-secret", str(victim.txid))
    assert f"transaction {victim.txid} was changed" in str(exc)
    assert f"the root signed at {covering.txid}" in str(exc)
    exc = audit_error(svc / "ledger", service_cert=svc / "service_cert.pem")
    assert (exc.check, exc.txid) == ("signature-root", str(covering.txid))


def test_a_changed_entry_of_a_public_ledger_is_named_with_its_ledger_secret(tmp_path: Path) -> None:
    """On a public ledger too: the GCM tag authenticates the public domain."""
    service = tmp_path / "public"
    init_service(service, ledger_type="Public")
    with open_ledger(service, CONFIG) as ledger:
        txids = [ledger.append_entry(f"public entry {i}", "c") for i in range(30)]
        assert ledger.wait_committed(txids[-1], timeout=10) == TxStatus.COMMITTED
    chunks = load_chunks(service / "ledger")
    victim = next(e for c in chunks for e in c.entries if e.txid == txids[17])
    chunk = next(c for c in chunks if victim in c.entries)
    data = bytearray(chunk.data)
    at = data.index(b"public entry 17", victim.view.start) + len("public entry ")
    data[at] = ord("9")
    chunk.path.write_bytes(data)
    exc = audit_error(service)
    assert (exc.check, exc.txid) == ("entry-secret", str(victim.txid))
    exc = audit_error(service / "ledger", service_cert=service / "service_cert.pem")
    assert exc.check == "signature-root"
    assert exc.txid is not None
    assert TxId.parse(exc.txid).seqno > victim.seqno


def test_deleted_entry(svc: Path) -> None:
    chunks = load_chunks(svc / "ledger")
    chunk, i = _middle(chunks)
    victim = chunk.entries[i]
    raws = [e.raw for e in chunk.entries]
    del raws[i]
    rewrite_chunk(chunk, raws)  # positions table and name consistent with the shorter chunk
    exc = audit_error(svc)
    assert exc.check == "entry-seqno"
    assert exc.txid == str(victim.txid)  # the next entry sits at the deleted one's seqno


def test_duplicated_entry(svc: Path) -> None:
    chunks = load_chunks(svc / "ledger")
    chunk, i = _middle(chunks)
    raws = [e.raw for e in chunk.entries]
    raws.insert(i + 1, raws[i])
    rewrite_chunk(chunk, raws)
    exc = audit_error(svc)
    assert exc.check == "entry-seqno"
    assert txid_of(exc)[1] == chunk.entries[i].seqno + 1


def test_swapped_entries(svc: Path) -> None:
    chunks = load_chunks(svc / "ledger")
    chunk, i = _middle(chunks)
    raws = [e.raw for e in chunk.entries]
    raws[i], raws[i + 1] = raws[i + 1], raws[i]
    rewrite_chunk(chunk, raws)
    exc = audit_error(svc)
    assert exc.check == "entry-seqno"
    assert txid_of(exc)[1] == chunk.entries[i].seqno


def test_deleted_signature_transaction(svc: Path) -> None:
    chunks = load_chunks(svc / "ledger")
    chunk = chunks[len(chunks) // 2]
    i = next(i for i, e in enumerate(chunk.entries[:-1]) if e.is_signature)
    raws = [e.raw for e in chunk.entries]
    del raws[i]
    rewrite_chunk(chunk, raws)
    exc = audit_error(svc)
    assert exc.check == "entry-seqno"
    assert exc.txid == str(chunk.entries[i].txid)


# ------------------------------------------------------------------------------- chunk files


def test_deleted_middle_chunk(svc: Path) -> None:
    chunks = load_chunks(svc / "ledger")
    victim = chunks[len(chunks) // 2]
    victim.path.unlink()
    exc = audit_error(svc)
    assert exc.check == "chunk-order"
    assert txid_of(exc)[1] == victim.start


@pytest.mark.parametrize("overlap", ["same-range", "inside", "extends-previous"])
def test_duplicated_chunk(svc: Path, overlap: str) -> None:
    chunks = load_chunks(svc / "ledger")
    k = len(chunks) // 2
    victim = chunks[k]
    name = {
        "same-range": f"ledger_{victim.start}-{victim.end}",  # complete, not ".committed"
        "inside": f"ledger_{victim.start + 2}-{victim.end}.committed",
        "extends-previous": f"ledger_{chunks[k - 1].end}-{victim.end}.committed",
    }[overlap]
    (svc / "ledger" / name).write_bytes(victim.data)
    exc = audit_error(svc)
    assert exc.check in {"chunk-order", "entry-seqno"}, exc
    txid_of(exc)


def test_reordered_chunks(svc: Path) -> None:
    chunks = load_chunks(svc / "ledger")
    a, b = chunks[2], chunks[3]
    tmp = a.path.with_name("swap")
    a.path.rename(tmp)
    b.path.rename(a.path)
    tmp.rename(b.path)
    exc = audit_error(svc)
    assert exc.check == "entry-seqno"
    assert txid_of(exc)[1] == a.start


def test_reordered_chunks_renamed_to_their_contents(svc: Path) -> None:
    """Two chunks swapped with names that match what they hold: a gap, then a step back."""
    chunks = load_chunks(svc / "ledger")
    a, b = chunks[2], chunks[3]
    raws_a, raws_b = [e.raw for e in a.entries], [e.raw for e in b.entries]
    a.path.unlink()
    b.path.unlink()
    (svc / "ledger" / f"ledger_{a.start}-{a.start + len(raws_b) - 1}.committed").write_bytes(build_chunk(raws_b))
    (svc / "ledger" / f"ledger_{a.start + len(raws_b)}-{b.end}.committed").write_bytes(build_chunk(raws_a))
    exc = audit_error(svc)
    assert exc.check == "entry-seqno"
    assert txid_of(exc)[1] == a.start


@pytest.mark.parametrize("which", ["middle", "last"])
def test_truncated_chunk_keeping_its_name(svc: Path, which: str) -> None:
    chunks = load_chunks(svc / "ledger")
    chunk = chunks[len(chunks) // 2] if which == "middle" else chunks[-1]
    cut = chunk.entries[-1].view.start  # drop the last signature and the positions table
    chunk.path.write_bytes(chunk.data[:cut])
    exc = audit_error(svc)
    assert exc.check == "chunk-positions"
    assert txid_of(exc)[1] == chunk.start


def test_truncated_middle_chunk_rewritten_consistently(svc: Path) -> None:
    chunks = load_chunks(svc / "ledger")
    chunk = chunks[len(chunks) // 2]
    keep = [e.raw for e in chunk.entries[:-1]]
    rewrite_chunk(chunk, keep)  # a consistent, shorter chunk: the next one no longer follows it
    exc = audit_error(svc)
    assert exc.check in {"chunk-signature", "chunk-order"}
    txid_of(exc)


def test_truncated_last_chunk_before_its_last_signature(svc: Path, built: Built) -> None:
    chunks = load_chunks(svc / "ledger")
    chunk = chunks[-1]
    keep = chunk.entries[:-1]
    assert not keep[-1].is_signature
    rewrite_chunk(chunk, [e.raw for e in keep])
    exc = audit_error(svc)
    assert exc.check == "chunk-signature"
    assert exc.txid == str(keep[-1].txid)


def test_truncated_last_chunk_at_an_earlier_signature_needs_expect(
    svc: Path, built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cut back to an earlier signature, with name and positions rewritten: a valid shorter
    ledger. Only the expected tip (--expect) can reveal it."""
    chunks = load_chunks(svc / "ledger")
    chunk = chunks[-1]
    i = max(i for i, e in enumerate(chunk.entries[:-1]) if e.is_signature)
    rewrite_chunk(chunk, [e.raw for e in chunk.entries[: i + 1]])
    report = audit(find_target(svc))
    assert report.last_signed == chunk.entries[i].txid
    exc = audit_error(svc, expect=built.last_signed)
    assert exc.check == "expected-tip"
    code, out = cli_json(capsys, str(svc), "--expect", str(built.last_signed))
    assert code != 0
    assert out["check"] == "expected-tip"


def test_removed_last_chunk_needs_expect(svc: Path, built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    chunks = load_chunks(svc / "ledger")
    chunks[-1].path.unlink()
    assert audit(find_target(svc)).last_signed == chunks[-2].entries[-1].txid
    exc = audit_error(svc, expect=built.last_signed)
    assert exc.check == "expected-tip"
    assert str(built.last_signed) in str(exc)
    code, out = cli_json(capsys, str(svc), "--expect", str(built.last_signed))
    assert code != 0
    assert out["ok"] is False
    assert out["check"] == "expected-tip"


# --------------------------------------------------------------------------------- signatures


def _signatures(chunks: list[Chunk]) -> list[tuple[Chunk, int]]:
    return [(c, i) for c in chunks for i, e in enumerate(c.entries) if e.is_signature]


def _replace_entry(chunk: Chunk, i: int, raw: bytes) -> None:
    raws = [e.raw for e in chunk.entries]
    raws[i] = raw
    rewrite_chunk(chunk, raws)


def _sig_record(entry: Entry) -> PrimarySignature:
    return PrimarySignature.from_json(entry.public[tables.SIGNATURES][tables.SINGLETON_KEY] or b"")


def _with_sig_record(entry: Entry, sig: PrimarySignature) -> bytes:
    public = {**entry.public, tables.SIGNATURES: {tables.SINGLETON_KEY: sig.to_json()}}
    return with_public_tables(entry, public)


@pytest.mark.parametrize("which", ["middle", "last"])
def test_forged_node_signature(svc: Path, which: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The node signature replaced by a valid signature over the same root by another P-384 key."""
    chunks = load_chunks(svc / "ledger")
    sigs = _signatures(chunks)
    chunk, i = sigs[len(sigs) // 2] if which == "middle" else sigs[-1]
    entry = chunk.entries[i]
    record = _sig_record(entry)
    forged = PrimarySignature(
        sig=sign_root(ec.generate_private_key(ec.SECP384R1()), record.root),
        node=record.node,
        seqno=record.seqno,
        view=record.view,
        root=record.root,
        cert=record.cert,
        hashed_nonce=record.hashed_nonce,
    )
    _replace_entry(chunk, i, _with_sig_record(entry, forged))
    code, out = cli_json(capsys, str(svc))
    assert code != 0
    assert out["txid"] == str(entry.txid)
    assert out["check"] == "signature-node"


def test_forged_signature_with_attackers_own_certificate(svc: Path) -> None:
    """Signed by a key of the attacker's, naming it as the node and carrying its (unendorsed) certificate."""
    chunks = load_chunks(svc / "ledger")
    chunk, i = _signatures(chunks)[5]
    entry = chunk.entries[i]
    record = _sig_record(entry)
    key = ec.generate_private_key(ec.SECP384R1())
    cert = ids.self_signed_identity(key, "mallory", now=datetime.datetime.now(datetime.UTC), days=30)
    forged = PrimarySignature(
        sig=sign_root(key, record.root),
        node=key_id(key.public_key()),
        seqno=record.seqno,
        view=record.view,
        root=record.root,
        cert=ids.cert_pem(cert).decode(),
        hashed_nonce=record.hashed_nonce,
    )
    _replace_entry(chunk, i, _with_sig_record(entry, forged))
    exc = audit_error(svc)
    assert exc.check == "signature-node"
    assert exc.txid == str(entry.txid)


def test_forged_cose_signature(svc: Path) -> None:
    """The service's COSE root signature replaced by one over the same header and root by another key."""
    chunks = load_chunks(svc / "ledger")
    sigs = _signatures(chunks)
    chunk, i = sigs[len(sigs) // 3]
    entry = chunk.entries[i]
    sign1 = Sign1.decode(decode_cose_signature_value(entry.public[tables.COSE_SIGNATURES][tables.SINGLETON_KEY] or b""))
    root = _sig_record(entry).root
    forged = encode_sign1(
        sign1.protected_bytes, {}, sign_detached(ec.generate_private_key(ec.SECP384R1()), sign1.protected_bytes, root)
    )
    value = json.dumps(base64.b64encode(forged).decode()).encode()
    public = {**entry.public, tables.COSE_SIGNATURES: {tables.SINGLETON_KEY: value}}
    _replace_entry(chunk, i, with_public_tables(entry, public))
    exc = audit_error(svc)
    assert exc.check == "signature-cose"
    assert exc.txid == str(entry.txid)


@pytest.mark.parametrize("direction", ["earlier-into-later", "later-into-earlier"])
def test_swapped_signature_record(svc: Path, direction: str) -> None:
    """The signature record of one signature transaction copied into another."""
    chunks = load_chunks(svc / "ledger")
    sigs = _signatures(chunks)
    (ca, ia), (cb, ib) = sigs[len(sigs) // 2], sigs[len(sigs) // 2 + 3]
    if direction == "later-into-earlier":
        (ca, ia), (cb, ib) = (cb, ib), (ca, ia)
    source, dest = ca.entries[ia], cb.entries[ib]
    chunks = load_chunks(svc / "ledger")  # cb may equal ca: reload after choosing
    cb = next(c for c in chunks if c.start == cb.start)
    public = {**dest.public, tables.SIGNATURES: source.public[tables.SIGNATURES]}
    _replace_entry(cb, ib, with_public_tables(dest, public))
    exc = audit_error(svc)
    assert exc.check == "signature-txid"
    assert exc.txid == str(dest.txid)


def test_whole_signature_transaction_replayed_elsewhere(svc: Path) -> None:
    """A whole signature transaction copied over a later one (a replayed, genuine signature)."""
    chunks = load_chunks(svc / "ledger")
    chunk = chunks[-1]
    idx = [i for i, e in enumerate(chunk.entries) if e.is_signature]
    assert len(idx) >= 2
    _replace_entry(chunk, idx[-1], chunk.entries[idx[0]].raw)
    exc = audit_error(svc)
    assert exc.check == "entry-seqno"
    assert exc.txid == str(chunk.entries[idx[-1]].txid)


# ----------------------------------------------------------------------------- service identity


def test_ledger_of_another_service(built: Built, tmp_path: Path) -> None:
    """A second, independent service (its own keys) audited with the first one's certificate pinned."""
    other = tmp_path / "other-service"
    init_service(other)
    ledger = open_ledger(other, CONFIG)
    try:
        t = ledger.append_entry("impostor", "collection-0")
        assert ledger.wait_committed(t, timeout=10) == TxStatus.COMMITTED
    finally:
        ledger.close()
    audit(find_target(other))  # fine on its own
    pinned = built.service / "service_cert.pem"
    for path in (other / "ledger", other):
        proc = subprocess.run(
            [sys.executable, "-m", "notarium", "audit", str(path), "--service-cert", str(pinned), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode != 0
        out = json.loads(proc.stdout)
        assert out["ok"] is False
        assert out["check"] == "service-identity"
        assert out["txid"] == "1.1"


def test_chunks_of_one_service_under_anothers_directory(built: Built, tmp_path: Path) -> None:
    """The first service's chunks moved into a second service directory: its pinned cert rejects them."""
    other = tmp_path / "second-service"
    init_service(other)
    for p in (other / "ledger").iterdir():
        p.unlink()
    for p in (built.service / "ledger").iterdir():
        shutil.copy(p, other / "ledger" / p.name)
    exc = audit_error(other)
    assert exc.check == "service-identity"
    assert exc.txid == "1.1"


# ------------------------------------------------------------------------- empty and unsigned


def test_no_chunk_files(tmp_path: Path, built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README").write_text("not a chunk")
    exc = audit_error(empty, service_cert=built.service / "service_cert.pem")
    assert exc.check == "no-ledger"
    code, out = cli_json(capsys, str(empty), "--service-cert", str(built.service / "service_cert.pem"))
    assert code != 0
    assert out["check"] == "no-ledger"


def test_no_signature(svc: Path, built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    """Only the genesis transaction, in a live chunk, and nothing that signs it."""
    chunks = load_chunks(svc / "ledger")
    folder = svc.parent / "unsigned"
    folder.mkdir()
    (folder / "ledger_1").write_bytes(build_chunk([chunks[0].entries[0].raw], complete=False))
    exc = audit_error(folder, service_cert=svc / "service_cert.pem")
    assert exc.check == "no-signature"
    code, out = cli_json(capsys, str(folder), "--service-cert", str(svc / "service_cert.pem"))
    assert code != 0
    assert out["check"] == "no-signature"


def _unsign_tail(svc: Path) -> tuple[list[Entry], TxId]:
    """Drop the final signature: the last chunk becomes a live chunk with an unsigned tail."""
    chunks = load_chunks(svc / "ledger")
    chunk = chunks[-1]
    keep = chunk.entries[:-1]
    tail = []
    for e in reversed(keep):
        if e.is_signature:
            break
        tail.append(e)
    assert tail
    prev = next(e for e in reversed(keep) if e.is_signature) if any(e.is_signature for e in keep) else None
    last_signed = prev.txid if prev else chunks[-2].entries[-1].txid
    rewrite_chunk(chunk, [e.raw for e in keep], complete=False)
    return tail[::-1], last_signed


def test_unsigned_tail_is_reported_not_failed(svc: Path, built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    tail, last_signed = _unsign_tail(svc)
    report = audit(find_target(svc))
    assert report.unsigned_tail == len(tail) > 0
    assert report.last_signed == last_signed
    assert report.secrets_checked
    assert "UNVERIFIED" in report.summary()
    code, out = cli_json(capsys, str(svc))
    assert code == 0
    assert out["ok"] is True
    assert out["unsignedTail"] == len(tail)
    assert out["lastSigned"] == str(last_signed)
    code, out = cli_json(capsys, str(svc), "--expect", str(built.last_signed))
    assert code != 0
    assert out["check"] == "expected-tip"


def test_tampered_unsigned_tail_fails_with_the_ledger_secret(svc: Path) -> None:
    """No signature covers the tail, but its GCM tags and commit evidence derive from the secret."""
    tail, _ = _unsign_tail(svc)
    live = next(p for p in (svc / "ledger").iterdir() if ChunkName.parse(p.name).end is None)
    data = bytearray(live.read_bytes())
    victim = tail[len(tail) // 2]
    at = data.index(victim.raw) + victim.view.public_end - victim.view.start + 1  # its ciphertext
    data[at] ^= 0x04
    live.write_bytes(data)
    exc = audit_error(svc)
    assert exc.check == "entry-secret"
    assert exc.txid == str(victim.txid)
    report = audit(find_target(svc / "ledger", svc / "service_cert.pem"))  # without the secret: unverified
    assert report.unsigned_tail == len(tail)
    assert not report.secrets_checked


def test_audit_requires_a_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert main(["audit", str(missing), "--json"]) != 0
