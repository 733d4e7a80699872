"""The envelope, wrapped-key and grant formats (notarium.client.e2e.crypto, keys): objects another
JOSE implementation (jwcrypto, tests/vectors/e2e) made open with notarium's code; every alteration
of untrusted bytes is a VerificationError naming the check; nothing secret in a repr."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from notarium.client.e2e import crypto
from notarium.client.e2e.keys import ReaderCard, ReaderKey
from notarium.client.errors import ClientError
from notarium.errors import VerificationError

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "vectors" / "e2e" / "vectors.json").read_text()
)


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _enc(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _data_key() -> crypto.DataKey:
    return crypto.DataKey(VECTORS["dataKey"]["kid"], _b64(VECTORS["dataKey"]["k"]))


def _reader() -> ReaderKey:
    return ReaderKey.from_json(VECTORS["keyFile"])


def _flip(token: str, part: int) -> str:
    """``token`` with one bit of one of its parts changed."""
    pieces = token.split(".")
    raw = bytearray(_b64(pieces[part]))
    raw[len(raw) // 2] ^= 0x01
    pieces[part] = _enc(bytes(raw))
    return ".".join(pieces)


def _with_header(token: str, **changes: Any) -> str:
    pieces = token.split(".")
    header = json.loads(_b64(pieces[0])) | changes
    pieces[0] = _enc(json.dumps(header).encode())
    return ".".join(pieces)


# --- objects another implementation made ---------------------------------------------------------


def test_an_envelope_made_by_jwcrypto_opens() -> None:
    header = crypto.envelope_header(VECTORS["envelope"])
    assert header == crypto.EnvelopeHeader(VECTORS["dataKey"]["kid"], VECTORS["collection"])
    assert crypto.open_envelope(VECTORS["envelope"], _data_key(), VECTORS["collection"]) == VECTORS["plaintext"]


def test_a_key_wrapped_by_jwcrypto_unwraps_to_the_data_key() -> None:
    reader = _reader()
    assert reader.reader_id == VECTORS["readerId"]
    key = crypto.unwrap(VECTORS["wrapped"], reader, VECTORS["collection"], VECTORS["dataKey"]["kid"])
    assert key == _data_key()


def test_a_grant_signed_by_jwcrypto_verifies_and_names_its_writer() -> None:
    signed = crypto.read_grant(VECTORS["grant"])
    assert signed.writer_id == VECTORS["writerId"]
    assert signed.payload["kid"] == VECTORS["dataKey"]["kid"]
    assert signed.payload["readers"][0]["key"] == VECTORS["wrapped"]


# --- round trips -----------------------------------------------------------------------------------


def test_seal_then_open_binds_key_and_collection() -> None:
    key = crypto.DataKey.generate()
    envelope = crypto.seal("héllo\nworld", key, "c1")
    assert crypto.envelope_header(envelope) == crypto.EnvelopeHeader(key.kid, "c1")
    assert crypto.open_envelope(envelope, key, "c1") == "héllo\nworld"
    assert "héllo" not in envelope
    assert crypto.seal("same", key, "c1") != crypto.seal("same", key, "c1")  # a fresh content key and IV each time
    with pytest.raises(VerificationError) as moved:
        crypto.open_envelope(envelope, key, "c2")
    assert moved.value.check == "e2e-collection"
    with pytest.raises(VerificationError, match="another data key"):
        crypto.open_envelope(envelope, crypto.DataKey.generate(), "c1")
    other = crypto.DataKey(key.kid, crypto.DataKey.generate().secret)  # same id, wrong bits
    with pytest.raises(VerificationError, match="does not open"):
        crypto.open_envelope(envelope, other, "c1")


def test_wrap_then_unwrap_only_for_its_reader_and_collection() -> None:
    alice, bob = ReaderKey.generate(), ReaderKey.generate()
    key = crypto.DataKey.generate()
    wrapped = crypto.wrap(key, alice.card.enc, "c1")
    assert crypto.unwrap(wrapped, alice, "c1", key.kid) == key
    with pytest.raises(VerificationError, match="another collection or reader"):
        crypto.unwrap(wrapped, bob, "c1", key.kid)
    with pytest.raises(VerificationError, match="another collection or reader"):
        crypto.unwrap(wrapped, alice, "c2", key.kid)
    with pytest.raises(VerificationError, match="another key than its grant names"):
        crypto.unwrap(wrapped, alice, "c1", "other-kid")
    relabelled = _with_header(wrapped, kid=bob.reader_id)  # addressed to Bob, still Alice's ciphertext
    with pytest.raises(VerificationError, match="does not open"):
        crypto.unwrap(relabelled, bob, "c1", key.kid)


def test_sign_then_read_grant() -> None:
    writer = ReaderKey.generate()
    grant = crypto.sign_grant({"a": 1, "b": [2]}, writer)
    assert crypto.is_grant(grant)
    signed = crypto.read_grant(grant)
    assert (signed.writer_id, signed.payload) == (writer.writer_id, {"a": 1, "b": [2]})


# --- untrusted bytes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("part", [0, 1, 2, 3, 4])
def test_an_altered_envelope_fails_whatever_part_changed(part: int) -> None:
    altered = _flip(VECTORS["envelope"], part)
    with pytest.raises(VerificationError):
        crypto.open_envelope(altered, _data_key(), VECTORS["collection"])


@pytest.mark.parametrize("part", [1, 2, 3, 4])
def test_an_altered_wrapped_key_fails(part: int) -> None:
    with pytest.raises(VerificationError):
        crypto.unwrap(_flip(VECTORS["wrapped"], part), _reader(), VECTORS["collection"], VECTORS["dataKey"]["kid"])


@pytest.mark.parametrize("part", [1, 2])
def test_an_altered_grant_fails(part: int) -> None:
    with pytest.raises(VerificationError) as failed:
        crypto.read_grant(_flip(VECTORS["grant"], part))
    assert failed.value.check == "e2e-grant"


def test_a_grant_with_another_key_in_its_header_fails() -> None:
    other = ReaderKey.generate().card.sig.as_dict(private=False)
    with pytest.raises(VerificationError, match="does not verify"):
        crypto.read_grant(_with_header(VECTORS["grant"], jwk=other))


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "none"},
        {"alg": "HS256"},
        {"jwk": {"kty": "oct", "k": "AAAA"}},
        {"jwk": {**VECTORS["keyFile"]["sig"]}},  # a private key in a header is refused too
    ],
)
def test_grants_with_other_algorithms_or_keys_are_refused(header: dict[str, Any]) -> None:
    with pytest.raises(VerificationError):
        crypto.read_grant(_with_header(VECTORS["grant"], **header))


@pytest.mark.parametrize(
    "change",
    [{"alg": "dir"}, {"enc": "A128GCM"}, {"kid": 7}, {"collection": None}, {"alg": "ECDH-ES+A256KW"}],
)
def test_envelope_headers_with_other_algorithms_or_missing_fields_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(VerificationError):
        crypto.open_envelope(_with_header(VECTORS["envelope"], **change), _data_key(), VECTORS["collection"])


@pytest.mark.parametrize(
    "text",
    ["hello", "", "a.b.c.d.e", "....", VECTORS["grant"], _with_header(VECTORS["envelope"], typ="JWE"), "e30.x.y.z.w"],
)
def test_ordinary_text_is_not_an_envelope(text: str) -> None:
    assert crypto.envelope_header(text) is None
    with pytest.raises(VerificationError, match="not an e2e envelope"):
        crypto.open_envelope(text, _data_key(), VECTORS["collection"])


@pytest.mark.parametrize(
    "text", ["x", "a.b.c", "e30.e30.e30", VECTORS["envelope"], "eyJ0eXAiOiJub3Rhcml1bS1lMmUtZ3JhbnQrandzIn0.!.!"]
)
def test_anything_but_a_grant_fails_as_a_grant(text: str) -> None:
    with pytest.raises(VerificationError):
        crypto.read_grant(text)


def test_a_wrapped_key_of_the_wrong_length_is_refused() -> None:
    reader = ReaderKey.generate()
    short = crypto.DataKey("k", b"\x01" * 16)
    with pytest.raises(VerificationError, match="not 256 bits"):
        crypto.unwrap(crypto.wrap(short, reader.card.enc, "c"), reader, "c", "k")


# --- key files and cards --------------------------------------------------------------------------


def test_key_file_is_private_never_overwritten_and_its_card_public(tmp_path: Path) -> None:
    key = ReaderKey.generate()
    card_path = key.save(tmp_path / "alice.key")
    assert card_path == tmp_path / "alice.key.pub"
    assert stat.S_IMODE((tmp_path / "alice.key").stat().st_mode) == 0o600
    loaded = ReaderKey.load(tmp_path / "alice.key")
    assert (loaded.reader_id, loaded.writer_id) == (key.reader_id, key.writer_id)
    card = ReaderCard.load(card_path)
    assert (card.reader_id, card.writer_id) == (key.reader_id, key.writer_id)
    assert '"d"' not in card_path.read_text()
    with pytest.raises(FileExistsError):
        ReaderKey.generate().save(tmp_path / "alice.key")
    assert ReaderKey.load(tmp_path / "alice.key").reader_id == key.reader_id


def test_reprs_show_no_secret() -> None:
    key = crypto.DataKey.generate()
    assert key.secret.hex() not in repr(key)
    assert crypto.b64url(key.secret) not in repr(key)
    reader = ReaderKey.generate()
    d = reader.to_json()["enc"]["d"]
    assert d not in repr(reader)
    assert reader.reader_id in repr(reader)


def test_cards_and_key_files_are_checked() -> None:
    card = ReaderKey.generate().card.to_json()
    with pytest.raises(VerificationError, match="thumbprint"):
        ReaderCard.from_json({**card, "readerId": "x"})
    with pytest.raises(VerificationError, match="private key"):
        ReaderCard.from_json({**card, "enc": VECTORS["keyFile"]["enc"]})
    with pytest.raises(VerificationError, match="P-256"):
        ReaderCard.from_json({**card, "sig": {"kty": "EC", "crv": "P-384", "x": "a", "y": "b"}})
    with pytest.raises(VerificationError, match="valid P-256"):
        ReaderCard.from_json({**card, "sig": {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}})
    with pytest.raises(VerificationError, match="not a notarium reader card"):
        ReaderCard.from_json(VECTORS["keyFile"])
    with pytest.raises(VerificationError, match="P-256 private"):
        ReaderKey.from_json({**VECTORS["keyFile"], "enc": card["enc"]})


def test_unreadable_key_files_are_client_errors(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="cannot read"):
        ReaderKey.load(tmp_path / "missing")
    (tmp_path / "bad").write_text("{")
    with pytest.raises(ClientError, match="not JSON"):
        ReaderKey.load(tmp_path / "bad")
    (tmp_path / "card").write_text(json.dumps(ReaderKey.generate().card.to_json()))
    with pytest.raises(ClientError, match="not a notarium e2e key file"):
        ReaderKey.load(tmp_path / "card")
