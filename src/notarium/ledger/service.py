"""Creating and opening a service directory (``notarium init``)."""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from notarium.durable import fsync_dir, replace
from notarium.errors import ServiceError
from notarium.ledger import identity as ids
from notarium.ledger.config import EngineConfig, ReplicaLog, SecretCourier
from notarium.ledger.engine import Ledger
from notarium.ledger.identity_chain import load_identity_chain
from notarium.ledger.layout import Layout, ServiceConfig
from notarium.recovery.chain import LedgerSecrets
from notarium.recovery.sealing import VirtualFileSealer, unseal_secrets
from notarium.recovery.shares import issue_shares
from notarium.types import TxStatus
from notarium.verify import tables
from notarium.verify.entry import Tables
from notarium.verify.keys import acl_user_id, cert_fingerprint, key_id

LEDGER_SECRET_SIZE = 32
# Declarative, stored in the ledger, read by members and auditors (governance arrives with issue 6).
DEFAULT_CONSTITUTION = json.dumps(
    {
        "format": "notarium-constitution/1",
        "default": {"approval": "majority-of-active-members"},
        "actions": {},
        "veto": False,
    },
    indent=2,
    sort_keys=True,
)
_LEDGER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{1,62}[A-Za-z0-9]$")


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def init_service(
    directory: str | os.PathLike[str],
    *,
    ledger_id: str | None = None,
    ledger_type: str = "Private",
    hosts: tuple[str, ...] = (),
    now: datetime.datetime | None = None,
    service_cert_days: int = ids.SERVICE_CERT_DAYS,
    node_cert_days: int = ids.NODE_CERT_DAYS,
    client_cert_days: int = ids.USER_CERT_DAYS,
) -> ServiceConfig:
    """Create a new service in ``directory`` (which must not exist, or be empty).

    Everything is built in a sibling temporary directory and renamed into place at the end, so
    an interrupted ``init`` leaves no half-made service behind.
    """
    directory = Path(directory).absolute()
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ServiceError(f"{directory} already exists and is not empty; refusing to touch it")
    if ledger_id is None:
        derived = re.sub(r"[^A-Za-z0-9-]", "-", directory.name).strip("-")
        ledger_id = derived if _LEDGER_ID.match(derived) else "notarium-ledger"
    if not _LEDGER_ID.match(ledger_id):
        raise ValueError("ledger id: 3 to 64 letters, digits or '-', starting and ending with a letter or digit")
    ledger_type = ledger_type.capitalize()
    if ledger_type not in ("Private", "Public"):
        raise ValueError("ledger type must be 'private' or 'public'")
    now = now or datetime.datetime.now(datetime.UTC)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.init-", dir=directory.parent))
    try:
        config = _populate(
            Layout(staging), ledger_id, ledger_type, hosts, now, service_cert_days, node_cert_days, client_cert_days
        )
        os.rename(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(directory.parent)
    return config


def _populate(
    layout: Layout,
    ledger_id: str,
    ledger_type: str,
    hosts: tuple[str, ...],
    now: datetime.datetime,
    service_days: int,
    node_days: int,
    client_days: int,
) -> ServiceConfig:
    for sub in ("secrets", "node", "ledger", "index"):
        (layout.root / sub).mkdir(mode=0o700 if sub == "secrets" else 0o755)
    service_key = ids.new_ec_key()
    service_cert = ids.service_certificate(service_key, now=now, days=service_days)
    node_key = ids.new_ec_key()
    node_cert = ids.node_certificate(
        node_key.public_key(), service_key, service_cert, hosts=list(hosts), now=now, days=node_days
    )
    member_key = ids.new_ec_key()
    member_cert = ids.self_signed_identity(member_key, "member0", now=now, days=client_days)
    member_enc = ids.new_rsa_key()
    user_key = ids.new_ec_key()
    user_cert = ids.self_signed_identity(user_key, "user0", now=now, days=client_days)
    secret = os.urandom(LEDGER_SECRET_SIZE)

    ids.write_secret(layout.service_key, ids.private_pem(service_key))
    ids.write_secret(layout.sealed_ledger_secret, secret)
    ids.write_secret(layout.node_key, ids.private_pem(node_key))
    ids.write_public(layout.service_cert, ids.cert_pem(service_cert))
    ids.write_public(layout.node_cert, ids.cert_pem(node_cert))
    ids.write_public(layout.member_file(0, "cert"), ids.cert_pem(member_cert))
    ids.write_secret(layout.member_file(0, "privk"), ids.private_pem(member_key))
    ids.write_public(layout.member_file(0, "enc_pubk"), ids.public_pem(member_enc.public_key()))
    ids.write_secret(layout.member_file(0, "enc_privk"), ids.private_pem(member_enc))
    ids.write_public(layout.user_file(0, "cert"), ids.cert_pem(user_cert))
    ids.write_secret(layout.user_file(0, "privk"), ids.private_pem(user_key))
    # what the Azure SDK's ConfidentialLedgerCertificateCredential takes: certificate + key in one file
    ids.write_secret(layout.user_file(0, "combined"), ids.cert_pem(user_cert) + ids.private_pem(user_key))

    node_id = key_id(node_key.public_key())
    config = ServiceConfig(ledger_id, ledger_type, node_id, tuple(hosts))
    ids.write_public(layout.config, config.to_json().encode())

    member_id, user_id = cert_fingerprint(member_cert), cert_fingerprint(user_cert)
    genesis: Tables = {
        tables.SERVICE_INFO: {
            tables.SINGLETON_KEY: _json(
                {
                    "cert": ids.cert_pem(service_cert).decode(),
                    "current_service_create_txid": "1.1",
                    "previous_service_identity_version": None,
                    "recovery_count": 0,
                    "service_data": {"ledgerId": ledger_id, "ledgerType": ledger_type, "platform": "Virtual"},
                    "status": "Open",
                }
            )
        },
        tables.NODES_INFO: {
            node_id.encode(): _json(
                {
                    "status": "Trusted",
                    "quote_info": {"format": "Insecure_Virtual", "quote": "", "endorsements": ""},
                    "node_data": {"hosts": list(hosts)},
                    "ledger_secret_seqno": 1,
                    "retired_committed": False,
                }
            )
        },
        tables.NODES_ENDORSED_CERTS: {node_id.encode(): ids.cert_pem(node_cert)},
        tables.MEMBERS_CERTS: {member_id.encode(): ids.cert_pem(member_cert)},
        tables.MEMBERS_ENC_KEYS: {member_id.encode(): ids.public_pem(member_enc.public_key())},
        tables.MEMBERS_INFO: {
            member_id.encode(): _json({"member_data": None, "recovery_role": "Participant", "status": "Active"})
        },
        tables.USERS_CERTS: {user_id.encode(): ids.cert_pem(user_cert)},
        tables.USERS_INFO: {user_id.encode(): _json({"user_data": {"assignedRoles": ["Administrator"]}})},
        tables.USERS: {user_id.encode(): _json({"assignedRoles": ["Administrator"], "userId": acl_user_id(user_cert)})},
        tables.CONSTITUTION: {tables.SINGLETON_KEY: DEFAULT_CONSTITUTION.encode()},
    }
    # recovery shares of the first ledger secret: member0 alone, threshold 1 (docs/design/recovery.md)
    recovery = issue_shares((1, secret), {member_id: ids.public_pem(member_enc.public_key()).decode()}, 1)
    genesis = {**genesis, tables.RECOVERY_SHARES: {tables.SINGLETON_KEY: recovery.to_json()}}
    identity = ids.NodeIdentity(node_key, node_cert, service_key, service_cert)
    sealer = VirtualFileSealer(layout.sealed_ledger_secret)
    ledger = Ledger(layout, config, identity, secret, genesis=genesis, sealer=sealer)
    ledger.close()
    return config


def load_identity(layout: Layout) -> tuple[ServiceConfig, ids.NodeIdentity, LedgerSecrets]:
    """The directory's configuration, keys and ledger secrets. Missing ledger secrets are
    :class:`SealedSecretsMissingError` (checked first: a lost ``secrets/`` folder is that
    situation, not merely a key file that cannot be read)."""
    config = ServiceConfig.load(layout)
    secrets = unseal_secrets(VirtualFileSealer(layout.sealed_ledger_secret))
    node_key = ids.load_private_ec(layout.node_key)
    service_key = ids.load_private_ec(layout.service_key)
    node_cert, service_cert = ids.load_cert(layout.node_cert), ids.load_cert(layout.service_cert)
    if key_id(node_key.public_key()) != config.node_id:
        raise ServiceError(f"{layout.node_key} is not the key of node {config.node_id[:16]}")
    if not isinstance(service_cert.public_key(), ec.EllipticCurvePublicKey) or (
        service_cert.public_key() != service_key.public_key()
    ):
        raise ServiceError(f"{layout.service_cert} does not match the service key")
    return config, ids.NodeIdentity(node_key, node_cert, service_key, service_cert), secrets


def write_previous_identities(layout: Layout, endorsements: Sequence[x509.Certificate]) -> None:
    """Record ``endorsements`` (newest first, as :func:`load_identity_chain` returns them after the
    current certificate) in ``DIR/previous_service_identities``: what a joined node needs to
    verify signatures made before the service's disaster recoveries."""
    if not endorsements:
        return
    layout.previous_identities.mkdir(exist_ok=True)
    for n, endorsement in enumerate(reversed(endorsements)):
        replace(layout.previous_identities / f"{n:04d}.endorsement.pem", ids.cert_pem(endorsement))


def open_ledger(
    directory: str | os.PathLike[str],
    config: EngineConfig | None = None,
    *,
    replica: ReplicaLog | None = None,
    courier: SecretCourier | None = None,
) -> Ledger:
    """Open an existing service directory; recovers from a crash with no manual step. With
    ``replica``, as a follower of that replicated log (docs/design/ha.md)."""
    layout = Layout(Path(directory).absolute())
    service, identity, secrets = load_identity(layout)
    sealer = VirtualFileSealer(layout.sealed_ledger_secret)
    return Ledger(
        layout, service, identity, secrets, config or EngineConfig(), sealer=sealer, replica=replica, courier=courier
    )


def recover_service_identity(
    directory: str | os.PathLike[str],
    *,
    now: datetime.datetime | None = None,
    service_cert_days: int = ids.SERVICE_CERT_DAYS,
    node_cert_days: int = ids.NODE_CERT_DAYS,
) -> x509.Certificate:
    """Move a service directory to a new service identity (disaster recovery, issue 6).

    Call it on a stopped service whose ledger secrets are sealed (e.g. just restored by
    :meth:`notarium.ledger.restore.DirectoryRecovery.restore`), before :func:`open_ledger`.
    The previous service key is not needed (it is usually what was lost). A new service key and
    certificate and a new node key and certificate issued by it replace the old ones; the
    previous service certificate and its endorsement by the new key are kept in
    ``previous_service_identities/``; then the change is recorded in the ledger
    (:meth:`Ledger.record_identity_change`) and signed by the new identity. Returns the new
    service certificate. Not atomic across a crash in its middle (docs/design/recovery.md).
    """
    layout = Layout(Path(directory).absolute())
    config = ServiceConfig.load(layout)
    now = now or datetime.datetime.now(datetime.UTC)
    lock = Ledger.lock_directory(layout)
    try:
        previous = ids.load_cert(layout.service_cert)
        chain = load_identity_chain(layout, previous)  # the existing chain must hold before we extend it
        service_key = ids.new_ec_key()
        service_cert = ids.service_certificate(service_key, now=now, days=service_cert_days)
        node_key = ids.new_ec_key()
        node_cert = ids.node_certificate(
            node_key.public_key(), service_key, service_cert, hosts=list(config.hosts), now=now, days=node_cert_days
        )
        endorsement = ids.endorse_previous_identity(previous, service_key, service_cert, now=now)
        layout.previous_identities.mkdir(exist_ok=True)
        n = len(chain) - 1
        replace(layout.previous_identities / f"{n:04d}.service_cert.pem", ids.cert_pem(previous))
        replace(layout.service_key, ids.private_pem(service_key), 0o600)
        replace(layout.node_key, ids.private_pem(node_key), 0o600)
        replace(layout.node_cert, ids.cert_pem(node_cert))
        replace(layout.service_cert, ids.cert_pem(service_cert))
        replace(layout.previous_identities / f"{n:04d}.endorsement.pem", ids.cert_pem(endorsement))
        node_id = key_id(node_key.public_key())
        replace(
            layout.config, ServiceConfig(config.ledger_id, config.ledger_type, node_id, config.hosts).to_json().encode()
        )
    finally:
        os.close(lock)
    with open_ledger(layout.root) as ledger:
        txid = ledger.record_identity_change(previous, endorsement)
        if ledger.wait_committed(txid, timeout=60) != TxStatus.COMMITTED:
            raise ServiceError(f"the service identity change {txid} did not commit")
    return service_cert
