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

MAX_JOIN_LIMIT = 100_000  # the largest join rate (a minute) and number of Pending nodes a setting takes
MAX_PENDING_NODE_TTL_S = 365 * 86_400
MAX_TIMEOUT_S = 86_400.0  # the longest connection timeout a setting takes


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
    # client connections (server/connections.py, docs/design/server.md §Connections): a request's
    # headers must arrive within header_timeout_s of its first byte; its body may pause (and a
    # response go untaken) at most body_timeout_s; a connection without a request closes after
    # idle_timeout_s. At the connection limits (total, lowered to fit the open-files limit; per
    # client address) the newest idle connection is shed to admit a new one
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 60.0
    max_connections: int = 4096
    max_connections_per_address: int = 256
    export_role: Role = Role.ADMINISTRATOR  # least role for the ledger export (/app/ledger/chunks…)
    # POST /node/join: admit nodes of the virtual platform at once, without a governance vote. The
    # virtual platform attests nothing, so this lets any host that can reach the port join and get
    # the service key and ledger secrets: only for test and development (docs/design/ha.md)
    auto_trust_virtual_nodes: bool = False
    # POST /node/join asks no credential (docs/design/ha.md §Limits on joining): at most this many new
    # nodes recorded a minute (as many at once), at most this many Pending at a time, and a Pending
    # node that no Open proposal would trust is removed this many seconds after it first asked
    join_rate_per_minute: int = 10
    max_pending_nodes: int = 16
    pending_node_ttl_s: int = 86_400

    def __post_init__(self) -> None:
        if self.page_size < 1 or self.max_entry_bytes < 1 or self.max_collection_id_bytes < 1:
            raise ValueError("page size and limits must be positive")
        if not 1 <= self.join_rate_per_minute <= MAX_JOIN_LIMIT or not 1 <= self.max_pending_nodes <= MAX_JOIN_LIMIT:
            raise ValueError(f"the join rate and the number of Pending nodes must be from 1 to {MAX_JOIN_LIMIT}")
        if not 1 <= self.pending_node_ttl_s <= MAX_PENDING_NODE_TTL_S:
            raise ValueError(f"the Pending node expiry must be from 1 to {MAX_PENDING_NODE_TTL_S} seconds")
        if self.max_body_bytes < self.max_entry_bytes:
            raise ValueError("max_body_bytes must be at least max_entry_bytes")
        for what, seconds in (
            ("header", self.header_timeout_s),
            ("body", self.body_timeout_s),
            ("idle", self.idle_timeout_s),
        ):
            if not 0 < seconds <= MAX_TIMEOUT_S:
                raise ValueError(f"the {what} timeout must be more than 0 and at most {MAX_TIMEOUT_S:g} seconds")
        if self.max_connections < 1 or self.max_connections_per_address < 1:
            raise ValueError("the connection limits must be positive")


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
