"""``notarium init``: identities, file modes, certificate profiles, the genesis transaction."""

from __future__ import annotations

import datetime
import ipaddress
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from notarium.auditing import audit, find_target
from notarium.cli import main
from notarium.errors import ServiceError
from notarium.ledger import init_service, open_ledger
from notarium.ledger.layout import Layout, ServiceConfig
from notarium.verify.keys import check_endorsement, key_id

PRIVATE = [
    "secrets/service_privk.pem",
    "secrets/ledger_secret.sealed",
    "node/node_privk.pem",
    "member0_privk.pem",
    "member0_enc_privk.pem",
    "user0_privk.pem",
]


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_private_keys_are_owner_only(service: Path) -> None:
    for name in PRIVATE:
        mode = stat.S_IMODE((service / name).stat().st_mode)
        assert mode == 0o600, name
    assert stat.S_IMODE((service / "secrets").stat().st_mode) == 0o700


def test_certificate_profiles(service: Path) -> None:
    svc = _cert(service / "service_cert.pem")
    node = _cert(service / "node" / "node_cert.pem")
    assert svc.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert svc.issuer == svc.subject
    days = (svc.not_valid_after_utc - svc.not_valid_before_utc).days
    assert 3649 <= days <= 3651
    check_endorsement(node, svc)  # the service key issued the node certificate
    assert not node.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    ips = sans.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("127.0.0.1") in ips
    assert ipaddress.ip_address("::1") in ips
    eku = node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    node_days = (node.not_valid_after_utc - node.not_valid_before_utc).days
    assert 364 <= node_days <= 366
    now = datetime.datetime.now(datetime.UTC)
    for c in (svc, node, _cert(service / "user0_cert.pem"), _cert(service / "member0_cert.pem")):
        assert c.not_valid_before_utc <= now <= c.not_valid_after_utc
    config = ServiceConfig.load(Layout(service))
    assert config.node_id == key_id(node.public_key())  # type: ignore[arg-type]


def test_extra_host_and_validity(tmp_path: Path) -> None:
    d = tmp_path / "h"
    assert main(["init", str(d), "--host", "ledger.example", "--host", "10.1.2.3", "--node-cert-days", "30"]) == 0
    node = _cert(d / "node" / "node_cert.pem")
    sans = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "ledger.example" in sans.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("10.1.2.3") in sans.get_values_for_type(x509.IPAddress)
    assert (node.not_valid_after_utc - node.not_valid_before_utc).days in (30, 31)


def test_genesis_records_identities_and_is_signed(service: Path) -> None:
    report = audit(find_target(service))
    assert report.transactions == 2  # genesis, then its signature
    assert report.signatures == 1
    assert report.unsigned_tail == 0
    assert sorted(p.name for p in (service / "ledger").iterdir()) == ["ledger_1-2.committed"]
    raw = (service / "ledger" / "ledger_1-2.committed").read_bytes()
    for name in (
        "public:ccf.gov.service.info",
        "public:ccf.gov.nodes.endorsed_certificates",
        "public:ccf.gov.members.certs",
        "public:ccf.gov.users.certs",
    ):
        assert name.encode() in raw
    assert (service / "user0_cert.pem").read_bytes().strip() in raw  # user0 recorded in clear


def test_init_refuses_existing_service(service: Path) -> None:
    before = sorted(p.name for p in service.rglob("*"))
    with pytest.raises(ServiceError, match="refusing"):
        init_service(service)
    assert sorted(p.name for p in service.rglob("*")) == before
    assert main(["init", str(service)]) == 1


def test_init_refuses_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(ServiceError):
        init_service(tmp_path / "x")
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


def test_init_into_empty_directory_and_ledger_types(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    init_service(tmp_path / "empty", ledger_type="Public", ledger_id="my-ledger")
    cfg = json.loads((tmp_path / "empty" / "notarium.json").read_text())
    assert cfg["ledgerType"] == "Public"
    assert cfg["ledgerId"] == "my-ledger"
    with pytest.raises(ValueError, match="ledger type"):
        init_service(tmp_path / "bad", ledger_type="secret")
    with pytest.raises(ValueError, match="ledger id"):
        init_service(tmp_path / "bad2", ledger_id="-no-")
    assert not (tmp_path / "bad").exists()
    assert not (tmp_path / "bad2").exists()


def test_second_process_cannot_open_a_service_in_use(service: Path) -> None:
    led = open_ledger(service)
    try:
        with pytest.raises(ServiceError, match="in use"):
            open_ledger(service)
    finally:
        led.close()
    open_ledger(service).close()
