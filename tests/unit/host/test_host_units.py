"""The host's parts without a process: ledger names, principals, the registry and its purge, and a
provisioned ledger directory (its users are exactly the ARM principals; no key of a user is kept)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from integration.server import new_identity
from notarium.auditing import audit, find_target
from notarium.host.credentials import HostLayout, prepare
from notarium.host.ledgers import LedgerSettings
from notarium.host.manager import HostConfig, LedgerManager
from notarium.host.names import InvalidRequestError, cert_principals, check_name, load_cert, name_key, valid_name
from notarium.host.provision import create_ledger_directory
from notarium.host.registry import DELETED, SUCCEEDED, LedgerRecord, Registry, iso
from notarium.host.requests import parse_ledger
from notarium.ledger import EngineConfig, open_ledger
from notarium.server.config import ServerConfig
from notarium.verify import tables


@pytest.mark.parametrize("name", ["abc", "my-ledger-1", "A" + "b" * 33 + "9", "x1y"])
def test_valid_names(name: str) -> None:
    assert valid_name(name)
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["ab", "1abc", "-abc", "abc-", "a_b_c", "a" * 36, "", "ab c", "ünï"])
def test_invalid_names_are_refused_with_the_arm_code(name: str) -> None:
    assert not valid_name(name)
    with pytest.raises(InvalidRequestError) as caught:
        check_name(name)
    assert caught.value.code == "InvalidResourceName"


def test_names_are_unique_regardless_of_case() -> None:
    assert name_key("My-Ledger") == name_key("my-ledger")


def test_certificates_in_any_pem_form(tmp_path: Path) -> None:
    combined, user_id = new_identity(tmp_path, "u")
    pem = combined.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    one_line = pem.replace("\n", "")  # as in ARM's examples
    bare = "".join(pem.splitlines()[1:-1])  # base64 DER alone
    for text in (pem, one_line, bare):
        assert load_cert(text).public_bytes(Encoding.PEM).decode() == pem
    (principal,) = cert_principals([{"cert": one_line, "ledgerRoleName": "administrator"}])
    assert principal.role == "Administrator"
    assert principal.user_id == user_id
    with pytest.raises(InvalidRequestError):
        cert_principals([{"cert": "not a certificate", "ledgerRoleName": "Reader"}])
    with pytest.raises(InvalidRequestError):
        cert_principals([{"cert": pem, "ledgerRoleName": "Owner"}])


def test_parse_ledger_defaults_and_refusals() -> None:
    request = parse_ledger({"properties": {}}, "local")
    assert (request.location, request.ledger_type, request.tags_given) == ("local", "Private", False)
    for bad in ({"properties": {"ledgerType": "Secret"}}, {"tags": ["x"]}, {"properties": []}, {"location": 3}):
        with pytest.raises(InvalidRequestError):
            parse_ledger(bad, "local")


def _record(name: str, state: str, **extra: str) -> LedgerRecord:
    now = iso(datetime.datetime.now(datetime.UTC))
    return LedgerRecord(name, "sub", "rg", "local", "Private", state, now, "t", "Key", now, "t", "Key", **extra)


def test_registry_round_trip_and_purge(tmp_path: Path) -> None:
    layout = HostLayout(tmp_path / "host")
    credentials = prepare(layout)
    assert (layout.token.stat().st_mode & 0o777) == 0o600
    assert (layout.ca_key.stat().st_mode & 0o777) == 0o600
    registry = Registry.load(layout.root)
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    future = datetime.datetime(2999, 1, 1, tzinfo=datetime.UTC)
    registry.put(_record("Old", DELETED, deleted_at=iso(past), purge_after=iso(past)))
    registry.put(_record("recent", DELETED, deleted_at=iso(past), purge_after=iso(future)))
    registry.put(_record("live", SUCCEEDED))
    (layout.ledger_dir("old") / "ledger").mkdir(parents=True)
    (layout.ledger_dir("recent")).mkdir(parents=True)
    assert (registry.path.stat().st_mode & 0o777) == 0o600
    loaded = Registry.load(layout.root)
    assert [r.name for r in loaded] == ["live", "Old", "recent"]
    assert [r.name for r in loaded.listed("SUB", "RG")] == ["live"]
    settings = LedgerSettings(ServerConfig(), EngineConfig())
    manager = LedgerManager(layout, credentials, loaded, HostConfig(), settings)
    assert manager.purge() == ["Old"]
    assert not layout.ledger_dir("old").exists()
    assert layout.ledger_dir("recent").exists()
    assert Registry.load(layout.root).get("OLD") is None
    events = [json.loads(line) for line in registry.events.read_text().splitlines()]
    assert [(e["event"], e["ledger"]) for e in events] == [("purged", "Old")]


def test_provisioned_ledger_has_exactly_the_arm_principals(tmp_path: Path) -> None:
    combined, admin_id = new_identity(tmp_path, "admin")
    _, reader_cert_id = new_identity(tmp_path, "reader")
    reader_pem = (tmp_path / "reader_combined.pem").read_text().split("-----END CERTIFICATE-----")[0]
    admin_pem = combined.read_text().split("-----END CERTIFICATE-----")[0]
    certs = cert_principals(
        [
            {"cert": admin_pem + "-----END CERTIFICATE-----", "ledgerRoleName": "Administrator"},
            {"cert": reader_pem + "-----END CERTIFICATE-----", "ledgerRoleName": "Reader"},
        ]
    )
    directory = tmp_path / "ledgers" / "alpha"
    create_ledger_directory(directory, "alpha", "Public", certs, [])
    assert not list(directory.glob("user0_*"))
    with open_ledger(directory) as ledger:
        users = {json.loads(v)["userId"]: json.loads(v)["assignedRoles"] for v in ledger.state(tables.USERS).values()}
        assert ledger.service.ledger_id == "alpha"
        assert ledger.service.ledger_type == "Public"
    assert users == {admin_id: ["Administrator"], reader_cert_id: ["Reader"]}
    assert audit(find_target(directory)).transactions >= 3  # genesis, its signature, the first users
    with pytest.raises(ValueError, match="Administrator"):
        create_ledger_directory(tmp_path / "ledgers" / "beta", "beta", "Private", certs[1:], [])
    assert not (tmp_path / "ledgers" / "beta").exists()
