"""Recovery shares, the ledger-secret chain and local sealing (docs/design/recovery.md).

Pure cryptography (:mod:`shamir`, :mod:`shares`, :mod:`chain`) has no dependency on the engine,
the server or the CLI; :mod:`sealing` stores secrets locally and :mod:`directory` recovers a
service directory whose sealed secrets are gone.
"""
