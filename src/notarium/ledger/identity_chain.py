"""The service identities a ledger's signatures may be made under, and checking a signature transaction against them.

A service directory that went through disaster recoveries has had several service identities:
the current certificate, and for each earlier identity an endorsement issued by the identity
after it (``DIR/previous_service_identities``, docs/design/recovery.md). A signature transaction
is trusted when its node certificate is endorsed by one of them, and its COSE root signature is
made by that identity's key.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from notarium.errors import ServiceError, VerificationError
from notarium.ledger.identity import cert_pem
from notarium.ledger.layout import Layout
from notarium.types import TxId
from notarium.verify import tables
from notarium.verify.keys import check_endorsement, ec_public_key, key_id, load_pem_cert
from notarium.verify.signature import PrimarySignature, verify_signature_transaction


def load_identity_chain(layout: Layout, service_cert: x509.Certificate) -> list[x509.Certificate]:
    """``[service_cert, endorsement of the previous identity, of the one before, …]``, each
    endorsement checked to be issued by the identity before it in the list."""
    chain = [service_cert]
    directory = layout.previous_identities
    if not directory.is_dir():
        return chain
    for path in sorted(directory.glob("*.endorsement.pem"), reverse=True):
        try:
            endorsement = x509.load_pem_x509_certificate(path.read_bytes())
            check_endorsement(endorsement, chain[-1], "previous identity endorsement")
        except (OSError, ValueError, VerificationError) as exc:
            raise ServiceError(f"{path} does not continue the service identity chain: {exc}") from None
        chain.append(endorsement)
    return chain


class IdentityChain:
    """``certs``: [current service cert, endorsement of the previous identity, of the one before, …];
    ``service_key``: the current service identity's public key."""

    __slots__ = ("certs", "service_key")

    def __init__(self, certs: list[x509.Certificate], service_key: ec.EllipticCurvePublicKey) -> None:
        self.certs = certs
        self.service_key = service_key

    def renewed(self, service_cert: x509.Certificate) -> IdentityChain:
        """The chain with a renewed current certificate (same key)."""
        return IdentityChain([service_cert, *self.certs[1:]], self.service_key)

    def depth(self, node_cert_pem: str | None) -> int:
        """Which service identity endorsed a node certificate: 0 the current one, ``d`` the one
        ``d`` identity changes back (trusted through the recorded endorsement chain)."""
        if node_cert_pem is None:
            raise VerificationError("signature carries no node certificate", check="signature-node")
        cert = load_pem_cert(node_cert_pem, "node certificate")
        for depth, service in enumerate(self.certs):
            try:
                check_endorsement(cert, service, "node certificate")
            except VerificationError:
                continue
            return depth
        raise VerificationError(
            "node certificate is not endorsed by the service identity or any endorsed previous one",
            check="signature-node",
        )

    def endorsements(self, depth: int) -> list[str]:
        """``serviceEndorsements`` of a receipt signed under identity ``depth``: node cert → these → service cert."""
        return [cert_pem(self.certs[d]).decode() for d in range(depth, 0, -1)]

    def verify_signature(self, public: dict[str, dict[bytes, bytes | None]], txid: TxId, root: bytes) -> None:
        """Check a signature transaction's write set: it signs ``root`` at ``txid``, by a node
        endorsed by one of the identities, with that identity's COSE root signature."""
        service_key = self.service_key
        raw_sig = public.get(tables.SIGNATURES, {}).get(tables.SINGLETON_KEY)
        if raw_sig is not None:
            try:
                carried = PrimarySignature.from_json(raw_sig).cert
            except (ValueError, VerificationError):
                carried = None  # verify_signature_transaction reports it
            if carried is not None:
                service_key = ec_public_key(self.certs[self.depth(carried)], "service identity")

        def node_key(sig: PrimarySignature) -> ec.EllipticCurvePublicKey:
            self.depth(sig.cert)
            cert = load_pem_cert(sig.cert or "", "node certificate")
            key = ec_public_key(cert, "node certificate")
            if key_id(key) != sig.node:
                raise VerificationError("node id is not the hash of its key", check="signature-node")
            return key

        verify_signature_transaction(public, txid=txid, root=root, service_key=service_key, node_key=node_key)
