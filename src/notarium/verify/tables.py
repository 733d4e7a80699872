"""Names of the built-in tables notarium writes and reads (ccf-ledger-format.md §2.5, §9.1)."""

SERVICE_INFO = "public:ccf.gov.service.info"
NODES_INFO = "public:ccf.gov.nodes.info"
NODES_ENDORSED_CERTS = "public:ccf.gov.nodes.endorsed_certificates"
MEMBERS_CERTS = "public:ccf.gov.members.certs"
MEMBERS_INFO = "public:ccf.gov.members.info"
MEMBERS_ENC_KEYS = "public:ccf.gov.members.encryption_public_keys"
USERS_CERTS = "public:ccf.gov.users.certs"
USERS_INFO = "public:ccf.gov.users.info"
SIGNATURES = "public:ccf.internal.signatures"
COSE_SIGNATURES = "public:ccf.internal.cose_signatures"
TREE = "public:ccf.internal.tree"
# recovery (docs/design/recovery.md): singleton JSON records, also kept by the index
RECOVERY_SHARES = "public:ccf.internal.recovery_shares"
HISTORICAL_LEDGER_SECRET = "public:ccf.internal.historical_encrypted_ledger_secret"  # noqa: S105 (a name)
# service identity continuity (docs/design/recovery.md): the previous service certificate (PEM), as
# CCF records it, and notarium's X.509 endorsement of it by the new service key (PEM; CCF keeps a
# COSE endorsement in public:ccf.internal.previous_service_identity_endorsement instead)
PREVIOUS_SERVICE_IDENTITY = "public:ccf.gov.service.previous_service_identity"
PREVIOUS_IDENTITY_ENDORSEMENT = "public:notarium.service.previous_identity_endorsement"
# a replicated service's new ledger secret, sealed to each trusted node's key (node id -> blob)
NODE_LEDGER_SECRETS = "public:notarium.nodes.ledger_secrets"

# notarium's application tables: ledger entries, private by default (docs/design/ledger-format.md)
ENTRIES_PRIVATE = "notarium.entries"
ENTRIES_PUBLIC = "public:notarium.entries"
# public tables whose latest values the index keeps (key → value): governance and notarium's own
STATE_PREFIXES = ("public:ccf.gov.", "public:notarium.")
USERS = "public:notarium.users"
ROLES = "public:notarium.roles"  # user-defined roles (notarium.auth.roles)
JWT_ISSUERS = "public:notarium.jwt.issuers"  # issuer -> its configuration (JSON)
JWT_KEYS = "public:notarium.jwt.keys"  # issuer -> the signing keys in force (a JWK set, JSON)
CONSTITUTION = "public:ccf.gov.constitution"

SINGLETON_KEY = bytes(8)
