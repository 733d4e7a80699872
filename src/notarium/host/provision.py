"""Creating a ledger's service directory on a host, with the first users ARM asked for.

A hosted ledger is an ordinary service directory (:func:`notarium.ledger.init_service`), so every
tool works on it (``notarium audit``, ``reindex``, ``export``). ``init`` makes a first
Administrator, ``user0``, whose key it writes into the directory; a hosted ledger must not have a
user whose key the host operator holds, so provisioning replaces ``user0`` by the principals of
the ARM request in the ledger's first write after genesis, then deletes ``user0``'s key files.
The consortium member ``member0`` stays with the host operator: as with ACL, where the service
operator is the consortium, it governs the service and holds the recovery share (docs/design/host.md).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from notarium.auth.identity import normalise_user_id
from notarium.errors import ServiceError
from notarium.host.names import AadPrincipal, CertPrincipal, load_cert
from notarium.ledger import EngineConfig, init_service, open_ledger
from notarium.ledger.layout import Layout
from notarium.types import TxStatus
from notarium.verify import tables
from notarium.verify.keys import cert_fingerprint

COMMIT_TIMEOUT_S = 60.0


def _user(user_id: str, role: str) -> bytes:
    return json.dumps({"assignedRoles": [role], "userId": user_id}, separators=(",", ":")).encode()


def first_users(certs: list[CertPrincipal], aad: list[AadPrincipal]) -> dict[bytes, bytes | None]:
    """The rows of ``public:notarium.users`` for the ARM principals (keyed as the data plane looks
    users up: the certificate's SHA-256; an object id as an unbound token user, which belongs to the
    first issuer an Administrator trusts: notarium.auth.identity)."""
    rows: dict[bytes, bytes | None] = {}
    for c in certs:
        der = load_cert(c.cert_pem).public_bytes(Encoding.DER)
        rows[hashlib.sha256(der).hexdigest().encode()] = _user(c.user_id, c.role)
    for a in aad:
        rows[normalise_user_id(a.principal_id).encode()] = _user(a.principal_id, a.role)
    return rows


def create_ledger_directory(
    directory: Path,
    name: str,
    ledger_type: str,
    certs: list[CertPrincipal],
    aad: list[AadPrincipal],
    hosts: tuple[str, ...] = (),
) -> None:
    """A new service directory for ledger ``name`` whose users are exactly the ARM principals.

    Blocking (key generation, fsyncs): call it in a worker thread. ``directory`` must not exist.
    """
    rows = first_users(certs, aad)
    if not any(b'"Administrator"' in (v or b"") for v in rows.values()):
        raise ValueError("a ledger needs at least one Administrator among its security principals")
    init_service(directory, ledger_id=name, ledger_type=ledger_type, hosts=hosts)
    layout = Layout(directory)
    user0 = cert_fingerprint(load_cert(layout.user_file(0, "cert").read_text()))
    with open_ledger(directory, EngineConfig()) as ledger:
        changes: dict[bytes, bytes | None] = {user0.encode(): None, **rows}
        txid = ledger.append(
            {
                tables.USERS: changes,
                tables.USERS_CERTS: {user0.encode(): None},
                tables.USERS_INFO: {user0.encode(): None},
            }
        )
        if ledger.wait_committed(txid, timeout=COMMIT_TIMEOUT_S) != TxStatus.COMMITTED:
            raise ServiceError(f"the first users of ledger {name} did not commit")
    for what in ("privk", "combined", "cert"):
        layout.user_file(0, what).unlink(missing_ok=True)


def remove_ledger_directory(directory: Path) -> None:
    """Remove a ledger's files for good (after its retention)."""
    if directory.exists():
        shutil.rmtree(directory)
