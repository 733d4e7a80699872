"""Recovery shares, the ledger-secret chain and local sealing (docs/design/recovery.md).

Pure cryptography (:mod:`shamir`, :mod:`shares`, :mod:`chain`) has no dependency on the engine,
the server or the CLI; :mod:`sealing` stores secrets locally and :mod:`records` finds the
recovery records in a ledger's chunk files. This package sits below :mod:`notarium.ledger`, which
uses it (issuing shares, rekeying, and :mod:`notarium.ledger.restore`, which recovers a service
directory whose sealed secrets are gone); it imports nothing of the ledger.
"""
