"""Limits on ``POST /node/join`` against a real ``notarium serve`` (issue #15; docs/design/ha.md
§Limits on joining). The endpoint asks no credential: anyone can make a key and a virtual quote.

- New nodes are recorded at most ``--join-rate`` a minute: beyond it 429 ``TooManyRequests`` in
  ACL's error format, nothing written; a node already Pending asking again is not limited.
- At most ``--max-pending-nodes`` are Pending: beyond it 503 ``TooManyPendingNodes``, nothing
  written, and no Pending node is evicted; a node the members trust frees its place.
- A Pending node expires ``--pending-node-ttl`` seconds after it asked (its record removed, its
  place freed), except one an Open proposal would trust: members about to trust a node never lose
  it, however many others ask. The age is in the ledger: it holds across a restart, and in a
  replicated service the new primary expires what the old one recorded.
- Out-of-range settings are refused at start with a clear error (exit 2).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from integration.server import Server, clean_env, running
from integration.test_ha import JOIN, Node, _kill
from integration.test_ha import Service as Replicated
from integration.test_join import Service, _request, refused
from integration.test_ops import assert_no_secrets, secrets_of
from notarium.ledger import init_service
from notarium.ledger.identity import new_ec_key
from notarium.verify.keys import key_id

WAIT_S = 60.0  # the most a bounded wait below waits for what it expects


def ask(svc: Service, key: ec.EllipticCurvePrivateKey) -> requests.Response:
    return svc.post("/node/join", json.dumps(_request(key)).encode())


def pending(svc: Service, key: ec.EllipticCurvePrivateKey) -> str:
    """Ask to join with ``key``; it must be answered Pending. Its node id."""
    r = ask(svc, key)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "Pending"
    return str(r.json()["nodeId"])


def eventually(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


@contextlib.contextmanager
def serving(directory: Path, *args: str) -> Iterator[Service]:
    if not directory.exists():
        init_service(directory)
    with running(directory, *args, verbose=1) as server:
        svc = Service(server)
        try:
            yield svc
        finally:
            svc.s.close()
            assert server.stop() == 0, "".join(server.output[-50:])
    assert_no_secrets("".join(server.output), secrets_of(directory, []))


def test_new_nodes_are_rate_limited(tmp_path: Path) -> None:
    with serving(tmp_path / "ledger", "--join-rate", "1") as svc:
        first = new_ec_key()
        node = pending(svc, first)
        before, nodes = svc.committed(), svc.nodes()
        message = refused(ask(svc, new_ec_key()), 429, "TooManyRequests")
        assert "at most 1 a minute" in message
        assert "--join-rate" in message
        assert "Retry in" in message
        assert svc.committed() == before
        assert svc.nodes() == nodes
        # a node already recorded is not a new one: asking again is answered, and writes nothing
        assert pending(svc, first) == node
        assert svc.committed() == before


def test_the_number_of_pending_nodes_is_capped(tmp_path: Path) -> None:
    with serving(tmp_path / "ledger", "--max-pending-nodes", "2", "--join-rate", "100") as svc:
        first, second = pending(svc, new_ec_key()), pending(svc, new_ec_key())
        before, nodes = svc.committed(), svc.nodes()
        third = new_ec_key()
        for _ in range(3):
            message = refused(ask(svc, third), 503, "TooManyPendingNodes")
            assert "2 nodes are already Pending" in message
            assert "--max-pending-nodes 2" in message
            assert "remove_node" in message
        # nothing written, and nobody evicted to make room
        assert svc.committed() == before
        assert svc.nodes() == nodes
        assert {n for n, v in nodes.items() if v["status"] == "Pending"} == {first, second}
        # a node the members trust no longer counts: its place is free
        svc.accept("transition_node_to_trusted", {"node_id": first})
        assert pending(svc, third) == key_id(third.public_key())
        refused(ask(svc, new_ec_key()), 503, "TooManyPendingNodes")


def test_pending_nodes_expire_unless_a_proposal_would_trust_them(tmp_path: Path) -> None:
    ttl = "2"
    with serving(tmp_path / "ledger", "--pending-node-ttl", ttl, "--max-pending-nodes", "2") as svc:
        wanted_key = new_ec_key()
        wanted = pending(svc, wanted_key)
        proposal = svc.gov(
            "propose", "--action", "transition_node_to_trusted", "--args", json.dumps({"node_id": wanted})
        )
        assert proposal["proposalState"] == "Open"  # member0 has not voted: the members are deciding
        stranger_key = new_ec_key()
        stranger = pending(svc, stranger_key)  # asked after the wanted node: it is younger
        refused(ask(svc, new_ec_key()), 503, "TooManyPendingNodes")
        eventually(f"the stranger's node expires ({ttl} s)", lambda: stranger not in svc.nodes())
        # the older node stays, Pending: an Open proposal would trust it
        assert svc.nodes()[wanted]["status"] == "Pending"
        # the place is free again; the expired node, asking again, is recorded anew
        assert pending(svc, stranger_key) == stranger
        assert svc.gov("vote", proposal["proposalId"], "--accept")["proposalState"] == "Accepted"
        r = ask(svc, wanted_key)
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "Trusted"
        eventually("the stranger's node expires again", lambda: stranger not in svc.nodes())
        assert svc.nodes()[wanted]["status"] == "Trusted"
        output = "".join(svc.server.output)
    assert "Pending node(s) expired (asked more than 2 s ago, not trusted)" in output


def test_expiry_holds_across_a_restart(tmp_path: Path) -> None:
    """The node's age is in its record, not in the server's memory: a service restarted with a
    shorter expiry removes a node recorded before it started."""
    directory = tmp_path / "ledger"
    with serving(directory) as svc:
        node = pending(svc, new_ec_key())
    with serving(directory, "--pending-node-ttl", "1") as svc:
        eventually("the node recorded before the restart expires", lambda: node not in svc.nodes())


# --- a replicated service --------------------------------------------------------------------------


class Cluster(Replicated):
    """test_ha's service, without --auto-trust-virtual-nodes: nodes are admitted by governance."""

    def start(self, directory: Path, *extra: str) -> Node:
        stack = contextlib.ExitStack()
        server = stack.enter_context(running(directory, "--store", self.dsn, "--lease-ttl", "1", *extra, timeout=60))
        node = Node(directory, server, stack)
        self.nodes.append(node)
        return node

    def join_by_vote(self, name: str, *extra: str) -> Node:
        directory, primary = self.root / name, self.primary()
        command = [*JOIN, str(directory), "--target", primary.url, "--service-cert", str(self.cert), "--wait"]
        first = subprocess.run(
            [*command, "0"], capture_output=True, text=True, timeout=60, env=clean_env(), check=False
        )
        assert first.returncode == 5, first.stdout + first.stderr  # Pending
        node_id = first.stdout.split("joining as node ")[1].split()[0]
        members = Service(Server(primary.url, self.root / "n0", primary.server.process))
        members.accept("transition_node_to_trusted", {"node_id": node_id})
        members.s.close()
        done = subprocess.run(
            [*command, "30"], capture_output=True, text=True, timeout=60, env=clean_env(), check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return self.start(directory, *extra)

    def nodes_of(self, node: Node) -> dict[str, str]:
        r = self.call(node, "GET", "/node/network/nodes")
        assert r.status_code == 200, r.text
        return {n["nodeId"]: n["status"] for n in r.json()["nodes"]}


@pytest.fixture
def cluster(tmp_path: Path, pg_dsn: str) -> Iterator[Cluster]:
    init_service(tmp_path / "n0")
    svc = Cluster(tmp_path, pg_dsn)
    try:
        yield svc
    finally:
        svc.stop()


def test_in_a_replicated_service_the_primary_expires_and_a_new_primary_takes_over(cluster: Cluster) -> None:
    """Joins through a backup are forwarded to the primary, which records and limits them; only the
    primary expires Pending nodes, each by the age in its record, so a new primary expires what
    the old one recorded (here the first node keeps them a day, the second two seconds)."""
    n0 = cluster.start(cluster.root / "n0", "--pending-node-ttl", "86400")
    assert cluster.primary() is n0
    n1 = cluster.join_by_vote("n1", "--pending-node-ttl", "2")
    eventually("n1 follows", lambda: cluster.state(n1).get("following") is True)
    key = new_ec_key()
    r = cluster.call(n1, "POST", "/node/join", json=_request(key), timeout=30)  # through the backup
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "Pending"
    stranger = key_id(key.public_key())
    eventually("the backup has the Pending node", lambda: cluster.nodes_of(n1).get(stranger) == "Pending")
    assert cluster.nodes_of(n0)[stranger] == "Pending"
    _kill(n0)
    assert cluster.primary(timeout=WAIT_S, other_than=n0) is n1
    eventually("the new primary expires the node the old one recorded", lambda: stranger not in cluster.nodes_of(n1))
    assert sorted(cluster.nodes_of(n1).values()) == ["Trusted", "Trusted"]  # the nodes themselves stay


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--join-rate", "0", "the join rate and the number of Pending nodes must be from 1 to 100000"),
        ("--max-pending-nodes", "-1", "the join rate and the number of Pending nodes must be from 1 to 100000"),
        ("--pending-node-ttl", "0", "the Pending node expiry must be from 1 to 31536000 seconds"),
    ],
)
def test_bad_limits_are_refused_at_start(tmp_path: Path, option: str, value: str, message: str) -> None:
    init_service(tmp_path / "ledger")
    p = subprocess.run(
        [sys.executable, "-m", "notarium", "serve", str(tmp_path / "ledger"), "--port", "0", option, value],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        check=False,
    )
    assert p.returncode == 2, p.stdout + p.stderr
    assert f"error: {message}" in p.stderr
