"""The standalone receipt verifier page (src/notarium/verify/verifier.html) in a real browser, against
the Azure SDK's ``verify_receipt`` (1.1.1 and 2.0.0b2, in their oracle venvs) and notarium's own
``verify_json_receipt``, on every receipt of the project's vectors (tests/unit/verify/vectors/acl-sdk) and every
altered one of tests/unit/verify/test_receipts.py, and on receipts of a fresh ledger with
alterations of each part. The page must agree with notarium on every case, and with the SDK on
every case but those where notarium is documented as stricter (it rejects them; the SDK accepts).
Also: the page served by `notarium serve` at /verify (unauthenticated, CSP by hash, no request
leaves it), opened from disk, and used as a person would (paste, verify, read the failing step)."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from playwright.sync_api import Browser, Page, expect

from integration.console_kit import Dialogs, chromium
from integration.oracle import JsonCase, sdk_verify_receipts
from integration.server import running
from notarium.errors import VerificationError
from notarium.ledger import EngineConfig, init_service, open_ledger
from notarium.verify import standalone, verify_json_receipt
from unit.verify.test_receipts import EXPECTED_FAILURES, STRICT_FAILURES

VECTORS = Path(__file__).resolve().parents[1] / "unit" / "verify" / "vectors" / "acl-sdk"
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
HEX = "0123456789abcdef"


@dataclass(frozen=True)
class Case:
    label: str
    receipt: Any
    service_pem: str
    claims: list[dict[str, Any]] | None = None


def _swap(text: str, i: int, alphabet: str) -> str:
    i %= len(text)
    return text[:i] + alphabet[(alphabet.index(text[i]) + 1) % len(alphabet)] + text[i + 1 :]


def vector_cases() -> list[Case]:
    v = json.loads((VECTORS / "receipts.json").read_text())
    claims = json.loads((VECTORS / "claims.json").read_text())
    pem = {n: v["service_certificates"][n]["pem"] for n in "123"}
    receipt = {n: v["receipts"][n]["receipt"] for n in "123"}
    cases = [Case(f"vector {n}", receipt[n], pem[n]) for n in "123"]
    for form in ("ledger_entry", "claim_digest"):
        cases.append(Case(f"vector 3 with {form} claims", receipt["3"], pem["3"], claims[form]["claims"]))
        cases.append(Case(f"vector 1 with {form} claims (mismatch)", receipt["1"], pem["1"], claims[form]["claims"]))
    forged = copy.deepcopy(claims["ledger_entry"]["claims"])
    forged[0]["ledgerEntry"]["contents"] = "Hello world!"
    cases.append(Case("vector 3 with altered claim contents", receipt["3"], pem["3"], forged))
    cases += [Case(f"vector 1 against service {n}", receipt["1"], pem[n]) for n in "23"]
    cases.append(Case("vector 2 against service 1", receipt["2"], pem["1"]))
    for name, mutation in {**EXPECTED_FAILURES, **STRICT_FAILURES}.items():
        altered = copy.deepcopy(receipt["1"])
        mutation(altered, v)
        try:
            json.dumps(altered)
        except TypeError:
            continue  # bytes values: not a JSON receipt, nothing a page could be given
        cases.append(Case(f"vector 1, {name}", altered, pem["1"]))
    return cases


def ledger_cases(root: Path, other: Path) -> list[Case]:
    """Receipts of a fresh ledger (several signatures), genuine and with each part altered."""
    init_service(root, ledger_type="Public")
    init_service(other)
    pem = (root / "service_cert.pem").read_text()
    with open_ledger(root, EngineConfig(signature_tx_count=7, signature_interval_ms=10)) as ledger:
        txids = [ledger.append_entry(f"entry {i} é ✓ <b>", "files") for i in range(30)]
        ledger.wait_committed(txids[-1], timeout=10)
        receipts = [ledger.receipt(t) for t in txids[::6]]
    cases = []
    for r in receipts:
        assert r is not None
        base, claims = r.receipt, r.application_claims
        cases += [Case(f"{r.txid} genuine", base, pem), Case(f"{r.txid} genuine with claims", base, pem, claims)]
        edits: dict[str, Any] = {
            "writeSetDigest": lambda d: d["leafComponents"].update(
                writeSetDigest=_swap(d["leafComponents"]["writeSetDigest"], 9, HEX)
            ),
            "commitEvidence": lambda d: d["leafComponents"].update(
                commitEvidence=_swap(d["leafComponents"]["commitEvidence"], -4, HEX)
            ),
            "claimsDigest": lambda d: d["leafComponents"].update(
                claimsDigest=_swap(d["leafComponents"]["claimsDigest"], 5, HEX)
            ),
            "proof[0]": lambda d: d["proof"][0].update({k: _swap(v, 20, HEX) for k, v in d["proof"][0].items()}),
            "signature": lambda d: d.update(signature=_swap(d["signature"], len(d["signature"]) // 2, B64)),
            "nodeId": lambda d: d.update(nodeId=_swap(d["nodeId"], 3, HEX)),
            "cert body": lambda d: d.update(cert=_mutate_pem(d["cert"])),
        }
        for name, edit in edits.items():
            altered = copy.deepcopy(base)
            edit(altered)
            cases.append(Case(f"{r.txid} {name} altered", altered, pem, claims))
        assert claims is not None
        forged = copy.deepcopy(claims)
        forged[0]["ledgerEntry"]["contents"] += "!"
        cases.append(Case(f"{r.txid} claims contents altered", base, pem, forged))
        cases.append(Case(f"{r.txid} another service", base, (other / "service_cert.pem").read_text(), claims))
    return cases


def _mutate_pem(pem: str) -> str:
    lines = pem.strip().split("\n")
    body = "".join(lines[1:-1])
    i = len(body) // 3
    changed = _swap(body, i, B64)
    assert base64.b64decode(changed) != base64.b64decode(body)
    return "\n".join([lines[0], *[changed[k : k + 64] for k in range(0, len(changed), 64)], lines[-1]]) + "\n"


def notarium_ok(case: Case) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(case.service_pem.encode())
        verify_json_receipt(case.receipt, cert, application_claims=case.claims)
    except VerificationError:
        return False
    return True


def page_verdicts(page: Page, cases: list[Case]) -> list[dict[str, Any]]:
    items = [[c.receipt, c.service_pem, c.claims] for c in cases]
    return page.evaluate(  # type: ignore[no-any-return]
        """async (items) => { const out = [];
        for (const [r, pem, claims] of items) {
          const v = await NotariumVerifier.verify(r, pem, claims);
          out.push({ok: v.verified, failed: v.failed ? v.failed.key : null, detail: v.failed ? v.failed.detail : null});
        } return out; }""",
        items,
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def test_page_agrees_with_the_sdk_and_notarium_on_every_vector(browser: Browser, tmp_path: Path) -> None:
    cases = vector_cases() + ledger_cases(tmp_path / "svc", tmp_path / "other")
    assert len(cases) >= 120
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(standalone.PAGE.as_uri())  # from disk: no server at all
    verdicts = page_verdicts(page, cases)
    assert requests == [standalone.PAGE.as_uri()]  # nothing else was asked for
    default_cert = tmp_path / "unused_cert.pem"
    default_cert.write_text(cases[0].service_pem)
    jobs = [JsonCase(c.receipt, c.claims, c.service_pem) for c in cases]
    sdk = {o: sdk_verify_receipts(o, jobs, default_cert) for o in ("acl1", "acl2")}
    # notarium (so the page) is stricter than the SDK here: it requires nodeId, in canonical lower-case hex
    stricter = {f"vector 1, {name}" for name in [*STRICT_FAILURES, "nodeId absent", "nodeId upper-case"]}
    wrong = []
    for i, case in enumerate(cases):
        mine, js = notarium_ok(case), verdicts[i]["ok"]
        if js != mine:
            wrong.append(f"{case.label}: page {js} ({verdicts[i]}), notarium {mine}")
        for oracle, results in sdk.items():
            if case.label in stricter:  # notarium rejects what the SDK lets through: so does the page
                if js:
                    wrong.append(f"{case.label}: the page accepts what notarium refuses")
            elif results[i].ok != js:
                wrong.append(f"{case.label}: page {js} ({verdicts[i]}), SDK {oracle} {results[i]}")
    assert not wrong, "\n".join(wrong[:40])
    accepted = [c.label for c, v in zip(cases, verdicts, strict=True) if v["ok"]]
    assert len(accepted) == 5 + 2 * 5  # the vectors that verify, and 5 genuine receipts (with and without claims)
    assert all("genuine" in label or label.startswith("vector ") for label in accepted)
    # the failing step is the one that was altered
    by_label = {c.label: v for c, v in zip(cases, verdicts, strict=True)}
    some = next(c.label.split(" ")[0] for c in cases if c.label.endswith("genuine"))
    assert by_label[f"{some} writeSetDigest altered"]["failed"] == "signature"
    assert by_label[f"{some} proof[0] altered"]["failed"] == "signature"
    assert by_label[f"{some} nodeId altered"]["failed"] == "node_cert"
    assert by_label[f"{some} claims contents altered"]["failed"] == "claims"
    assert by_label[f"{some} claimsDigest altered"]["failed"] == "claims"
    assert by_label[f"{some} another service"]["failed"] == "endorsement"
    page.close()


def test_served_unauthenticated_by_notarium_serve_and_used_as_a_person_would(browser: Browser, tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    init_service(directory)
    with running(directory) as server, httpx.Client(verify=False) as plain:  # noqa: S501  (no credential at all)
        r = plain.get(server.url + "/verify")
        assert r.status_code == 200
        assert r.content == standalone.page()
        assert r.headers["Content-Security-Policy"] == standalone.header_policy()
        assert "connect-src 'none'" in r.headers["Content-Security-Policy"]
        assert standalone.embedded_policy(r.text) == standalone.policy(r.text)  # the page's own <meta> is current
        context = browser.new_context(ignore_https_errors=True)
        page = context.new_page()
        dialogs = Dialogs(page)
        requests: list[str] = []
        page.on("request", lambda req: requests.append(req.url))
        page.goto(server.url + "/verify")
        receipt = json.loads((VECTORS / "receipts.json").read_text())["receipts"]["3"]["receipt"]
        pem = json.loads((VECTORS / "receipts.json").read_text())["service_certificates"]["3"]["pem"]
        page.get_by_label("Receipt (JSON").fill(json.dumps({"receipt": receipt}))
        page.get_by_label("Service certificate (PEM)").fill(pem)
        page.get_by_role("button", name="Verify").click()
        expect(page.locator("#verdict")).to_have_attribute("data-verified", "true")
        expect(page.locator('li.step[data-step="endorsement"]')).to_have_attribute("data-status", "ok")
        altered = copy.deepcopy(receipt)
        altered["leafComponents"]["commitEvidence"] = _swap(altered["leafComponents"]["commitEvidence"], -1, HEX)
        page.get_by_label("Receipt (JSON").fill(json.dumps(altered))
        page.get_by_role("button", name="Verify").click()
        expect(page.locator("#verdict")).to_have_attribute("data-failed-step", "signature")
        expect(page.locator("#verdict")).to_contain_text("Failed at: Node signature over the root")
        injected = copy.deepcopy(receipt)
        injected["leafComponents"]["commitEvidence"] = '<img src=x onerror=alert("x")>'
        page.get_by_label("Receipt (JSON").fill(json.dumps(injected))
        page.get_by_role("button", name="Verify").click()
        expect(page.locator("#verdict")).to_have_attribute("data-failed-step", "commit_evidence")
        expect(page.locator("img")).to_have_count(0)
        assert requests == [server.url + "/verify"], requests  # verifying asked the server nothing
        assert not dialogs.seen
        context.close()
