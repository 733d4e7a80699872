"""Consortium governance: members, COSE-signed proposals and ballots, a declarative constitution.

The core here is pure (no server, no CLI): :mod:`.request` verifies signed requests,
:mod:`.constitution` parses and applies the constitution's rules, :mod:`.actions` validates and
applies proposals' actions to a state view, :mod:`.service` runs requests against a ledger store
(docs/design/governance.md).
"""
