"""Administration of the ledger's secrets and identity: recovery shares, rekeys (docs/design/recovery.md),
certificate renewal, and recording a new service identity after a disaster recovery.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
from collections.abc import Mapping

from cryptography import x509
from cryptography.x509.oid import NameOID

from notarium.durable import replace
from notarium.errors import LedgerError
from notarium.ledger.identity import NODE_CERT_DAYS, cert_pem, node_certificate, service_certificate
from notarium.ledger.sequencing import Sequencing
from notarium.recovery.chain import ChainRecord, LedgerSecrets
from notarium.recovery.shares import RecoverySharesRecord, issue_shares
from notarium.types import TxId
from notarium.verify import tables
from notarium.verify.keys import check_endorsement

log = logging.getLogger("notarium.ledger")


class Administration(Sequencing):
    @property
    def ledger_secret_starts(self) -> list[int]:
        """The seqnos from which each ledger secret is in force (the first is 1)."""
        return self._ring[0].starts

    def recovery_shares(self) -> RecoverySharesRecord | None:
        """The newest recovery shares record appended (committed or not)."""
        with self._lock_obj:
            return self._recovery

    def reissue_recovery_shares(
        self, members: Mapping[str, str | bytes], threshold: int, *, seqno: int | None = None
    ) -> TxId:
        """Issue fresh recovery shares of the newest ledger secret to ``members`` (member id →
        RSA encryption public key PEM), any ``threshold`` of which recover the ledger; appends
        the record (``public:ccf.internal.recovery_shares``). ``ValueError`` on a bad threshold or
        key; ``seqno`` as in :meth:`append`."""
        with self._lock_obj:
            self._check_writable()
            self._check_seqno(seqno)
            record = issue_shares(self._ring[0].latest, members, threshold)
            txid = self._append_tables_locked({tables.RECOVERY_SHARES: {tables.SINGLETON_KEY: record.to_json()}})
            self._recovery = record
        log.info("recovery shares issued to %d member(s), threshold %d, at %s", len(members), threshold, txid)
        return txid

    def rekey(self, *, seqno: int | None = None) -> TxId:
        """Start a new ledger secret for every transaction after the returned one.

        The returned transaction records the previous secret encrypted under the new one
        (``public:ccf.internal.historical_encrypted_ledger_secret``) and recovery shares of the new
        one for the current recovery members. The new secret is sealed locally first."""
        with self._lock_obj:
            self._check_writable()
            self._check_seqno(seqno)
            if self._sealer is None:
                raise LedgerError("this ledger has no sealer to keep a new ledger secret in")
            if self._replica is not None and self._courier is None:  # the other nodes would lack it
                raise LedgerError("this replicated ledger has no way to give the other nodes a new secret")
            if self._recovery is None:
                raise LedgerError("no recovery shares were ever issued: issue them before rekeying")
            secrets = self._ring[0]
            new = (self._next + 1, os.urandom(32))
            chain = ChainRecord.seal(secrets.latest, new, os.urandom(12))
            record = issue_shares(new, self._recovery.recovery_members(), self._recovery.threshold)
            renewed = secrets.with_new(*new)
            self._sealer.seal(renewed.seal_bytes())  # durable before anything is sealed under it
            writes: dict[str, dict[bytes, bytes | None]] = {
                tables.HISTORICAL_LEDGER_SECRET: {tables.SINGLETON_KEY: chain.to_json()},
                tables.RECOVERY_SHARES: {tables.SINGLETON_KEY: record.to_json()},
            }
            if self._courier is not None:  # the other nodes of a replicated service read it from the log
                sealed = self._courier.seal_for_nodes(self, new[1], new[0])
                writes[tables.NODE_LEDGER_SECRETS] = dict(sealed)
            txid = self._append_tables_locked(writes)
            self._set_secrets(renewed)
            self._recovery = record
        log.info("ledger rekeyed at %s: a new ledger secret is in force from seqno %d", txid, txid.seqno + 1)
        return txid

    @property
    def previous_identity_endorsements(self) -> list[x509.Certificate]:
        """The endorsements of the previous service identities (after disaster recoveries), newest
        first: each issued by the identity after it (``DIR/previous_service_identities``)."""
        return list(self._chain.certs[1:])

    @property
    def service_cert(self) -> x509.Certificate:
        return self.identity.service_cert

    def renew_certificates(
        self, *, service_days: int | None = None, node_days: int | None = None, seqno: int | None = None
    ) -> TxId:
        """Renew the service certificate (same key, new validity: not a new identity) and/or this
        node's certificate (same key, issued again by the service key), record them in the ledger
        (``service.info``, ``nodes.endorsed_certificates``) and put them in the service directory.
        Receipts, signatures and pinned copies of the previous certificates keep verifying: the
        keys do not change. A renewed service certificate always comes with a renewed node one."""
        _renewal_days(service_days, "service_days")
        _renewal_days(node_days, "node_days")
        if service_days is None and node_days is None:
            raise ValueError("renew the service certificate, the node certificate, or both")
        now = datetime.datetime.now(datetime.UTC)
        ident = self.identity
        service_cert = ident.service_cert
        public: dict[str, dict[bytes, bytes | None]] = {}
        if service_days is not None:
            name = service_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            service_cert = service_certificate(ident.service_key, now=now, days=service_days, name=str(name))
            raw = self._index.state_get(tables.SERVICE_INFO, tables.SINGLETON_KEY)
            info = json.loads(raw) if raw is not None else {}
            public[tables.SERVICE_INFO] = {
                tables.SINGLETON_KEY: _json_bytes({**info, "cert": cert_pem(service_cert).decode()})
            }
        node_cert = node_certificate(
            ident.node_key.public_key(),
            ident.service_key,
            service_cert,
            hosts=list(self.service.hosts),
            now=now,
            days=node_days or NODE_CERT_DAYS,
        )
        public[tables.NODES_ENDORSED_CERTS] = {self._node_id.encode(): cert_pem(node_cert)}
        txid = self.append(public, seqno=seqno)
        if service_days is not None:
            replace(self.layout.service_cert, cert_pem(service_cert))
        replace(self.layout.node_cert, cert_pem(node_cert))
        self.identity = dataclasses.replace(ident, service_cert=service_cert, node_cert=node_cert)
        self._node_cert_pem = cert_pem(node_cert).decode()
        self._chain = self._chain.renewed(service_cert)
        log.info("certificates renewed at %s (service: %s, node: %s)", txid, service_days, node_days or NODE_CERT_DAYS)
        return txid

    def record_identity_change(self, previous: x509.Certificate, endorsement: x509.Certificate) -> TxId:
        """Record that this ledger's service identity replaces ``previous`` (which ``endorsement``,
        issued by the current service key, certifies): ``service.info`` names the current
        certificate with ``recovery_count`` + 1 and ``previous_service_identity_version`` = the
        seqno that created the previous identity; the previous certificate and the endorsement are
        recorded; this node becomes Trusted with its endorsed certificate, the nodes of the previous
        identity Retired. Called by :func:`notarium.ledger.service.recover_service_identity`."""
        if self._chain.certs[1:2] != [endorsement]:
            raise LedgerError("the endorsement is not the newest one of this service directory")
        check_endorsement(endorsement, self.identity.service_cert, "previous identity endorsement")
        raw = self._index.state_get(tables.SERVICE_INFO, tables.SINGLETON_KEY)
        if raw is None:
            raise LedgerError("the ledger records no service identity to continue")
        info = json.loads(raw)
        if info.get("cert") != cert_pem(previous).decode():
            raise LedgerError("the ledger's service identity is not the endorsed previous one")
        created = str(info.get("current_service_create_txid") or "0.1")
        retire = {
            key: json.dumps({**json.loads(value), "status": "Retired"}, separators=(",", ":"), sort_keys=True).encode()
            for key, value in self._index.state_items(tables.NODES_INFO).items()
            if key != self._node_id.encode() and json.loads(value).get("status") == "Trusted"
        }
        node_info = {
            "status": "Trusted",
            "quote_info": {"format": "Insecure_Virtual", "quote": "", "endorsements": ""},
            "node_data": {"hosts": list(self.service.hosts)},
            "ledger_secret_seqno": self._ring[0].starts[-1],
            "retired_committed": False,
        }
        with self._lock_obj:
            self._check_writable()
            txid = TxId(self._view, self._next)
            new_info = {
                **info,
                "cert": cert_pem(self.identity.service_cert).decode(),
                "current_service_create_txid": str(txid),
                "previous_service_identity_version": int(created.rpartition(".")[2]),
                "recovery_count": int(info.get("recovery_count") or 0) + 1,
                "status": "Open",
            }
            written = self._append_tables_locked(
                {
                    tables.SERVICE_INFO: {tables.SINGLETON_KEY: _json_bytes(new_info)},
                    tables.PREVIOUS_SERVICE_IDENTITY: {tables.SINGLETON_KEY: cert_pem(previous)},
                    tables.PREVIOUS_IDENTITY_ENDORSEMENT: {tables.SINGLETON_KEY: cert_pem(endorsement)},
                    tables.NODES_INFO: {**retire, self._node_id.encode(): _json_bytes(node_info)},
                    tables.NODES_ENDORSED_CERTS: {self._node_id.encode(): self._node_cert_pem.encode()},
                }
            )
            self._close_batch_locked()
        log.info("service identity change recorded at %s (recovery %d)", written, new_info["recovery_count"])
        return written

    def ledger_secrets(self) -> LedgerSecrets:
        """The ledger secrets in force (read-only; for admitting a node, notarium.cluster.join)."""
        return self._ring[0]


def _renewal_days(value: int | None, what: str) -> None:
    if value is not None and (type(value) is not int or not 1 <= value <= 3650):
        raise ValueError(f"{what} must be an integer number of days from 1 to 3650")


def _json_bytes(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
