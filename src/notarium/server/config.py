"""Server settings, with ACL-compatible limits (acl-rest-api.md §2.8). Sizes in bytes."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from notarium.auth.rbac import Role

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # both server processes and the CLI

# every api-version the SDKs send (acl-rest-api.md §1); all features are served under each
API_VERSIONS = frozenset(
    {
        "0.1-preview",
        "2022-04-20-preview",
        "2022-05-13",
        "2023-01-18-preview",
        "2024-01-26-preview",
        "2024-07-26-preview",
        "2024-08-22-preview",
        "2024-12-09-preview",
        "2024-07-01",  # CCF's governance API (/gov/..., routes/gov.py)
    }
)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8443
    max_entry_bytes: int = 1 << 20  # ACL's own limit is 8 KiB (8192): set it for strict parity
    max_collection_id_bytes: int = 256
    max_collections: int = 5000
    max_tags: int = 10_000
    max_tag_bytes: int = 256
    max_body_bytes: int = 8 << 20  # a JSON-escaped 1 MiB entry fits
    max_header_bytes: int = 8190  # per header line / field
    page_size: int = 1000
    identity_http_port: int | None = None  # optional plain-HTTP listener for /ledgerIdentity only
    shutdown_timeout_s: float = 10.0
    export_role: Role = Role.ADMINISTRATOR  # least role for the ledger export (/app/ledger/chunks…)
    # POST /node/join: admit nodes of the virtual platform at once, without a governance vote. The
    # virtual platform attests nothing, so this lets any host that can reach the port join and get
    # the service key and ledger secrets: only for test and development (docs/design/ha.md)
    auto_trust_virtual_nodes: bool = False

    def __post_init__(self) -> None:
        if self.page_size < 1 or self.max_entry_bytes < 1 or self.max_collection_id_bytes < 1:
            raise ValueError("page size and limits must be positive")
        if self.max_body_bytes < self.max_entry_bytes:
            raise ValueError("max_body_bytes must be at least max_entry_bytes")


def url(host: str, port: int, scheme: str = "https") -> str:
    """``scheme://host:port``, an IPv6 address in brackets; a wildcard listen address becomes this
    machine's host name (what others can reach it by, if DNS agrees: else pass an address)."""
    if host in ("0.0.0.0", "", "::"):  # noqa: S104  (a comparison, not a bind)
        host = socket.gethostname()
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"{scheme}://{host}:{port}"
