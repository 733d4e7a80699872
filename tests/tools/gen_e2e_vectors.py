"""Generate ``tests/vectors/e2e/vectors.json``: end-to-end objects made by **jwcrypto**, an
implementation independent of the ``joserfc`` notarium uses, for ``tests/unit/e2e/test_crypto.py``.

The file holds a reader's key file (two P-256 key pairs as private JWKs), a data key, and what a
writer using another JOSE library would produce for them: an entry envelope (JWE A256KW +
A256GCM, the collection bound in the protected header), the data key wrapped to the reader (JWE
ECDH-ES+A256KW, payload the ``oct`` JWK), and a grant signed with ES256 (JWS, the signer's key in
the header). JWE is randomised (content keys, IVs, ephemeral keys): regenerating gives other bytes
with the same meaning, so the committed file is the vector and this script its provenance.

Usage::

    python tests/tools/gen_e2e_vectors.py     # (re)write the vector file
"""

from __future__ import annotations

import json
from pathlib import Path

from jwcrypto import jwe, jwk, jws
from jwcrypto.common import json_encode

OUT = Path(__file__).resolve().parent.parent / "vectors" / "e2e" / "vectors.json"
COLLECTION = "vectors:e2e ✓"  # not ASCII on purpose
KID = "vector-key-1"
PLAINTEXT = "a sealed entry: 100 € to Bob"


def main() -> None:
    enc = jwk.JWK.generate(kty="EC", crv="P-256")
    sig = jwk.JWK.generate(kty="EC", crv="P-256")
    writer = jwk.JWK.generate(kty="EC", crv="P-256")  # another writer (its grant)
    data = jwk.JWK.generate(kty="oct", size=256, kid=KID)
    reader_id = enc.thumbprint()

    envelope = jwe.JWE(
        PLAINTEXT.encode(),
        protected=json_encode(
            {"alg": "A256KW", "enc": "A256GCM", "typ": "notarium-e2e-entry+jwe", "kid": KID, "collection": COLLECTION}
        ),
    )
    envelope.add_recipient(data)

    oct_jwk = {"kty": "oct", "kid": KID, "k": json.loads(data.export())["k"]}
    wrapped = jwe.JWE(
        json.dumps(oct_jwk).encode(),
        protected=json_encode(
            {
                "alg": "ECDH-ES+A256KW",
                "enc": "A256GCM",
                "typ": "notarium-e2e-key+jwe",
                "cty": "jwk+json",
                "kid": reader_id,
                "collection": COLLECTION,
            }
        ),
    )
    wrapped.add_recipient(jwk.JWK(**json.loads(enc.export_public())))
    wrapped_text = wrapped.serialize(compact=True)

    payload = {
        "type": "notarium-e2e-grant",
        "v": 1,
        "collection": COLLECTION,
        "kid": KID,
        "epoch": 1,
        "previous": None,
        "readers": [{"id": reader_id, "enc": json.loads(enc.export_public()), "key": wrapped_text}],
    }
    grant = jws.JWS(json.dumps(payload).encode())
    grant.add_signature(
        writer,
        alg="ES256",
        protected=json_encode(
            {"alg": "ES256", "typ": "notarium-e2e-grant+jws", "jwk": json.loads(writer.export_public())}
        ),
    )

    vectors = {
        "generator": "tests/tools/gen_e2e_vectors.py (jwcrypto)",
        "collection": COLLECTION,
        "plaintext": PLAINTEXT,
        "keyFile": {
            "type": "notarium-e2e-key",
            "v": 1,
            "enc": json.loads(enc.export()),
            "sig": json.loads(sig.export()),
        },
        "readerId": reader_id,
        "writerId": writer.thumbprint(),
        "dataKey": {"kid": KID, "k": oct_jwk["k"]},
        "envelope": envelope.serialize(compact=True),
        "wrapped": wrapped_text,
        "grant": grant.serialize(compact=True),
    }
    OUT.write_text(json.dumps(vectors, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
