"""Test helper: another node directory of an existing service (what `notarium join` produces)."""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

from notarium.ledger import identity as ids
from notarium.ledger.layout import Layout
from notarium.verify import tables
from notarium.verify.keys import key_id


def new_node(service: Path, directory: Path) -> Path:
    """Another node of ``service``: same service identity and secrets, its own node key and
    certificate (issued by the service key), and no ledger yet (it fills from the log)."""
    shutil.copytree(service, directory, ignore=shutil.ignore_patterns("ledger", "index", "view", "LOCK"))
    layout = Layout(directory)
    key = ids.new_ec_key()
    service_key, service_cert = ids.load_private_ec(layout.service_key), ids.load_cert(layout.service_cert)
    now = datetime.datetime.now(datetime.UTC)
    cert = ids.node_certificate(key.public_key(), service_key, service_cert, hosts=[], now=now)
    layout.node_key.unlink()
    layout.node_cert.unlink()
    ids.write_secret(layout.node_key, ids.private_pem(key))
    ids.write_public(layout.node_cert, ids.cert_pem(cert))
    config = json.loads(layout.config.read_text())
    config["nodeId"] = key_id(key.public_key())
    layout.config.write_text(json.dumps(config, indent=2))
    return directory


def admission(node_dir: Path) -> dict[str, dict[bytes, bytes | None]]:
    """The write set that records ``node_dir``'s node as Trusted (what governance writes when it
    admits a node): without it, its signatures name an unknown node to auditors."""
    layout = Layout(node_dir)
    node_id = json.loads(layout.config.read_text())["nodeId"]
    info = {
        "status": "Trusted",
        "quote_info": {"format": "Insecure_Virtual", "quote": "", "endorsements": ""},
        "node_data": {"hosts": []},
        "ledger_secret_seqno": 1,
        "retired_committed": False,
    }
    return {
        tables.NODES_INFO: {node_id.encode(): json.dumps(info).encode()},
        tables.NODES_ENDORSED_CERTS: {node_id.encode(): layout.node_cert.read_bytes()},
    }
