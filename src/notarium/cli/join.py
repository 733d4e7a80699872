"""``notarium join DIR --target URL --service-cert FILE``: make this machine a node of a running
service (docs/design/ha.md §Joining).

The node key is made (or, on a second run, reused) in ``DIR/node/node_privk.pem``; the join
request, signed by that key, goes to ``--target``'s ``POST /node/join`` over TLS that trusts the
pinned service certificate only. The service answers Pending until its members admit the node
(``transition_node_to_trusted``), unless it runs with ``--auto-trust-virtual-nodes``. Once it is
Trusted, everything in the answer is checked against the pinned service identity, then ``DIR``
becomes a service directory in ``notarium init``'s layout: ``notarium.json`` (written last: its
presence means the join completed), ``service_cert.pem``, ``secrets/service_privk.pem``,
``secrets/ledger_secret.sealed`` (the same sealer as ``init``), ``node/node_cert.pem`` and the node
key, with an **empty** ledger: its content comes from the replicated store (``notarium serve DIR
--store …``); DIR is not a standalone ledger. No secret is ever printed or logged.

Exit codes: 0 joined; 1 refused (the message says why) or a local failure; 2 bad usage; 3 the
answer failed verification; 4 the service is unreachable; 5 still Pending when ``--wait`` ran out
(DIR keeps the key: run the same command again to continue).
"""

from __future__ import annotations

import argparse
import ssl
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from notarium.cluster.join import Admission, check_address, check_hosts, make_join_request, parse_join_answer
from notarium.durable import replace
from notarium.errors import ServiceError, VerificationError
from notarium.ledger import identity as ids
from notarium.ledger.layout import Layout, ServiceConfig
from notarium.ledger.service import write_previous_identities
from notarium.recovery.sealing import VirtualFileSealer, seal_secrets
from notarium.server.config import url
from notarium.verify.keys import key_id

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_VERIFY, EXIT_UNREACHABLE, EXIT_PENDING = 0, 1, 2, 3, 4, 5
POLL_S = 1.0
_DEFAULT_SANS = ("localhost", "127.0.0.1", "::1")  # every node certificate has them (ledger/identity.py)


class _RefusedError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "join",
        help="join a running service as a new node (its members admit it)",
        description="Join a running service as a new node: DIR gets the node key, and once the node is "
        "admitted (transition_node_to_trusted, or the service's --auto-trust-virtual-nodes), the service "
        "identity, ledger secrets and the node certificate. The ledger stays empty: serve DIR with --store.",
    )
    p.add_argument("directory", type=Path, metavar="DIR")
    p.add_argument("--target", required=True, metavar="URL", help="a node of the service: https://host:port")
    p.add_argument(
        "--service-cert", required=True, type=Path, metavar="FILE", help="the service certificate (pinned for TLS)"
    )
    p.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="host name or IP for this node's certificate (repeatable; localhost and 127.0.0.1 are always in)",
    )
    p.add_argument(
        "--address",
        metavar="URL",
        help="where the other nodes reach this one: https://host:port (default https://<first --host>:8443)",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the members to admit the node (default 60; 0: ask once)",
    )
    p.set_defaults(handler=handle)


def _target(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise ValueError("--target must be https://host:port")
    return url.rstrip("/")


def _default_address(hosts: tuple[str, ...]) -> str:
    return url(hosts[0] if hosts else "localhost", 8443)


def _node_key(layout: Layout) -> tuple[ec.EllipticCurvePrivateKey, bool]:
    """The node key of a join in progress, or a new one in a new (or empty) DIR."""
    root = layout.root
    if layout.config.exists():
        raise ServiceError(f"{root} is already a service directory (notarium.json exists): nothing to join")
    if layout.node_key.exists():
        return ids.load_private_ec(layout.node_key), True
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ServiceError(f"{root} exists and is not empty; give a new directory (or an unfinished join's)")
    layout.node_key.parent.mkdir(parents=True, exist_ok=True)
    key = ids.new_ec_key()
    ids.write_secret(layout.node_key, ids.private_pem(key))
    return key, False


def _ask(http: httpx.Client, body: dict[str, Any]) -> Any:
    try:
        r = http.post("/node/join", json=body)
    except httpx.TransportError as exc:
        raise ConnectionError(f"cannot reach the service: {exc}") from None
    try:
        data = r.json()
    except ValueError:
        data = None
    if r.status_code != 200:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        error = error if isinstance(error, dict) else {}
        raise _RefusedError(r.status_code, str(error.get("code", "HttpError")), str(error.get("message", r.text[:200])))
    return data


def _hosts_of(cert: x509.Certificate) -> tuple[str, ...]:
    """The host names and IPs the node certificate was issued for, beyond the ones every node has."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    names = [str(n) for n in sans.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    return tuple(n for n in names if n not in _DEFAULT_SANS)


def write_node_directory(layout: Layout, node_key: ec.EllipticCurvePrivateKey, admission: Admission) -> ServiceConfig:
    """DIR as ``notarium init`` lays it out, for a joined node: every file replaced atomically (a
    join interrupted here is resumed by running it again), ``notarium.json`` last."""
    node_id = key_id(node_key.public_key())
    root = layout.root
    for sub in ("secrets", "node", "ledger", "index"):
        (root / sub).mkdir(mode=0o700 if sub == "secrets" else 0o755, exist_ok=True)
    replace(layout.service_cert, ids.cert_pem(admission.service_cert))
    replace(layout.service_key, ids.private_pem(admission.service_key), 0o600)
    seal_secrets(VirtualFileSealer(layout.sealed_ledger_secret), admission.secrets)
    replace(layout.node_cert, ids.cert_pem(admission.node_cert))
    write_previous_identities(layout, admission.previous_endorsements)
    config = ServiceConfig(admission.ledger_id, admission.ledger_type, node_id, _hosts_of(admission.node_cert))
    replace(layout.config, config.to_json().encode())
    return config


def handle(args: argparse.Namespace) -> int:
    target = _target(args.target)
    hosts = check_hosts(list(args.host))
    address = check_address(args.address or _default_address(hosts))
    if args.wait < 0:
        raise ValueError("--wait must be 0 or more seconds")
    service_cert = ids.load_cert(args.service_cert)
    context = ssl.create_default_context(cadata=ids.cert_pem(service_cert).decode())  # the pinned certificate only
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    layout = Layout(args.directory.absolute())
    node_key, resumed = _node_key(layout)
    node_id = key_id(node_key.public_key())
    print(f"{'resuming the join of' if resumed else 'joining as'} node {node_id} (key: {layout.node_key})", flush=True)
    deadline = time.monotonic() + args.wait
    told = False
    try:
        with httpx.Client(base_url=target, verify=context, timeout=30, trust_env=False) as http:
            while True:
                body = make_join_request(node_key, hosts=hosts, address=address, created_at=int(time.time()))
                admission = parse_join_answer(_ask(http, body), node_key=node_key, service_cert=service_cert)
                if admission is not None:
                    break
                if not told:
                    print(
                        f"node {node_id} is Pending: the members admit it with\n"
                        f"  notarium gov propose --action transition_node_to_trusted "
                        f'--args \'{{"node_id": "{node_id}"}}\'',
                        flush=True,
                    )
                    told = True
                left = deadline - time.monotonic()
                if left <= 0:
                    print(
                        f"error: node {node_id} is still Pending after {args.wait:g} s; {layout.root} keeps its key: "
                        "run the same command again to continue",
                        file=sys.stderr,
                    )
                    return EXIT_PENDING
                time.sleep(min(POLL_S, left))
    except _RefusedError as exc:
        print(f"error: the service refused the join: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ConnectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except VerificationError as exc:
        print(f"error: the service's answer does not verify: {exc}", file=sys.stderr)
        return EXIT_VERIFY
    config = write_node_directory(layout, node_key, admission)
    print(
        f"node {node_id} is Trusted: {layout.root} is a node of ledger {config.ledger_id!r}\n"
        f"  service certificate: {layout.service_cert}\n"
        f"  node certificate (issued by the service key): {layout.node_cert}\n"
        f"  its ledger is empty: serve it as a node of the replicated service (notarium serve {layout.root} "
        "--store postgresql://…), not on its own",
        flush=True,
    )
    return EXIT_OK
