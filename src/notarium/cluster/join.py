"""Joining a node to a running service (docs/design/ha.md §Joining).

Pure: no I/O, no clock of its own (callers pass ``now``). Bytes from the network are untrusted:
every failure to parse or verify them is a :class:`~notarium.errors.VerificationError` whose
``check`` says which (:data:`CHECK_MALFORMED`, :data:`CHECK_SIGNATURE`, :data:`CHECK_QUOTE`,
:data:`CHECK_EXPIRED`, :data:`CHECK_SEALED`, :data:`CHECK_ANSWER`). Misuse by the caller (a key of
the wrong curve, a bad host name given on the command line) is a ``ValueError``.

Sealing to a node key is :mod:`notarium.cluster.sealing`; the limits on joining are
:mod:`notarium.cluster.limits`.

**The join request** (JSON, :func:`make_join_request`, :func:`parse_join_request`)::

    {"format": "notarium-join-request/1",
     "publicKey": "<PEM SubjectPublicKeyInfo, P-384: the node key>",
     "quote": {"quoteVersion": "Insecure_Virtual", "platform": "Virtual", "virtual": true,
               "raw": "", "reportData": "<hex SHA-256 of the key's DER SubjectPublicKeyInfo>"},
     "hosts": ["node2.example", "10.0.0.2"],         # for its certificate (≤ 32 names or IPs)
     "address": "https://node2.example:8443",       # where the other nodes reach it
     "createdAt": 1735689600,                       # seconds; ±300 s of the service's clock
     "signature": "<base64 DER ECDSA-SHA384 by the node key>"}

*Proof of possession*: the signature covers ``"notarium/join-request/v1" ‖ 0x00 ‖`` the canonical
JSON (sorted keys, no whitespace, ASCII) of every other field, and must verify with ``publicKey``:
only the holder of the node key can ask to join with it, and the answer's secrets are sealed to
that key anyway. The quote is of CCF's *virtual* platform (an empty ``raw``) plus ``reportData``,
which must be SHA-256 of the node's public key (its node id): the binding ``/app/enclaveQuotes``
shows in each node's evidence (:mod:`notarium.cluster.attestation`). A virtual
quote attests nothing (anyone can write one): it is checked for consistency, and the signature is
what proves the key.

**The answer**: ``{"state": "Pending", "nodeId"}`` until the node is trusted, then ``{"state":
"Trusted", "nodeId", "nodeCertificate" (issued by the service key), "serviceCertificate",
"ledgerId", "ledgerType", "sealedSecrets"}``, where ``sealedSecrets`` is base64 of
:func:`seal_to_node` over the JSON document ``{"format": "notarium-join-secrets/1",
"serviceKey": "<PEM PKCS#8>", "ledgerSecrets": [{"startSeqno": 1, "secret": "<base64>"}, …]}``
with context :func:`secrets_context`.

"""

from __future__ import annotations

import base64
import binascii
import datetime
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notarium.cluster.sealing import CHECK_SEALED, open_from_node, require_p384, seal_to_node
from notarium.errors import VerificationError
from notarium.ledger.identity import NODE_CERT_DAYS, cert_pem, node_certificate, private_pem, public_pem
from notarium.recovery.chain import LedgerSecrets
from notarium.verify.keys import check_endorsement, ec_public_key, key_id, load_pem_cert

if TYPE_CHECKING:
    from notarium.ledger.engine import Ledger

CHECK_MALFORMED = "join-request"
CHECK_SIGNATURE = "join-signature"
CHECK_QUOTE = "join-quote"
CHECK_EXPIRED = "join-expired"
CHECK_ANSWER = "join-answer"


# --- the virtual quote ---------------------------------------------------------------------------

QUOTE_FORMAT = "Insecure_Virtual"  # as /app/enclaveQuotes says of every notarium quote
_QUOTE_KEYS = frozenset({"quoteVersion", "platform", "virtual", "raw", "reportData"})


def virtual_quote(public_key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    """The virtual platform's quote for a node key: it binds SHA-256 of the key (its node id)."""
    return {
        "quoteVersion": QUOTE_FORMAT,
        "platform": "Virtual",
        "virtual": True,
        "raw": "",
        "reportData": key_id(public_key),
    }


def verify_quote(quote: object, public_key: ec.EllipticCurvePublicKey) -> None:
    """A virtual quote for ``public_key``; :class:`VerificationError` (``CHECK_QUOTE``) otherwise."""
    if not isinstance(quote, dict) or set(quote) != _QUOTE_KEYS:
        raise VerificationError(f"the quote must be {{{', '.join(sorted(_QUOTE_KEYS))}}}", check=CHECK_QUOTE)
    if quote["quoteVersion"] != QUOTE_FORMAT or quote["platform"] != "Virtual" or quote["virtual"] is not True:
        raise VerificationError(
            f"only quotes of the virtual platform are accepted (quoteVersion {QUOTE_FORMAT}, platform Virtual)",
            check=CHECK_QUOTE,
        )
    if quote["raw"] != "":
        raise VerificationError("a virtual quote has an empty raw quote", check=CHECK_QUOTE)
    if quote["reportData"] != key_id(public_key):
        raise VerificationError(
            "the quote's reportData is not SHA-256 of the node's public key: it was made for another key",
            check=CHECK_QUOTE,
        )


# --- the join request ----------------------------------------------------------------------------

REQUEST_FORMAT = "notarium-join-request/1"
_SIGNATURE_LABEL = b"notarium/join-request/v1"
_REQUEST_KEYS = frozenset({"format", "publicKey", "quote", "hosts", "address", "createdAt", "signature"})
WINDOW_S = 300  # a request must be created within this many seconds of the service's clock
MAX_HOSTS = 32
MAX_REQUEST_BYTES = 64 << 10
_MAX_PEM = 4096
_MAX_SIGNATURE_B64 = 512
_LEDGER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{1,62}[A-Za-z0-9]$")  # as notarium init names ledgers
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def check_host(host: object) -> str:
    """A host name (letters, digits, '-', dot-separated labels; no wildcard) or an IP address."""
    if not isinstance(host, str) or not 0 < len(host) <= 253:
        raise ValueError("a host is a DNS name or an IP address of at most 253 characters")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not all(_LABEL.match(label) for label in host.split(".")):
        raise ValueError(f"{host[:64]!r} is not a DNS name or an IP address")
    return host.lower()


def check_hosts(hosts: object) -> tuple[str, ...]:
    if not isinstance(hosts, list | tuple) or len(hosts) > MAX_HOSTS:
        raise ValueError(f"hosts must be a list of at most {MAX_HOSTS} host names or IP addresses")
    return tuple(dict.fromkeys(check_host(h) for h in hosts))


def check_address(address: object) -> str:
    """``https://host:port`` (an IPv6 host in brackets), nothing else."""
    if not isinstance(address, str) or not 0 < len(address) <= 300:
        raise ValueError("the address must be https://host:port")
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError:
        raise ValueError("the address must be https://host:port") from None
    if (
        parts.scheme != "https"
        or parts.hostname is None
        or port is None
        or not 0 < port < 65536
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ValueError("the address must be https://host:port")
    check_host(parts.hostname)
    return address


def load_node_public_key(pem: object) -> ec.EllipticCurvePublicKey:
    """A node's public key (PEM SubjectPublicKeyInfo, P-384); :class:`VerificationError` otherwise."""
    if not isinstance(pem, str) or len(pem) > _MAX_PEM:
        raise VerificationError("publicKey must be a PEM public key", check=CHECK_MALFORMED)
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeError, UnsupportedAlgorithm):
        raise VerificationError("publicKey is not a PEM public key", check=CHECK_MALFORMED) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise VerificationError("publicKey must be an elliptic-curve P-384 key", check=CHECK_MALFORMED)
    return key


def _canonical(fields: Mapping[str, Any]) -> bytes:
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return _SIGNATURE_LABEL + b"\x00" + body.encode("ascii")


def make_join_request(
    node_key: ec.EllipticCurvePrivateKey, *, hosts: Sequence[str], address: str, created_at: int
) -> dict[str, Any]:
    """A signed join request for ``node_key`` (``ValueError`` on a bad host or address)."""
    require_p384(node_key, "the node key")
    public = node_key.public_key()
    fields: dict[str, Any] = {
        "format": REQUEST_FORMAT,
        "publicKey": public_pem(public).decode(),
        "quote": virtual_quote(public),
        "hosts": list(check_hosts(list(hosts))),
        "address": check_address(address),
        "createdAt": int(created_at),
    }
    signature = node_key.sign(_canonical(fields), ec.ECDSA(hashes.SHA384()))
    return {**fields, "signature": base64.b64encode(signature).decode()}


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A join request whose signature verified with its own key and whose quote binds that key."""

    public_key: ec.EllipticCurvePublicKey
    public_key_pem: str
    node_id: str
    quote: dict[str, Any]
    hosts: tuple[str, ...]
    address: str
    created_at: int


def _malformed(message: str) -> VerificationError:
    return VerificationError(message, check=CHECK_MALFORMED)


def parse_join_request(body: object, *, now: float, window_s: int = WINDOW_S) -> JoinRequest:
    """Check a join request: its shape (``CHECK_MALFORMED``), the proof of possession of its key
    (``CHECK_SIGNATURE``), its quote (``CHECK_QUOTE``), then its age (``CHECK_EXPIRED``)."""
    if not isinstance(body, dict):
        raise _malformed("a join request is a JSON object")
    if set(body) != _REQUEST_KEYS:
        missing, unknown = _REQUEST_KEYS - set(body), set(body) - _REQUEST_KEYS
        what = f"missing {', '.join(sorted(missing))}" if missing else f"unknown {', '.join(sorted(unknown))[:100]}"
        raise _malformed(f"a join request has the fields {', '.join(sorted(_REQUEST_KEYS))} ({what})")
    if body["format"] != REQUEST_FORMAT:
        raise _malformed(f"format must be {REQUEST_FORMAT}")
    public_key = load_node_public_key(body["publicKey"])
    try:
        hosts = check_hosts(body["hosts"])
        address = check_address(body["address"])
    except ValueError as exc:
        raise _malformed(str(exc)) from None
    created_at = body["createdAt"]
    if type(created_at) is not int:
        raise _malformed("createdAt must be an integer number of seconds")
    quote = body["quote"]
    if not isinstance(quote, dict) or set(quote) != _QUOTE_KEYS:
        raise _malformed(f"quote must be {{{', '.join(sorted(_QUOTE_KEYS))}}}")
    if not all(isinstance(v, str | bool) for v in quote.values()):
        raise _malformed("the quote's fields are strings and a boolean")
    signature_b64 = body["signature"]
    if not isinstance(signature_b64, str) or len(signature_b64) > _MAX_SIGNATURE_B64:
        raise _malformed("signature must be base64 of a DER ECDSA signature")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed("signature must be base64 of a DER ECDSA signature") from None
    fields = {k: v for k, v in body.items() if k != "signature"}
    try:
        public_key.verify(signature, _canonical(fields), ec.ECDSA(hashes.SHA384()))
    except (InvalidSignature, ValueError):
        raise VerificationError(
            "the request's signature does not verify with its publicKey: the sender must hold the node key",
            check=CHECK_SIGNATURE,
        ) from None
    verify_quote(quote, public_key)
    if abs(now - created_at) > window_s:
        raise VerificationError(
            f"the request was created {int(now - created_at)} s from the service's clock (at most {window_s} s)",
            check=CHECK_EXPIRED,
        )
    return JoinRequest(
        public_key, public_pem(public_key).decode(), key_id(public_key), dict(quote), hosts, address, created_at
    )


NODE_PENDING, NODE_TRUSTED, NODE_RETIRED = "Pending", "Trusted", "Retired"
PENDING_SINCE = "pending_since"  # a Pending record's: when the node first asked (integer seconds, the primary's clock)


def node_info(request: JoinRequest, status: str, *, pending_since: int | None = None) -> dict[str, Any]:
    """The node's record in ``public:ccf.gov.nodes.info`` (CCF's field names where CCF has them;
    ``pending_since`` is notarium's, for the expiry of Pending nodes)."""
    if status not in (NODE_PENDING, NODE_TRUSTED):
        raise ValueError("a joining node is recorded Pending or Trusted")
    info: dict[str, Any] = {
        "status": status,
        "public_key": request.public_key_pem,
        "quote_info": {
            "format": QUOTE_FORMAT,
            "quote": "",
            "endorsements": "",
            "report_data": request.quote["reportData"],
        },
        "node_data": {"hosts": list(request.hosts), "address": request.address},
        "retired_committed": False,
    }
    if status == NODE_PENDING and pending_since is not None:
        info[PENDING_SINCE] = int(pending_since)
    return info


# --- admission (the service side) ----------------------------------------------------------------

SECRETS_FORMAT = "notarium-join-secrets/1"
_REUSE_MARGIN = datetime.timedelta(days=1)


def secrets_context(service_public_key: ec.EllipticCurvePublicKey, node_public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The sealing context of the secrets a service sends a joining node."""
    return f"{SECRETS_FORMAT} service={key_id(service_public_key)} node={key_id(node_public_key)}".encode()


def _secrets_document(service_key: ec.EllipticCurvePrivateKey, secrets: LedgerSecrets) -> bytes:
    return json.dumps(
        {
            "format": SECRETS_FORMAT,
            "serviceKey": private_pem(service_key).decode(),
            "ledgerSecrets": [{"startSeqno": s, "secret": base64.b64encode(k).decode()} for s, k in secrets],
        },
        separators=(",", ":"),
    ).encode()


def _reusable(
    pem: str | None, public_key: ec.EllipticCurvePublicKey, service_cert: x509.Certificate, now: datetime.datetime
) -> bool:
    if pem is None:
        return False
    try:
        cert = load_pem_cert(pem, "recorded node certificate")
        check_endorsement(cert, service_cert, "recorded node certificate")
        if ec_public_key(cert) != public_key:
            return False
    except VerificationError:
        return False
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc > now + _REUSE_MARGIN


def admit(
    service_key: ec.EllipticCurvePrivateKey,
    service_cert: x509.Certificate,
    secrets: LedgerSecrets,
    public_key_pem: str,
    hosts: Sequence[str],
    *,
    now: datetime.datetime,
    node_cert_pem: str | None = None,
    days: int = NODE_CERT_DAYS,
) -> tuple[str, str]:
    """What a trusted node receives: its certificate (``node_cert_pem`` if that is still a valid
    certificate of this key issued by the service key, else a new one for ``hosts``) and base64 of
    the service key and ledger secrets sealed to its key. Both PEM/base64 text."""
    public_key = load_node_public_key(public_key_pem)
    if service_cert.public_key() != service_key.public_key():
        raise ValueError("the service certificate is not the service key's")
    if _reusable(node_cert_pem, public_key, service_cert, now):
        cert_text = str(node_cert_pem)
    else:
        cert = node_certificate(
            public_key, service_key, service_cert, hosts=list(check_hosts(list(hosts))), now=now, days=days
        )
        cert_text = cert_pem(cert).decode()
    sealed = seal_to_node(
        public_key,
        _secrets_document(service_key, secrets),
        context=secrets_context(service_key.public_key(), public_key),
    )
    return cert_text, base64.b64encode(sealed).decode()


MAX_IDENTITIES = 1000  # previous service identities a join answer may list


def pending_answer(node_id: str) -> dict[str, Any]:
    return {"state": NODE_PENDING, "nodeId": node_id}


def trusted_answer(
    node_id: str,
    node_cert_pem: str,
    service_cert_pem: str,
    sealed_secrets: str,
    ledger_id: str,
    ledger_type: str,
    previous_endorsements: Sequence[str] = (),
) -> dict[str, Any]:
    return {
        "state": NODE_TRUSTED,
        "nodeId": node_id,
        "nodeCertificate": node_cert_pem,
        "serviceCertificate": service_cert_pem,
        "ledgerId": ledger_id,
        "ledgerType": ledger_type,
        "sealedSecrets": sealed_secrets,
        # after disaster recoveries: the endorsement of each previous service identity, newest first
        "previousIdentityEndorsements": list(previous_endorsements),
    }


# --- the joining node's side ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admission:
    """What a Trusted answer gave, every part checked against the pinned service identity."""

    node_cert: x509.Certificate
    service_cert: x509.Certificate
    service_key: ec.EllipticCurvePrivateKey
    secrets: LedgerSecrets
    ledger_id: str
    ledger_type: str
    # endorsements of the previous service identities, newest first, each issued by the one before it
    previous_endorsements: tuple[x509.Certificate, ...] = ()

    def __repr__(self) -> str:  # never show a secret
        return f"Admission(node={key_id(ec_public_key(self.node_cert))[:16]}, ledger={self.ledger_id!r})"


def _answer_error(message: str) -> VerificationError:
    return VerificationError(message, check=CHECK_ANSWER)


def open_join_secrets(
    node_key: ec.EllipticCurvePrivateKey, service_public_key: ec.EllipticCurvePublicKey, sealed: bytes
) -> tuple[ec.EllipticCurvePrivateKey, LedgerSecrets]:
    """The service key and ledger secrets sealed to ``node_key``; the service key must be the
    private half of ``service_public_key``. :class:`VerificationError` otherwise."""
    document = open_from_node(node_key, sealed, context=secrets_context(service_public_key, node_key.public_key()))
    try:
        doc = json.loads(document)
        if not isinstance(doc, dict) or doc.get("format") != SECRETS_FORMAT:
            raise ValueError("unknown format")
        loaded = serialization.load_pem_private_key(str(doc["serviceKey"]).encode("ascii"), password=None)
        secrets = LedgerSecrets(
            [
                (int(item["startSeqno"]), base64.b64decode(item["secret"], validate=True))
                for item in doc["ledgerSecrets"]
            ]
        )
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeError, UnsupportedAlgorithm, binascii.Error):
        raise VerificationError("the sealed secrets are not a valid secrets document", check=CHECK_SEALED) from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.public_key() != service_public_key:
        raise VerificationError("the sealed service key is not the pinned service identity's", check=CHECK_SEALED)
    return loaded, secrets


def parse_join_answer(
    body: object, *, node_key: ec.EllipticCurvePrivateKey, service_cert: x509.Certificate
) -> Admission | None:
    """``None`` while the node is Pending; once Trusted, the :class:`Admission`, checked: the
    node certificate is of ``node_key`` and issued by the pinned service key, the service
    certificate has the pinned key, the secrets open and hold the pinned service key."""
    if not isinstance(body, dict) or body.get("state") not in (NODE_PENDING, NODE_TRUSTED):
        raise _answer_error("the join answer is not {state: Pending|Trusted, ...}")
    node_id = key_id(node_key.public_key())
    if body.get("nodeId") != node_id:
        raise _answer_error("the join answer is for another node")
    if body["state"] == NODE_PENDING:
        return None
    pinned = ec_public_key(service_cert, "the pinned service certificate")
    for name in ("nodeCertificate", "serviceCertificate", "ledgerId", "ledgerType", "sealedSecrets"):
        if not isinstance(body.get(name), str):
            raise _answer_error(f"the Trusted answer has no {name}")
    answered = load_pem_cert(body["serviceCertificate"], "the answer's service certificate")
    if ec_public_key(answered, "the answer's service certificate") != pinned:
        raise _answer_error("the answer's service certificate is not the pinned service identity")
    node_cert = load_pem_cert(body["nodeCertificate"], "the node certificate")
    check_endorsement(node_cert, service_cert, "the node certificate")
    if ec_public_key(node_cert, "the node certificate") != node_key.public_key():
        raise _answer_error("the node certificate is not for this node's key")
    try:
        sealed = base64.b64decode(body["sealedSecrets"], validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError("sealedSecrets is not base64", check=CHECK_SEALED) from None
    service_key, secrets = open_join_secrets(node_key, pinned, sealed)
    if body["ledgerType"] not in ("Private", "Public") or not _LEDGER_ID.match(body["ledgerId"]):
        raise _answer_error("the answer's ledger id or type is invalid")
    return Admission(
        node_cert, answered, service_key, secrets, body["ledgerId"], body["ledgerType"], _endorsements(body, answered)
    )


def _endorsements(body: dict[str, Any], service_cert: x509.Certificate) -> tuple[x509.Certificate, ...]:
    """The previous identities' endorsements of a Trusted answer (none if absent), each checked to
    be issued by the identity after it: the chain a node needs to verify signatures made before
    the service's disaster recoveries."""
    listed = body.get("previousIdentityEndorsements", [])
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed) or len(listed) > MAX_IDENTITIES:
        raise _answer_error("previousIdentityEndorsements is not a list of PEM certificates")
    chain = [service_cert]
    for i, pem in enumerate(listed):
        endorsement = load_pem_cert(pem, f"previous identity endorsement {i}")
        check_endorsement(endorsement, chain[-1], f"previous identity endorsement {i}")
        chain.append(endorsement)
    return tuple(chain[1:])


def admit_node(
    ledger: Ledger, public_key_pem: str, hosts: list[str], node_cert_pem: str | None = None
) -> tuple[str, str]:
    """:func:`admit` with a ledger's service identity and secrets: run in the engine process (the
    secrets stay there; only the sealed blob crosses to the front), for Trusted nodes only (the
    front checks governance first)."""
    ident = ledger.identity
    return admit(
        ident.service_key,
        ident.service_cert,
        ledger.ledger_secrets(),
        public_key_pem,
        hosts,
        now=datetime.datetime.now(datetime.UTC),
        node_cert_pem=node_cert_pem,
    )


ENGINE_CALLS = {"admit_node": admit_node}
"""The engine calls of the join protocol (``EngineService(..., calls=ENGINE_CALLS)``)."""
