"""Who is calling, and what they may do: identities, users and roles. No HTTP here."""
