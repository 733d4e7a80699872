"""The database trail: a tamper-evident record of a PostgreSQL database in the ledger.

``pg init`` prepares a database (publication, logical replication slot) and records what is
captured; ``pg capture`` writes a baseline and then every committed transaction, in commit order,
exactly once; ``pg verify`` replays the trail (every entry's receipt verified) and compares it
with the live database at one consistent point; ``pg restore`` rebuilds the tables from the
ledger alone; ``pg status`` reports the lag. Design: docs/design/pg-trail.md.

Layer: above the client (it talks to a ledger like any user), beside the CLI's other commands;
nothing of the server, engine or host.
"""
