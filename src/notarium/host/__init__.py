"""The ledger host: one HTTPS process serving many ledgers, managed through an ARM-compatible API.

- :mod:`~notarium.host.names`: ledger names (ACL's rule) and principals from ARM requests;
- :mod:`~notarium.host.registry`: what the host knows of each ledger (ARM properties, state, deletion);
- :mod:`~notarium.host.credentials`: the host's TLS CA and server certificate, the operator's token;
- :mod:`~notarium.host.provision`: creating a ledger's service directory and its first users;
- :mod:`~notarium.host.ledgers`: one engine process per ledger and the data-plane app in front of it;
- :mod:`~notarium.host.arm`: the management API (``Microsoft.ConfidentialLedger/ledgers``);
- :mod:`~notarium.host.app`: the host application: management, routing by ``/ledgers/{name}``,
  ``/ledgerIdentity/{name}``;
- :mod:`~notarium.host.runner`: ``notarium host DIR``.
- on PostgreSQL (``notarium host DIR --store``): :mod:`~notarium.host.store` (the registry),
  :mod:`~notarium.host.storehost` (following it with the other host processes),
  :mod:`~notarium.host.replica` (a ledger's node), :mod:`~notarium.host.vault` (a ledger's identity, sealed).

See docs/design/host.md.
"""
