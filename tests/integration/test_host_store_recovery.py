"""Recovering one ledger of a host on PostgreSQL whose identity bundle no longer opens (every host
process lost it: it is sealed under a store key nobody holds) from its log, through one host
process, while another ledger of the host keeps committing appends (two real host processes, a real
PostgreSQL).

Both processes are stopped, lose their copy of ``vault``, and ``vault``'s bundle is replaced by one
sealed under a lost key; restarted, they serve ``other`` and answer 503 "needs recovery" for
``vault``. Through process A the operator runs ``notarium ledgers recover vault``; the member
fetches and submits its share at A (pinning the new identity A's identity document gives); ``vault``
opens under a new identity with its entries intact, its new bundle reaches process B, which serves
it again (reads and a forwarded append). Every append to ``other`` through B meanwhile is 200 and
commits.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from integration.host_store_kit import (
    GROUP,
    SUBSCRIPTION,
    StoreHost,
    admin_of,
    append,
    committed_append,
    create,
    status,
    twin_dir,
    until,
)
from integration.server import clean_env
from notarium.host.store import StoreRegistry
from notarium.host.vault import pack

ARGS = ("--lease-ttl", "1", "--sync-interval", "0.5")


def _cli(host: StoreHost, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**clean_env(), "NOTARIUM_HOST_DIR": str(host.directory)}
    return subprocess.run(
        [sys.executable, "-m", "notarium", *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def _ca(host: StoreHost) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(host.ca))


def _read(host: StoreHost, admin: Path, txid: str) -> tuple[int, str]:
    with host.client(admin) as http:
        r = http.get(f"{host.url}/ledgers/vault/app/transactions/{txid}?api-version=2024-12-09-preview")
        return r.status_code, r.json().get("entry", {}).get("contents", "") if r.status_code == 200 else r.text


def test_a_store_ledger_is_recovered_from_its_log_while_another_commits(tmp_path: Path, pg_dsn: str) -> None:
    a = StoreHost(tmp_path / "a", pg_dsn, ARGS).start()
    (tmp_path / "b").mkdir()
    twin_dir(tmp_path / "a", tmp_path / "b")
    b = StoreHost(tmp_path / "b", pg_dsn, ARGS).start()
    admin, other_admin = admin_of(tmp_path, "vault"), admin_of(tmp_path, "other")
    stop = threading.Event()
    answers: list[tuple[int, str | None]] = []
    worker: threading.Thread | None = None
    try:
        create(a, "vault", admin)
        create(a, "other", other_admin)
        kept = [committed_append(a, "vault", admin, f"kept {n}") for n in range(3)]
        assert all(kept), kept
        member = tmp_path / "member"  # the member keeps its keys
        member.mkdir()
        for name in ("member0_cert.pem", "member0_enc_privk.pem"):
            shutil.copy(a.directory / "ledgers" / "vault" / name, member / name)

        # the disaster: every process loses vault's files, and its bundle is sealed under a lost key
        registry = StoreRegistry(pg_dsn, "test")
        try:
            record = registry.get("vault")
            assert record is not None
            assert record.schema is not None
            a.stop()
            b.stop()
            registry.put_bundle(record.schema, pack(a.directory / "ledgers" / "vault", record.schema, os.urandom(32)))
        finally:
            registry.close()
        for host in (a, b):
            shutil.rmtree(host.directory / "ledgers" / "vault")
        a.start()
        b.start()

        def needs_recovery(host: StoreHost) -> bool:
            with host.client(admin) as http:
                r = http.get(f"{host.url}/ledgers/vault/app/transactions?api-version=2024-12-09-preview")
                return r.status_code == 503 and "recovery" in r.json()["error"]["message"]

        until("A says vault needs recovery", lambda: needs_recovery(a))
        until("B says vault needs recovery", lambda: needs_recovery(b))
        until("other commits through B", lambda: committed_append(b, "other", other_admin, "warm-up"))

        def load() -> None:  # appends to the other ledger, through B, throughout the recovery
            n = 0
            while not stop.is_set():
                try:
                    r = append(b, "other", other_admin, f"meanwhile {n}")
                    answers.append((r.status_code, r.headers.get("x-ms-ccf-transaction-id")))
                except httpx.HTTPError as exc:
                    answers.append((0, str(exc)))
                n += 1

        worker = threading.Thread(target=load)
        worker.start()
        until("the other ledger takes appends", lambda: len(answers) >= 5)

        put = _cli(a, "ledgers", "recover", "vault", "--subscription", SUBSCRIPTION, "-g", GROUP, "--json")
        assert put.returncode == 0, put.stderr + a.log()[-3000:]
        assert json.loads(put.stdout)["status"] == "WaitingForRecoveryShares"
        identity = httpx.get(f"{a.url}/ledgerIdentity/vault", verify=_ca(a), timeout=10).json()
        pinned = tmp_path / "vault_identity.pem"  # the new identity, which the member pins
        pinned.write_text(identity["ledgerTlsCertificate"])
        new_cert = identity["ledgerTlsCertificate"].split("-----END CERTIFICATE-----")[0]
        where = ("--endpoint", f"{a.url}/ledgers/vault", "--service-cert", str(pinned))
        cert = ("--member-cert", str(member / "member0_cert.pem"))
        share = tmp_path / "member0.share"
        enc_key = ("--member-enc-key", str(member / "member0_enc_privk.pem"))
        got = _cli(a, "recovery", "share", str(share), *cert, *enc_key, *where)
        assert got.returncode == 0, got.stderr
        got = _cli(a, "recovery", "submit", str(share), *cert, *where)
        assert got.returncode == 0, got.stderr

        for host in (a, b):  # served again by both processes, under the new identity, entries intact
            until(
                f"vault served again by {host.directory.name}",
                lambda host=host: _read(host, admin, str(kept[0])) == (200, "kept 0"),
                diagnose=lambda host=host: host.log()[-3000:],
            )
            ident = httpx.get(f"{host.url}/ledgerIdentity/vault", verify=_ca(host), timeout=10).json()
            assert ident["ledgerTlsCertificate"].startswith(new_cert)
            assert [_read(host, admin, str(t)) for t in kept] == [(200, f"kept {n}") for n in range(3)]
        after = committed_append(b, "vault", admin, "after the recovery")  # forwarded to its primary
        assert after is not None
        assert status(a, "vault", admin, after) == "Committed"
        count = len(answers)
        until("the other ledger still takes appends", lambda: len(answers) >= count + 5)
    finally:
        stop.set()
        if worker is not None:
            worker.join()
        for host in (a, b):
            host.stop()
    assert answers
    assert {code for code, _ in answers} == {200}, [x for x in answers if x[0] != 200][:5]
    assert share.read_text().strip() not in a.log() + b.log()
