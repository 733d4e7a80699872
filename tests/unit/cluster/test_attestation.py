"""The virtual platform's evidence in ``/app/enclaveQuotes`` (notarium.cluster.attestation), on its own."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from notarium.cluster.attestation import VIRTUAL_MEASUREMENT, enclave_quote, virtual_evidence
from notarium.cluster.join import virtual_quote
from notarium.verify.keys import key_id


def test_the_evidence_is_ccfs_virtual_shape_bound_to_the_node_key() -> None:
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    node_id = key_id(key)
    evidence = json.loads(virtual_evidence(node_id))
    assert evidence == {
        "measurement": VIRTUAL_MEASUREMENT,
        "report_data": base64.b64encode(bytes.fromhex(node_id)).decode(),
    }
    # the same binding as the quote the node presented to join
    assert base64.b64decode(evidence["report_data"]).hex() == virtual_quote(key)["reportData"]


def test_a_quote_in_acls_fields_says_it_is_virtual() -> None:
    node_id = "ab" * 32
    quote = enclave_quote(node_id)
    assert quote["nodeId"] == node_id
    assert quote["quoteVersion"] == "Insecure_Virtual"
    assert (quote["platform"], quote["virtual"]) == ("Virtual", True)
    assert bytes.fromhex(quote["raw"]) == virtual_evidence(node_id)
    assert bytes.fromhex(quote["mrenclave"]).decode() == VIRTUAL_MEASUREMENT
    assert virtual_evidence(node_id) == virtual_evidence(node_id)  # deterministic: canonical JSON


@pytest.mark.parametrize("bad", ["", "AB" * 32, "ab" * 31, "ab" * 33, "zz" * 32])
def test_only_node_ids_have_evidence(bad: str) -> None:
    with pytest.raises(ValueError, match="node id"):
        virtual_evidence(bad)
