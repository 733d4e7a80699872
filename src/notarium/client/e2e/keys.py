"""A person's end-to-end keys: a private key file, and the public card given to writers.

A key file (``notarium keys new FILE``, mode 0600) holds two P-256 key pairs as private JWKs
(RFC 7517): ``enc``, to which writers wrap collections' data keys (JWE ECDH-ES+A256KW), and
``sig``, with which a writer signs the key grants it records (JWS ES256). Two keys, not one used
for both key agreement and signatures. The public card (``FILE.pub``) holds their public halves.

- the **reader id** is the RFC 7638 thumbprint (SHA-256) of the ``enc`` key: grants are addressed to it;
- the **writer id** is the thumbprint of the ``sig`` key: readers pin the writers they trust by it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from notarium.client.errors import ClientError
from notarium.errors import VerificationError

KEY_TYPE = "notarium-e2e-key"
CARD_TYPE = "notarium-e2e-reader"
CURVE = "P-256"


def public_ec_key(value: object, what: str) -> ECKey:
    """A P-256 public key from an untrusted JWK (a private part is refused: cards are public)."""
    if not isinstance(value, dict) or value.get("kty") != "EC" or value.get("crv") != CURVE:
        raise VerificationError(f"{what} is not a P-256 public JWK")
    if "d" in value:
        raise VerificationError(f"{what} holds a private key: share only the public card (.pub)")
    try:
        return ECKey.import_key({k: value[k] for k in ("kty", "crv", "x", "y")})
    except (JoseError, KeyError, TypeError, ValueError):
        raise VerificationError(f"{what} is not a valid P-256 public key") from None


def _private_ec_key(value: object, what: str) -> ECKey:
    if not isinstance(value, dict) or value.get("kty") != "EC" or value.get("crv") != CURVE or "d" not in value:
        raise VerificationError(f"{what} is not a P-256 private JWK")
    try:
        key = ECKey.import_key({k: value[k] for k in ("kty", "crv", "x", "y", "d")})
    except (JoseError, KeyError, TypeError, ValueError):
        raise VerificationError(f"{what} is not a valid P-256 private key") from None
    return key


@dataclass(frozen=True)
class ReaderCard:
    """The public half: what a writer needs to grant a reader the keys (and to trust its grants)."""

    enc: ECKey
    sig: ECKey

    @property
    def reader_id(self) -> str:
        return self.enc.thumbprint()

    @property
    def writer_id(self) -> str:
        return self.sig.thumbprint()

    def to_json(self) -> dict[str, Any]:
        return {
            "type": CARD_TYPE,
            "v": 1,
            "readerId": self.reader_id,
            "writerId": self.writer_id,
            "enc": self.enc.as_dict(private=False),
            "sig": self.sig.as_dict(private=False),
        }

    @classmethod
    def from_json(cls, value: object) -> ReaderCard:
        if not isinstance(value, dict) or value.get("type") != CARD_TYPE or value.get("v") != 1:
            raise VerificationError("not a notarium reader card (type notarium-e2e-reader, v 1)")
        card = cls(
            public_ec_key(value.get("enc"), "the card's enc key"), public_ec_key(value.get("sig"), "its sig key")
        )
        for field, actual in (("readerId", card.reader_id), ("writerId", card.writer_id)):
            if field in value and value[field] != actual:
                raise VerificationError(f"the card's {field} is not the thumbprint of its key")
        return card

    @classmethod
    def load(cls, path: Path) -> ReaderCard:
        try:
            return cls.from_json(json.loads(path.read_text()))
        except ValueError:
            raise VerificationError(f"{path} is not JSON") from None


class ReaderKey:
    """The private key file's two key pairs. Its ``repr`` shows only the ids."""

    def __init__(self, enc: ECKey, sig: ECKey) -> None:
        self.enc = enc
        self.sig = sig
        self.card = ReaderCard(
            ECKey.import_key(enc.as_dict(private=False)), ECKey.import_key(sig.as_dict(private=False))
        )

    def __repr__(self) -> str:
        return f"ReaderKey(reader_id={self.reader_id!r}, writer_id={self.writer_id!r})"

    @property
    def reader_id(self) -> str:
        return self.card.reader_id

    @property
    def writer_id(self) -> str:
        return self.card.writer_id

    @classmethod
    def generate(cls) -> ReaderKey:
        return cls(ECKey.generate_key(CURVE, private=True), ECKey.generate_key(CURVE, private=True))

    def to_json(self) -> dict[str, Any]:
        return {"type": KEY_TYPE, "v": 1, "enc": self.enc.as_dict(private=True), "sig": self.sig.as_dict(private=True)}

    @classmethod
    def from_json(cls, value: object) -> ReaderKey:
        if not isinstance(value, dict) or value.get("type") != KEY_TYPE or value.get("v") != 1:
            raise VerificationError("not a notarium e2e key file (type notarium-e2e-key, v 1)")
        return cls(_private_ec_key(value.get("enc"), "the enc key"), _private_ec_key(value.get("sig"), "the sig key"))

    @classmethod
    def load(cls, path: Path) -> ReaderKey:
        """The key file at ``path``; a file that cannot be read or is not a key is a :class:`ClientError`."""
        try:
            return cls.from_json(json.loads(path.read_text()))
        except OSError as exc:
            raise ClientError(f"cannot read the e2e key file {path}: {exc.strerror}") from None
        except ValueError:
            raise ClientError(f"the e2e key file {path} is not JSON") from None
        except VerificationError as exc:
            raise ClientError(f"the e2e key file {path}: {exc}") from None

    def save(self, path: Path) -> Path:
        """Write the key file (0600, never over an existing file) and its public card ``<path>.pub``;
        returns the card's path."""
        card = path.with_name(path.name + ".pub")
        for p in (path, card):
            if p.exists():
                raise FileExistsError(f"{p} exists: choose another name (keys are never overwritten)")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(self.to_json(), indent=2) + "\n")
        card.write_text(json.dumps(self.card.to_json(), indent=2) + "\n")
        return card
