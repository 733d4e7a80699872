"""The virtual platform's attestation evidence of a node, as ``/app/enclaveQuotes`` shows it
(docs/design/trust-model.md, "Attestation").

notarium has no TEE: it runs as CCF's *virtual* platform, whose evidence anyone can produce and which
attests nothing. It is still given in full, in CCF's shape for the virtual platform, so that a
client reading ACL's quotes finds what it looks for and sees plainly that it is virtual::

    evidence  = canonical JSON {"measurement": VIRTUAL_MEASUREMENT,
                                "report_data": base64(SHA-256 of the node's public key)}
    raw       = lower-case hex of the evidence's bytes              (ACL's ``raw``)
    mrenclave = lower-case hex of VIRTUAL_MEASUREMENT's UTF-8 bytes (ACL's measurement field)

``report_data`` binds the evidence to the node: it is the node id (SHA-256 of the DER
SubjectPublicKeyInfo of the node key), as in the quote a node presents to join
(:func:`notarium.cluster.join.virtual_quote`). The measurement is CCF's for its virtual platform.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from notarium.cluster.join import QUOTE_FORMAT

VIRTUAL_MEASUREMENT = "Insecure hard-coded virtual measurement v1"  # CCF's, for the virtual platform
_NODE_ID = re.compile(r"[0-9a-f]{64}")


def virtual_evidence(node_id: str) -> bytes:
    """The virtual platform's evidence for the node ``node_id`` (64 lower-case hex digits)."""
    if not _NODE_ID.fullmatch(node_id):
        raise ValueError("a node id is 64 lower-case hex digits")
    document = {"measurement": VIRTUAL_MEASUREMENT, "report_data": base64.b64encode(bytes.fromhex(node_id)).decode()}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def enclave_quote(node_id: str) -> dict[str, Any]:
    """A node's entry of ``/app/enclaveQuotes``: ACL's fields, plus notarium's ``platform`` and ``virtual``."""
    return {
        "nodeId": node_id,
        "quoteVersion": QUOTE_FORMAT,
        "raw": virtual_evidence(node_id).hex(),
        "mrenclave": VIRTUAL_MEASUREMENT.encode().hex(),
        "platform": "Virtual",
        "virtual": True,
    }


def is_node_id(value: str) -> bool:
    return bool(_NODE_ID.fullmatch(value))
