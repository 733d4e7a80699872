"""Where a service directory keeps what (docs/design/service-directory.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notarium.errors import ServiceError

CONFIG_FORMAT = 1
LEDGER_TYPES = ("Private", "Public")


@dataclass(frozen=True, slots=True)
class Layout:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "notarium.json"

    @property
    def service_cert(self) -> Path:
        return self.root / "service_cert.pem"

    @property
    def service_key(self) -> Path:
        return self.root / "secrets" / "service_privk.pem"

    @property
    def sealed_ledger_secret(self) -> Path:
        # Virtual platform: the "sealed" ledger secret is a 0600 file (docs/design/trust-model.md).
        return self.root / "secrets" / "ledger_secret.sealed"

    @property
    def previous_identities(self) -> Path:
        """``NNNN.service_cert.pem`` and ``NNNN.endorsement.pem`` per identity change (oldest first):
        the previous service certificate and its endorsement by the next service key."""
        return self.root / "previous_service_identities"

    @property
    def node_cert(self) -> Path:
        return self.root / "node" / "node_cert.pem"

    @property
    def node_key(self) -> Path:
        return self.root / "node" / "node_privk.pem"

    @property
    def ledger_dir(self) -> Path:
        return self.root / "ledger"

    @property
    def index_file(self) -> Path:
        return self.root / "index" / "index.sqlite"

    @property
    def view_file(self) -> Path:
        return self.root / "node" / "view"

    @property
    def lock_file(self) -> Path:
        return self.root / "node" / "LOCK"

    def member_file(self, n: int, what: str) -> Path:
        return self.root / f"member{n}_{what}.pem"

    def user_file(self, n: int, what: str) -> Path:
        return self.root / f"user{n}_{what}.pem"


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """``notarium.json``: facts fixed at creation."""

    ledger_id: str
    ledger_type: str
    node_id: str
    hosts: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": CONFIG_FORMAT,
                "ledgerId": self.ledger_id,
                "ledgerType": self.ledger_type,
                "nodeId": self.node_id,
                "hosts": list(self.hosts),
            },
            indent=2,
        )

    @classmethod
    def load(cls, layout: Layout) -> ServiceConfig:
        try:
            obj: dict[str, Any] = json.loads(layout.config.read_text())
        except FileNotFoundError:
            raise ServiceError(f"{layout.root} is not a notarium service directory (no notarium.json)") from None
        except (OSError, ValueError) as exc:
            raise ServiceError(f"cannot read {layout.config}: {exc}") from None
        if obj.get("format") != CONFIG_FORMAT:
            raise ServiceError(f"{layout.config} has format {obj.get('format')!r}, expected {CONFIG_FORMAT}")
        try:
            cfg = cls(str(obj["ledgerId"]), str(obj["ledgerType"]), str(obj["nodeId"]), tuple(obj["hosts"]))
        except (KeyError, TypeError) as exc:
            raise ServiceError(f"{layout.config} is missing {exc}") from None
        if cfg.ledger_type not in LEDGER_TYPES:
            raise ServiceError(f"{layout.config}: unknown ledger type {cfg.ledger_type!r}")
        return cfg
