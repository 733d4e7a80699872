"""Recovering one hosted ledger whose ledger secrets are lost, through the host, while another ledger
of the same host keeps taking appends (a real ``notarium host`` process, real engine processes).

The ledger ``vault`` loses its sealed secrets and its engine is killed: the host does not restart it
in a loop but answers 503 saying it needs recovery (its identity document still answers). The
operator puts it into recovery (``notarium ledgers recover vault``); its member fetches, decrypts and
submits its share with ``notarium recovery share|submit`` at the ledger's URI; the ledger opens under
a new service identity with its entries intact. Throughout, every append to ``other`` succeeds and
commits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from integration.host_kit import API, GROUP, SUBSCRIPTION, HostKit, append, host_kit, wait_committed
from integration.server import clean_env
from notarium.ledger.layout import Layout


def _cli(kit: HostKit, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**clean_env(), "NOTARIUM_HOST_DIR": str(kit.dir)}
    return subprocess.run(
        [sys.executable, "-m", "notarium", *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def _engine_pid(directory: Path) -> int:
    """The engine process the host started for ``directory`` (its command line names it)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"notarium.server.engine" in argv and str(directory).encode() in argv:
            return int(entry.name)
    raise AssertionError(f"no engine process serves {directory}")


def _until(check: object, what: str) -> None:
    for _ in range(400):
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


def test_a_ledger_is_recovered_through_the_host_while_the_others_serve(tmp_path: Path) -> None:
    with host_kit(tmp_path) as kit:
        assert kit.create("vault").status_code == 201
        assert kit.create("other").status_code == 201
        vault = kit.ledger("vault")
        kept = [append(vault, f"kept {n}").headers["x-ms-ccf-transaction-id"] for n in range(3)]
        wait_committed(vault, kept[-1])
        old_cert = kit.identity_bundle("vault").read_text().split("-----END CERTIFICATE-----")[0]

        # the other ledger takes appends, from before the loss until after the recovery
        stop = threading.Event()
        answers: list[tuple[int, str]] = []
        loader = kit.ledger("other", fresh=True)

        def load() -> None:
            with loader:
                n = 0
                while not stop.is_set():
                    r = append(loader, f"meanwhile {n}")
                    answers.append((r.status_code, r.headers.get("x-ms-ccf-transaction-id", "")))
                    n += 1

        worker = threading.Thread(target=load)
        worker.start()
        try:
            _until(lambda: len(answers) >= 5, "the other ledger took appends")

            # the secrets are lost, and the engine is gone: no restart loop, a 503 saying why
            directory = kit.dir / "ledgers" / "vault"
            Layout(directory).sealed_ledger_secret.unlink()
            os.kill(_engine_pid(directory), signal.SIGKILL)

            def needs_recovery() -> bool:
                r = vault.get("/app/transactions", params={"collectionId": "c"})
                return r.status_code == 503 and "recovery" in r.json()["error"]["message"]

            _until(needs_recovery, "the ledger answers that it needs recovery")
            assert kit.identity_bundle("vault").read_text().startswith(old_cert)  # members still pin it

            # the operator puts it into recovery
            put = _cli(kit, "ledgers", "recover", "vault", "--subscription", SUBSCRIPTION, "-g", GROUP, "--json")
            assert put.returncode == 0, put.stderr
            status = json.loads(put.stdout)
            assert status["status"] == "WaitingForRecoveryShares"
            assert (status["threshold"], status["submitted"]) == (1, 0)
            refused = vault.get("/app/transactions", params={"collectionId": "c"})
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "ServiceUnavailable"

            # its member, through the host, at the ledger's URI
            bundle = kit.identity_bundle("vault")
            where = ("--endpoint", f"{kit.url}/ledgers/vault", "--service-cert", str(bundle))
            member = ("--member-cert", str(directory / "member0_cert.pem"))
            share = tmp_path / "member0.share"
            fetched = _cli(
                kit,
                "recovery",
                "share",
                str(share),
                *member,
                "--member-enc-key",
                str(directory / "member0_enc_privk.pem"),
                *where,
            )
            assert fetched.returncode == 0, fetched.stderr
            assert share.read_text().strip() not in fetched.stdout + fetched.stderr
            submitted = _cli(kit, "recovery", "submit", str(share), *member, *where)
            assert submitted.returncode == 0, submitted.stderr
            assert "1 of 1" in submitted.stdout

            # it opens under a new identity, its entries intact
            def serving() -> bool:
                r = kit.mgmt.get(f"{kit.url}/ledgerIdentity/vault")
                return r.status_code == 200 and not r.json()["ledgerTlsCertificate"].startswith(old_cert)

            _until(serving, "the recovered ledger has a new identity")
            recovered = kit.ledger("vault", fresh=True)
            _until(lambda: recovered.get("/readyz").status_code == 200, "the recovered ledger is ready")
            for n, txid in enumerate(kept):
                r = recovered.get(f"/app/transactions/{txid}", params={"collectionId": "c"})
                assert r.status_code == 200, r.text
                assert r.json()["entry"]["contents"] == f"kept {n}"
            fresh = append(recovered, "after the recovery")
            assert fresh.status_code == 200
            wait_committed(recovered, fresh.headers["x-ms-ccf-transaction-id"])
            recovered.close()
            after = len(answers)
            _until(lambda: len(answers) >= after + 5, "the other ledger still takes appends")
        finally:
            stop.set()
            worker.join()

        # the other ledger answered every append, and each one committed
        assert answers
        assert {code for code, _ in answers} == {200}, answers[:5]
        wait_committed(kit.ledger("other"), answers[-1][1])

        # a ledger with its secrets has nothing to recover; an unknown one is not found
        healthy = _cli(kit, "ledgers", "recover", "other", "--subscription", SUBSCRIPTION, "-g", GROUP)
        assert healthy.returncode == 1
        assert "Conflict" in healthy.stderr
        missing = kit.mgmt.post(kit.arm("nothere") + "/recover", params=API)
        assert missing.status_code == 404
        events = [json.loads(line)["event"] for line in (kit.dir / "events.jsonl").read_text().splitlines()]
        assert events[-2:] == ["recover", "recovered"]
