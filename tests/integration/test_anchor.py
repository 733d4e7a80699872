"""`notarium anchor` and `notarium verify-anchors` against real servers (two ledgers: the watched one
and the anchoring one), driven through the CLI as a user would.

- An operator who keeps every key restores an old copy of the service directory: first the
  ledger is rolled back, then it writes a different history. `verify-anchors` from a fresh client
  (no state of its own) exits 3 both times, with evidence that verifies on its own: the anchored
  root (signed by the watched ledger's key) and its receipt in the anchoring ledger.
- Honest growth across restarts and a rekey never alarms, with an `anchor` process running all
  along (it reports the watched ledger's restarts and carries on); entries in the anchors'
  collection that are not anchors of this ledger are ignored, and reported, not counted.
- The anchoring ledger stopped: the running `anchor` reports it and retries; once it is back, the
  next anchor holds a root at least as new as the ones it could not anchor. `--once` and
  `verify-anchors` exit 4 meanwhile, never 0.
- The sans-I/O check fed a watched ledger's lies (a tampered proof, another root for the
  anchored TxId, a refusal) with real signed roots.

The anchoring side is only used through ACL's data-plane API (append, list a collection, the
newest entry of a collection, receipts, collections), so an Azure Confidential Ledger serves as
well; the receipt of an anchor is also checked with the Azure SDK's `verify_receipt`.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from integration.oracle import JsonCase, sdk_verify_receipts
from integration.server import Server, clean_env, running
from notarium.client import Client, ForkError
from notarium.client.anchor import Anchor, anchor_collection
from notarium.client.anchors import op_extends
from notarium.client.operations import Answer, Call, Pause
from notarium.errors import VerificationError
from notarium.ledger import init_service
from notarium.verify import verify_json_receipt
from notarium.verify.consistency import SignedRoot, verify_signed_root

EXIT_FAILED, EXIT_VERIFY, EXIT_UNREACHABLE = 1, 3, 4
TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_profile(path: Path, server: Server) -> Path:
    """A profile with no state file: every command run with it is a fresh client."""
    directory = server.directory
    path.write_text(
        json.dumps(
            {
                "endpoint": server.url,
                "service_cert": str(directory / "service_cert.pem"),
                "cert": str(directory / "user0_combined.pem"),
            }
        )
    )
    return path


def cli(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in clean_env().items() if not k.startswith("NOTARIUM_")}
    env["HOME"] = str(tmp)
    return subprocess.run(
        [sys.executable, "-m", "notarium", *args], check=False, capture_output=True, text=True, env=env, timeout=120
    )


def ok(*args: str, tmp: Path) -> Any:
    done = cli(*args, "--json", tmp=tmp)
    assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


@dataclass
class Ledgers:
    tmp: Path
    watched_dir: Path
    anchoring_dir: Path
    watched_port: int = field(default_factory=free_port)
    anchoring_port: int = field(default_factory=free_port)

    @property
    def wp(self) -> str:
        return str(self.tmp / "watched.json")

    @property
    def ap(self) -> str:
        return str(self.tmp / "anchoring.json")

    @contextmanager
    def watched(self) -> Iterator[Server]:
        with running(self.watched_dir, port=self.watched_port) as srv:
            write_profile(Path(self.wp), srv)
            yield srv

    @contextmanager
    def anchoring(self) -> Iterator[Server]:
        with running(self.anchoring_dir, port=self.anchoring_port) as srv:
            write_profile(Path(self.ap), srv)
            yield srv

    def append(self, *texts: str) -> None:
        for text in texts:
            ok("append", text, "--profile", self.wp, tmp=self.tmp)

    def anchor_once(self) -> dict[str, Any]:
        return ok("anchor", "--to", self.ap, "--once", "--profile", self.wp, tmp=self.tmp)  # type: ignore[no-any-return]

    def verify(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return cli("verify-anchors", "--anchors", self.ap, "--profile", self.wp, *extra, tmp=self.tmp)

    def signed_root(self) -> SignedRoot:
        with Client(f"https://127.0.0.1:{self.watched_port}", self.watched_dir / "service_cert.pem",
                    cert=self.watched_dir / "user0_combined.pem") as c:  # fmt: skip
            return c.sync()


@pytest.fixture
def ledgers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ledgers:
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    watched, anchoring = tmp_path / "watched", tmp_path / "anchoring"
    init_service(watched)
    init_service(anchoring)
    return Ledgers(tmp_path, watched, anchoring)


def _service_cert(directory: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((directory / "service_cert.pem").read_bytes())


def _check_evidence(failed: dict[str, Any], anchored: SignedRoot, ledgers: Ledgers) -> None:
    """The evidence verifies on its own: the anchored root with the watched ledger's certificate,
    the anchor's receipt (proving exactly that document) with the anchoring ledger's."""
    evidence = failed["evidence"]
    assert SignedRoot.from_json(evidence["trusted"]) == anchored
    verify_signed_root(anchored, _service_cert(ledgers.watched_dir))
    anchor = evidence["anchor"]
    assert SignedRoot.from_json(anchor["document"]["signedRoot"]) == anchored
    receipt = anchor["receipt"]
    claims = receipt["applicationClaims"]
    verify_json_receipt(receipt["receipt"], _service_cert(ledgers.anchoring_dir), application_claims=claims)
    assert Anchor.parse(claims[0]["ledgerEntry"]["contents"]).root == anchored


def test_a_restored_old_copy_is_caught_by_a_fresh_client(ledgers: Ledgers) -> None:
    backup = ledgers.tmp / "backup"
    with ledgers.anchoring():
        with ledgers.watched():
            ledgers.append("invoice 1", "invoice 2")
        shutil.copytree(ledgers.watched_dir, backup)  # the operator keeps a copy, keys and all
        with ledgers.watched():
            ledgers.append("invoice 3", "invoice 4", "invoice 5")
            first = ledgers.anchor_once()
            ledgers.append("invoice 6")
            second = ledgers.anchor_once()
            assert ok("verify-anchors", "--anchors", ledgers.ap, "--profile", ledgers.wp, tmp=ledgers.tmp)["held"] == 2
        anchored = SignedRoot.from_json(second["signedRoot"])
        assert anchored.tree_size > SignedRoot.from_json(first["signedRoot"]).tree_size

        shutil.rmtree(ledgers.watched_dir)
        shutil.copytree(backup, ledgers.watched_dir)  # ... and serves it instead
        with ledgers.watched():
            rolled = ledgers.verify("--json")
            assert rolled.returncode == EXIT_VERIFY, rolled.stdout + rolled.stderr
            report = json.loads(rolled.stdout)
            assert report["ok"] is False
            assert report["exitCode"] == EXIT_VERIFY
            assert report["held"] == 0
            assert len(report["failed"]) == 2
            _check_evidence(report["failed"][-1], anchored, ledgers)
            assert "404" in report["failed"][-1]["message"]  # the ledger does not have that transaction

            # the restored copy now writes another history, longer than the anchored one
            ledgers.append(*(f"forged {i}" for i in range(8)))
            assert ledgers.signed_root().tree_size > anchored.tree_size
            forked = ledgers.verify("--json", "--evidence", str(ledgers.tmp / "evidence.json"))
            assert forked.returncode == EXIT_VERIFY, forked.stdout + forked.stderr
            report = json.loads(forked.stdout)
            assert {f["check"] for f in report["failed"]} <= {"fork", "rollback", "consistency"}
            assert len(report["failed"]) == 2
            _check_evidence(report["failed"][-1], anchored, ledgers)
            presented = report["failed"][-1]["evidence"]["presented"]
            if presented is not None:  # another root for the anchored TxId: signed by the same key
                other = SignedRoot.from_json(presented)
                verify_signed_root(other, _service_cert(ledgers.watched_dir))
                assert other.root != anchored.root
            saved = json.loads((ledgers.tmp / "evidence.json").read_text())
            assert saved["failed"] == report["failed"]

            text = ledgers.verify()
            assert text.returncode == EXIT_VERIFY
            assert f"anchored root: {anchored.txid}, tree size {anchored.tree_size}, root {anchored.root.hex()}" in (
                text.stderr
            )
            assert "rolled back or forked" in text.stderr

            # the anchorer itself refuses to go on from the anchored root (no state of its own)
            refused = cli("anchor", "--to", ledgers.ap, "--once", "--profile", ledgers.wp, "--json", tmp=ledgers.tmp)
            assert refused.returncode == EXIT_VERIFY, refused.stdout + refused.stderr
            assert SignedRoot.from_json(json.loads(refused.stdout)["evidence"]["trusted"]) == anchored


class Pumped:
    """A running `notarium anchor`, its output lines collected as they come."""

    def __init__(self, *args: str, tmp: Path) -> None:
        env = {k: v for k, v in clean_env().items() if not k.startswith("NOTARIUM_")}
        env["HOME"] = str(tmp)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "notarium", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self.pumps = [
            threading.Thread(target=self._pump, args=(stream, lines), daemon=True)
            for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for pump in self.pumps:
            pump.start()

    @staticmethod
    def _pump(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def wait_for(self, lines: list[str], predicate: Any, what: str) -> str:
        deadline = time.monotonic() + TIMEOUT
        seen = 0
        while time.monotonic() < deadline:
            for line in lines[seen:]:
                seen += 1
                if predicate(line):
                    return line
            assert self.proc.poll() is None, f"anchor exited {self.proc.returncode}: {self.tail()}"
            time.sleep(0.05)
        raise AssertionError(f"no {what}: {self.tail()}")

    def tail(self) -> str:
        return "".join(self.out[-3:])[-2000:] + "\n" + "".join(self.err[-5:])[-3000:]

    def anchored(self) -> list[SignedRoot]:
        return [SignedRoot.from_json(json.loads(x)["signedRoot"]) for x in self.out if '"anchored": true' in x]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        for pump in self.pumps:
            pump.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return code


def _anchored_at_least(root: SignedRoot) -> Any:
    def holds(line: str) -> bool:
        body = json.loads(line)
        return bool(body.get("anchored")) and body["signedRoot"]["treeSize"] >= root.tree_size

    return holds


def _rekey(ledgers: Ledgers, srv: Server) -> None:
    conn = ("--dir", str(ledgers.watched_dir), "--endpoint", srv.url)
    sealed = ledgers.watched_dir / "secrets" / "ledger_secret.sealed"
    before = sealed.read_bytes()
    proposal = ok("gov", "propose", "--action", "trigger_ledger_rekey", "--args", "{}", *conn, tmp=ledgers.tmp)
    voted = ok("gov", "vote", proposal["proposalId"], "--accept", *conn, tmp=ledgers.tmp)
    assert voted["proposalState"] == "Accepted", voted
    deadline = time.monotonic() + TIMEOUT
    while sealed.read_bytes() == before:
        assert time.monotonic() < deadline, "the ledger was not rekeyed"
        time.sleep(0.05)


def test_honest_growth_across_restarts_and_a_rekey_never_alarms(ledgers: Ledgers) -> None:
    with ledgers.anchoring() as anchoring_srv:
        with ledgers.watched():
            ledgers.append("first")
            daemon = Pumped("anchor", "--to", ledgers.ap, "--every", "0.2", "--json", "--profile", ledgers.wp,
                            tmp=ledgers.tmp)  # fmt: skip
            try:
                daemon.wait_for(daemon.out, lambda x: '"anchored": true' in x, "first anchor")
            except BaseException:
                daemon.stop()
                raise
        try:
            daemon.wait_for(
                daemon.err, lambda x: "the watched ledger" in x and "retrying" in x, "report of the restart"
            )
            for round_ in range(2):
                with ledgers.watched() as srv:
                    ledgers.append(f"after restart {round_}")
                    if round_ == 1:
                        _rekey(ledgers, srv)
                        ledgers.append("after the rekey")
                    newest = ledgers.signed_root()
                    daemon.wait_for(daemon.out, _anchored_at_least(newest), "an anchor of the newest root")
                    once = ledgers.anchor_once()  # the daemon anchored it already
                    assert once["anchored"] is False, once
                    report = ok("verify-anchors", "--anchors", ledgers.ap, "--profile", ledgers.wp, tmp=ledgers.tmp)
                    assert report["failed"] == []
                    assert report["held"] == len(daemon.anchored())
        finally:
            assert daemon.stop() == 0, daemon.err
        roots = daemon.anchored()
        assert len({r.txid.view for r in roots}) >= 3  # anchors from three starts of the watched ledger
        assert [r.tree_size for r in roots] == sorted(r.tree_size for r in roots)

        # entries in the anchors' collection that are not anchors of this ledger prove nothing
        cert = _service_cert(ledgers.watched_dir)
        with Client(anchoring_srv.url, ledgers.anchoring_dir / "service_cert.pem",
                    cert=ledgers.anchoring_dir / "user0_combined.pem") as anchoring:  # fmt: skip
            collection = anchor_collection(cert)
            anchoring.append("not an anchor", collection=collection)
            forged = Anchor.parse(_any_anchor(anchoring, collection))
            bad_root = SignedRoot(forged.root.txid, bytes(32), forged.root.signature)
            tampered = Anchor(bad_root, forged.service_key_id, forged.service_cert_pem, "x", forged.observed_at)
            anchoring.append(tampered.contents(), collection=collection)
            sdk_case = _receipt_case(anchoring, collection, ledgers.anchoring_dir)
        with ledgers.watched():
            report = ok("verify-anchors", "--anchors", ledgers.ap, "--profile", ledgers.wp, tmp=ledgers.tmp)
        assert report["held"] == len(roots)
        assert sorted(f["check"] for f in report["rejected"]) == ["anchor-format", "anchor-signature"]
        assert report["failed"] == []
    # the anchoring side is ACL's data plane: Microsoft's SDK verifies an anchor's receipt
    for oracle in ("acl1", "acl2"):
        verdicts = sdk_verify_receipts(oracle, [sdk_case], ledgers.anchoring_dir / "service_cert.pem")
        assert [v.ok for v in verdicts] == [True], verdicts


def _any_anchor(anchoring: Client, collection: str) -> str:
    return next(e.contents for e in anchoring.entries(collection=collection) if e.contents.startswith("{"))


def _receipt_case(anchoring: Client, collection: str, directory: Path) -> JsonCase:
    entry = next(e for e in anchoring.entries(collection=collection) if e.contents.startswith("{"))
    receipt = anchoring.receipt(entry.txid)
    return JsonCase(receipt.receipt, receipt.application_claims)


def test_an_unreachable_anchoring_ledger_is_reported_and_retried(ledgers: Ledgers) -> None:
    with ledgers.watched():
        ledgers.append("one")
        with ledgers.anchoring():
            daemon = Pumped("anchor", "--to", ledgers.ap, "--every", "0.2", "--json", "--profile", ledgers.wp,
                            tmp=ledgers.tmp)  # fmt: skip
            try:
                daemon.wait_for(daemon.out, lambda x: '"anchored": true' in x, "first anchor")
            except BaseException:
                daemon.stop()
                raise
        try:
            ledgers.append("two", "three")  # roots the daemon cannot anchor now
            missed = ledgers.signed_root()
            daemon.wait_for(
                daemon.err, lambda x: "the anchoring ledger" in x and "retrying in" in x, "report of the outage"
            )
            once = cli("anchor", "--to", ledgers.ap, "--once", "--profile", ledgers.wp, tmp=ledgers.tmp)
            assert once.returncode == EXIT_UNREACHABLE, once.stdout + once.stderr
            assert "the anchoring ledger" in once.stderr
            down = ledgers.verify("--json")
            assert down.returncode == EXIT_UNREACHABLE, down.stdout + down.stderr
            assert json.loads(down.stdout)["ok"] is False
            reports = sum("the anchoring ledger" in x for x in daemon.err)
            with ledgers.anchoring():
                daemon.wait_for(daemon.out, _anchored_at_least(missed), "an anchor holding the missed roots")
                report = ok("verify-anchors", "--anchors", ledgers.ap, "--profile", ledgers.wp, tmp=ledgers.tmp)
                assert report["held"] == len(daemon.anchored()) >= 2
            assert reports >= 1
        finally:
            assert daemon.stop() == 0, daemon.err
    assert all("retrying in" in x for x in daemon.err if "the anchoring ledger" in x)


def test_no_anchor_is_no_success(ledgers: Ledgers) -> None:
    with ledgers.anchoring(), ledgers.watched():
        done = ledgers.verify()
        assert done.returncode == EXIT_FAILED
        assert "nothing was checked" in done.stderr


def test_the_check_refuses_a_lying_watched_ledger(ledgers: Ledgers) -> None:
    """op_extends (sans-I/O) fed real signed roots and the answers a lying ledger would give."""
    with ledgers.watched() as srv, Client(srv.url, srv.service_cert, cert=srv.admin_pem) as c:
        anchored = c.sync()
        c.append("more")
        c.append("and more")
        r = c.http.get(
            "/app/consistency", params={"fromTransactionId": str(anchored.txid), "api-version": "2022-05-13"}
        )
        assert r.status_code == 200, r.text
        good = r.json()
        cert = c.service_cert
    assert good["proof"]

    def run(*answers: Answer) -> Any:
        op = op_extends(anchored, cert, (0.01,))
        step = next(op)
        try:
            for answer in answers:
                assert isinstance(step, Call | Pause)
                step = op.send(answer)
                while isinstance(step, Pause):
                    step = op.send(None)
        except StopIteration as stop:
            return stop.value
        raise AssertionError("the check asked for more")

    def body(**changes: Any) -> Answer:
        return Answer(200, {}, json.dumps({**good, **changes}).encode())

    newest, _ = run(body())
    assert newest == SignedRoot.from_json(good["to"])
    tampered = list(good["proof"])
    tampered[0] = ("00" if tampered[0][:2] != "00" else "11") + tampered[0][2:]
    with pytest.raises(ForkError) as lie:
        run(body(proof=tampered))
    assert lie.value.kind == "consistency"
    with pytest.raises(VerificationError) as unsigned:  # another root, not signed: refused, and no evidence
        run(body(**{"from": {**good["from"], "root": "ab" * 32}}))
    assert not isinstance(unsigned.value, ForkError)
    assert unsigned.value.check == "signed-root"
    refused = Answer(404, {}, b'{"error": {"code": "InvalidTransactionId", "message": "no"}}')
    with pytest.raises(ForkError) as rolled:
        run(refused, refused)  # asked again once after a pause, then final
    assert rolled.value.kind == "rollback"
    with pytest.raises(ForkError) as not_signature:
        run(Answer(400, {}, b'{"error": {"code": "InvalidQueryParameterValue", "message": "no"}}'))
    assert not_signature.value.kind == "fork"


def test_an_anchor_is_parsed_strictly(ledgers: Ledgers) -> None:
    with ledgers.watched() as srv, Client(srv.url, srv.service_cert, cert=srv.admin_pem) as c:
        root = c.sync()
        cert = c.service_cert
    from notarium.client.anchor import new_anchor

    anchor = new_anchor(root, cert, "https://example")
    assert Anchor.parse(anchor.contents()) == anchor
    anchor.verify(cert)
    other = tmp_cert(ledgers.tmp)
    with pytest.raises(VerificationError) as wrong:
        anchor.verify(other)
    assert wrong.value.check == "anchor-signature"
    body = anchor.to_json()
    for broken in (
        "[]",
        "{",
        json.dumps({**body, "format": "notarium-anchor/2"}),
        json.dumps({**body, "extra": 1}),
        json.dumps({**body, "ledger": {**body["ledger"], "endpoint": 7}}),
        json.dumps({**body, "signedRoot": {**body["signedRoot"], "treeSize": 1}}),
        "x" * 9000,
    ):
        with pytest.raises(VerificationError) as bad:
            Anchor.parse(broken)
        assert bad.value.check == "anchor-format"
    assert len(anchor.contents()) < 4096  # fits ACL's entry limit with room to spare


def tmp_cert(tmp: Path) -> x509.Certificate:
    other = tmp / "other"
    init_service(other)
    return _service_cert(other)
