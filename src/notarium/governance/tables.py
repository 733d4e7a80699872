"""The ledger tables governance reads and writes (docs/design/governance.md §Tables).

CCF's names where CCF has the table (ccf-ledger-format.md §9.1), notarium's otherwise.
"""

from notarium.verify import tables as base

MEMBERS_CERTS = base.MEMBERS_CERTS  # member id -> PEM certificate
MEMBERS_INFO = base.MEMBERS_INFO  # member id -> {status, member_data, recovery_role}
MEMBERS_ENC_KEYS = base.MEMBERS_ENC_KEYS  # member id -> PEM RSA public key
MEMBERS_ACKS = "public:ccf.gov.members.acks"  # member id -> {state_digest, acked_at?}
CONSTITUTION = base.CONSTITUTION  # singleton -> the constitution (JSON text)
PROPOSALS = "public:ccf.gov.proposals"  # proposal id -> the proposal as submitted (JSON)
PROPOSALS_INFO = "public:ccf.gov.proposals_info"  # proposal id -> {proposer_id, state, ballots, ...}
HISTORY = "public:ccf.gov.history"  # member id -> the member's last signed request (raw COSE_Sign1)
RECENT_REQUESTS = "public:notarium.gov.recent_requests"  # member id -> [[created_at, digest], ...]
INTENTS = "public:notarium.gov.intents"  # action name -> last recorded request to the operator/engine
SERVICE_CONFIG = "public:ccf.gov.service.config"  # singleton -> {recovery_threshold, ...}
SERVICE_INFO = base.SERVICE_INFO
NODES_INFO = base.NODES_INFO
USERS = base.USERS
USERS_CERTS = base.USERS_CERTS
USERS_INFO = base.USERS_INFO
ROLES = base.ROLES
JWT_ISSUERS = base.JWT_ISSUERS
JWT_KEYS = base.JWT_KEYS
SINGLETON_KEY = base.SINGLETON_KEY
