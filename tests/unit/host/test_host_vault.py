"""A hosted ledger's identity bundle (notarium host --store): sealed under the store key, bound to its schema."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from notarium.host.vault import VaultError, key_check, load_or_create_key, pack, unpack


def _ledger(root: Path) -> Path:
    (root / "secrets").mkdir(parents=True)
    (root / "node").mkdir()
    (root / "ledger").mkdir()
    (root / "notarium.json").write_text("{}")
    (root / "secrets" / "ledger_secret.sealed").write_bytes(b"secret-bytes")
    (root / "node" / "node_privk.pem").write_text("node key")
    (root / "node" / "view").write_text("3")
    (root / "ledger" / "ledger_1.committed").write_bytes(b"chunk")
    return root


def test_a_bundle_opens_with_its_key_and_schema_only(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "store_key", create=True)
    assert load_or_create_key(tmp_path / "store_key", create=False) == key
    assert oct((tmp_path / "store_key").stat().st_mode & 0o777) == "0o600"
    blob = pack(_ledger(tmp_path / "src"), "ledger_x_1", key)
    assert b"secret-bytes" not in blob
    unpack(blob, tmp_path / "copy", "ledger_x_1", key)
    assert (tmp_path / "copy" / "secrets" / "ledger_secret.sealed").read_bytes() == b"secret-bytes"
    assert (tmp_path / "copy" / "ledger").is_dir()
    assert not any((tmp_path / "copy" / "ledger").iterdir())  # chunks come from the log, not the bundle
    assert not (tmp_path / "copy" / "node" / "view").exists()
    with pytest.raises(VaultError, match="store_key"):
        unpack(blob, tmp_path / "other-key", "ledger_x_1", os.urandom(32))
    with pytest.raises(VaultError):
        unpack(blob, tmp_path / "other-schema", "ledger_y_1", key)  # copied to another ledger's row
    with pytest.raises(VaultError, match="malformed"):
        unpack(b"\x01short", tmp_path / "short", "ledger_x_1", key)
    assert key_check(key) != key_check(os.urandom(32))
    assert key.hex() not in key_check(key)
