"""Joining a node to a real ``notarium serve`` with the real ``notarium join`` (docs/design/ha.md).

(a) By governance: the join answers Pending (and asking again changes nothing); members pass
``transition_node_to_trusted`` with ``notarium gov``; the join that was polling completes. The new
directory holds the same service certificate and key, a node certificate issued by the service key
that a TLS client pinning the service certificate accepts, and sealed ledger secrets that unseal to
the original's secret chain (two secrets: the service was rekeyed first); the node is Trusted in
``/node/network/nodes``; nothing secret was printed by either side.
(b) With ``--auto-trust-virtual-nodes``: the join completes at once.
(c) Bad requests: malformed JSON, a request for a key the sender does not hold, a quote for another
key, a stale request, an oversized one, a Retired node: each a clear 4xx in ACL's error format, and
nothing is written (the committed TxId and the node list do not move).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from integration.server import Server, clean_env, running, settled_committed
from integration.test_ops import assert_no_secrets, secrets_of
from notarium.cluster.join import make_join_request, virtual_quote
from notarium.ledger import init_service
from notarium.ledger.identity import load_cert, load_private_ec, new_ec_key, public_pem
from notarium.ledger.layout import Layout, ServiceConfig
from notarium.recovery.sealing import VirtualFileSealer, unseal_secrets
from notarium.verify.keys import check_endorsement, key_id

NODE_ADDRESS = "https://node2.example:9443"
EXIT_PENDING = 5


class Service:
    """A running service, its pinned certificate, and member0 acting through ``notarium gov``."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.s = requests.Session()
        self.s.trust_env = False  # the service certificate is pinned, never a CA bundle
        self.s.verify = str(server.service_cert)

    def get(self, path: str) -> requests.Response:
        return self.s.get(self.server.url + path, timeout=30)

    def post(self, path: str, body: bytes) -> requests.Response:
        return self.s.post(self.server.url + path, data=body, headers={"Content-Type": "application/json"}, timeout=30)

    def nodes(self) -> dict[str, dict[str, Any]]:
        r = self.get("/node/network/nodes")
        assert r.status_code == 200, r.text
        return {n["nodeId"]: n for n in r.json()["nodes"]}

    def committed(self) -> str:
        """The committed TxId once nothing is pending."""
        return settled_committed(lambda: str(self.get("/readyz").json()["committed"]))

    def quoted(self) -> list[str]:
        """The nodes ``/app/enclaveQuotes`` quotes (as the Administrator)."""
        r = self.s.get(self.server.url + "/app/enclaveQuotes", cert=str(self.server.admin_pem), timeout=30)
        assert r.status_code == 200, r.text
        return sorted(r.json()["enclaveQuotes"])

    def _connection(self) -> list[str]:
        return ["--endpoint", self.server.url, "--dir", str(self.server.directory), "--json"]

    def gov(self, *args: str) -> dict[str, Any]:
        p = subprocess.run(
            [sys.executable, "-m", "notarium", "gov", *args, *self._connection()],
            check=False,
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
        )
        assert p.returncode == 0, p.stdout + p.stderr
        return dict(json.loads(p.stdout))

    def accept(self, action: str, args: dict[str, Any] | None = None) -> None:
        """member0 (the only, Active, member) proposes and votes: its vote is the majority."""
        command = ["propose", "--action", action] + (["--args", json.dumps(args)] if args is not None else [])
        proposal = self.gov(*command)
        assert self.gov("vote", proposal["proposalId"], "--accept")["proposalState"] == "Accepted"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    directory = tmp_path_factory.mktemp("join") / "ledger"
    init_service(directory, hosts=("ledger.example",))
    with running(directory) as server:
        svc = Service(server)
        svc.accept("trigger_ledger_rekey")  # a chain of two ledger secrets for the new node to receive
        yield svc
        svc.s.close()
        assert server.stop() == 0, "".join(server.output[-50:])
    assert len(unseal_secrets(VirtualFileSealer(Layout(directory).sealed_ledger_secret))) == 2
    assert_no_secrets("".join(server.output), secrets_of(directory, []))


def join_command(server: Server, directory: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "notarium",
        "join",
        str(directory),
        "--target",
        server.url,
        "--service-cert",
        str(server.service_cert),
        "--host",
        "node2.example",
        "--host",
        "10.9.8.7",
        "--address",
        NODE_ADDRESS,
        *extra,
    ]


def join(server: Server, directory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        join_command(server, directory, *extra),
        check=False,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
    )


def handshake(node_dir: Path, service_cert: Path, hostname: str) -> dict[str, Any]:
    """A TLS server with the node's certificate and key; a client that trusts the pinned service
    certificate only and checks ``hostname``. Returns the certificate the client verified."""
    layout = Layout(node_dir)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(layout.node_cert, layout.node_key)
    client_ctx = ssl.create_default_context(cadata=service_cert.read_text())
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"x")
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client_ctx.wrap_socket(raw, server_hostname=hostname) as tls,
            ):
                assert tls.recv(1) == b"x"
                peer = tls.getpeercert()
                assert peer is not None
                return dict(peer)
        finally:
            thread.join(10)


def check_joined(service: Service, node_dir: Path, output: str) -> str:
    """The joined node's directory is complete and consistent with the original service."""
    original, joined = Layout(service.server.directory), Layout(node_dir)
    node_key = load_private_ec(joined.node_key)
    node_id = key_id(node_key.public_key())
    # the same service identity: certificate and key
    assert joined.service_cert.read_bytes() == original.service_cert.read_bytes()
    service_cert = load_cert(joined.service_cert)
    assert (
        load_private_ec(joined.service_key).private_numbers() == load_private_ec(original.service_key).private_numbers()
    )
    # its node certificate: its own key, issued by the service key, accepted by TLS for its hosts
    node_cert = load_cert(joined.node_cert)
    assert node_cert.public_key() == node_key.public_key()
    check_endorsement(node_cert, service_cert, "the joined node's certificate")
    for hostname in ("node2.example", "10.9.8.7", "localhost"):
        handshake(node_dir, joined.service_cert, hostname)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(node_dir, joined.service_cert, "ledger.example")  # the first node's host, not this one's
    # the same ledger secret chain, through the same sealer as `notarium init`
    theirs = unseal_secrets(VirtualFileSealer(original.sealed_ledger_secret))
    ours = unseal_secrets(VirtualFileSealer(joined.sealed_ledger_secret))
    assert ours == theirs
    assert len(ours) == 2
    # notarium.json: the service's ledger, this node
    config, first = ServiceConfig.load(joined), ServiceConfig.load(original)
    assert (config.ledger_id, config.ledger_type) == (first.ledger_id, first.ledger_type)
    assert config.node_id == node_id
    assert set(config.hosts) == {"node2.example", "10.9.8.7"}
    # secrets are private files; the ledger is empty (its content comes from the replicated store)
    for path in (joined.service_key, joined.sealed_ledger_secret, joined.node_key):
        assert os.stat(path).st_mode & 0o077 == 0, path
    assert os.stat(node_dir / "secrets").st_mode & 0o077 == 0
    assert list(joined.ledger_dir.iterdir()) == []
    # the service lists it Trusted, with its address
    listed = service.nodes()[node_id]
    assert (listed["status"], listed["address"]) == ("Trusted", NODE_ADDRESS)
    # nothing secret was printed
    assert_no_secrets(output, secrets_of(service.server.directory, [joined.node_key]))
    return node_id


# --- (a) admitted by governance ----------------------------------------------------------------


def test_join_admitted_by_governance(service: Service, tmp_path: Path) -> None:
    node_dir = tmp_path / "node2"
    first = join(service.server, node_dir, "--wait", "0")
    assert first.returncode == EXIT_PENDING, first.stdout + first.stderr
    node_id = key_id(load_private_ec(Layout(node_dir).node_key).public_key())
    assert f"node {node_id} is Pending" in first.stdout
    assert "transition_node_to_trusted" in first.stdout
    assert "run the same command again" in first.stderr
    assert sorted(p.relative_to(node_dir).as_posix() for p in node_dir.rglob("*")) == ["node", "node/node_privk.pem"]
    assert service.nodes()[node_id] == {"nodeId": node_id, "status": "Pending", "address": NODE_ADDRESS}
    assert node_id not in service.quoted()  # only Trusted nodes have an enclave quote (issue #16)

    # asking again is idempotent: still Pending, the same key, nothing written
    before = service.committed()
    again = join(service.server, node_dir, "--wait", "0")
    assert again.returncode == EXIT_PENDING, again.stdout + again.stderr
    assert f"resuming the join of node {node_id}" in again.stdout
    assert service.committed() == before
    assert service.nodes()[node_id]["status"] == "Pending"

    # a third run waits; the members admit the node meanwhile; the run completes
    waiting = subprocess.Popen(
        join_command(service.server, node_dir, "--wait", "60"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        assert waiting.stdout is not None
        lines = []
        for line in waiting.stdout:  # the run has asked once and been told Pending
            lines.append(line)
            if "is Pending" in line:
                break
        service.accept("transition_node_to_trusted", {"node_id": node_id})
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    output = "".join(lines) + out + err
    assert waiting.returncode == 0, output
    assert f"node {node_id} is Trusted" in output
    check_joined(service, node_dir, output)
    assert node_id in service.quoted()

    # a finished join is not repeated; the service still answers Trusted with the same certificate
    done = join(service.server, node_dir, "--wait", "0")
    assert done.returncode == 1
    assert "already a service directory" in done.stderr
    key = load_private_ec(Layout(node_dir).node_key)
    body = make_join_request(key, hosts=["node2.example"], address=NODE_ADDRESS, created_at=int(time.time()))
    before = service.committed()
    r = service.post("/node/join", json.dumps(body).encode())
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "Trusted"
    assert r.json()["nodeCertificate"] == Layout(node_dir).node_cert.read_text()
    assert service.committed() == before  # the recorded certificate is reused: nothing new to write


# --- (b) the auto-trust policy -------------------------------------------------------------------


def test_join_with_auto_trust_completes_at_once(tmp_path: Path) -> None:
    directory = tmp_path / "ledger"
    init_service(directory)
    with running(directory, "--auto-trust-virtual-nodes") as server:
        assert "--auto-trust-virtual-nodes: any host that can reach this port" in "".join(server.output)
        svc = Service(server)
        svc.accept("trigger_ledger_rekey")
        node_dir = tmp_path / "node2"
        done = join(server, node_dir, "--wait", "0")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "is Pending" not in done.stdout
        node_id = check_joined(svc, node_dir, done.stdout + done.stderr)
        quotes = svc.s.get(server.url + "/app/enclaveQuotes", cert=str(server.admin_pem), timeout=30)
        assert node_id in quotes.json()["enclaveQuotes"]
        svc.s.close()
        assert server.stop() == 0
    assert_no_secrets("".join(server.output), secrets_of(directory, [node_dir / "node" / "node_privk.pem"]))


# --- (c) refusals write nothing ------------------------------------------------------------------


def refused(r: requests.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    error = r.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    return str(error["message"])


def _sign(key: ec.EllipticCurvePrivateKey, fields: dict[str, Any]) -> dict[str, Any]:
    """Sign ``fields`` as a join request is signed (the documented canonical form)."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    signature = key.sign(b"notarium/join-request/v1\x00" + canonical, ec.ECDSA(hashes.SHA384()))
    return {**fields, "signature": base64.b64encode(signature).decode()}


def _request(key: ec.EllipticCurvePrivateKey, **changes: Any) -> dict[str, Any]:
    fields = make_join_request(key, hosts=["node3.example"], address="https://node3.example:9443", created_at=0)
    fields = {k: v for k, v in fields.items() if k != "signature"}
    return _sign(key, {**fields, "createdAt": int(time.time()), **changes})


def bad_requests() -> dict[str, tuple[bytes, int, str]]:
    victim, attacker = new_ec_key(), new_ec_key()
    stolen = _request(attacker)  # the victim's key and quote, signed by the attacker
    stolen = _sign(
        attacker,
        {
            **{k: v for k, v in stolen.items() if k != "signature"},
            "publicKey": public_pem(victim.public_key()).decode(),
            "quote": virtual_quote(victim.public_key()),
        },
    )
    key = new_ec_key()
    tampered = _request(key)
    tampered["hosts"] = ["node3.example", "ledger.example"]
    return {
        "not json": (b"{not json", 400, "InvalidInput"),
        "empty": (b"", 400, "InvalidInput"),
        "invalid utf-8": (b'{"format": "\xff"}', 400, "InvalidInput"),
        "array": (b"[]", 400, "InvalidInput"),
        "missing fields": (json.dumps({"format": "notarium-join-request/1"}).encode(), 400, "InvalidInput"),
        "not P-384": (json.dumps(_request(key, publicKey="-----BEGIN PUBLIC KEY-----")).encode(), 400, "InvalidInput"),
        "key not held": (json.dumps(stolen).encode(), 401, "InvalidSignature"),
        "altered after signing": (json.dumps(tampered).encode(), 401, "InvalidSignature"),
        "quote for another key": (
            json.dumps(_request(key, quote=virtual_quote(new_ec_key().public_key()))).encode(),
            401,
            "InvalidQuote",
        ),
        "not a virtual quote": (
            json.dumps(_request(key, quote={**virtual_quote(key.public_key()), "platform": "SNP"})).encode(),
            401,
            "InvalidQuote",
        ),
        "stale": (json.dumps(_request(key, createdAt=int(time.time()) - 3600)).encode(), 403, "RequestExpired"),
        "oversized": (b'{"format": "' + b"x" * (70 << 10) + b'"}', 413, "RequestTooLarge"),
    }


BAD = list(bad_requests())


@pytest.mark.parametrize("name", BAD)
def test_bad_join_requests_are_refused_and_write_nothing(service: Service, name: str) -> None:
    body, status, code = bad_requests()[name]
    before, nodes = service.committed(), service.nodes()
    message = refused(service.post("/node/join", body), status, code)
    if code == "InvalidSignature":
        assert "node key" in message
    if code == "InvalidQuote":
        assert "quote" in message
    assert service.committed() == before
    assert service.nodes() == nodes


def test_a_retired_node_is_refused(service: Service) -> None:
    key = new_ec_key()
    node_id = key_id(key.public_key())
    r = service.post("/node/join", json.dumps(_request(key)).encode())
    assert r.status_code == 200, r.text
    assert r.json() == {"state": "Pending", "nodeId": node_id}
    service.accept("transition_node_to_trusted", {"node_id": node_id})
    r = service.post("/node/join", json.dumps(_request(key)).encode())
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "Trusted"
    service.accept("remove_node", {"node_id": node_id})
    assert service.nodes()[node_id]["status"] == "Retired"

    before, nodes = service.committed(), service.nodes()
    message = refused(service.post("/node/join", json.dumps(_request(key)).encode()), 403, "NodeRetired")
    assert "Retired" in message
    assert service.committed() == before
    assert service.nodes() == nodes


def test_a_removed_pending_node_may_ask_again(service: Service) -> None:
    """remove_node deletes a Pending node's record: it is unknown again, and Pending if it asks."""
    key = new_ec_key()
    node_id = key_id(key.public_key())
    assert service.post("/node/join", json.dumps(_request(key)).encode()).json()["state"] == "Pending"
    service.accept("remove_node", {"node_id": node_id})
    assert node_id not in service.nodes()
    assert service.post("/node/join", json.dumps(_request(key)).encode()).json()["state"] == "Pending"
    assert service.nodes()[node_id]["status"] == "Pending"
