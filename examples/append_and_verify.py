"""Append an entry, wait until it is committed, and verify its receipt against the pinned service
certificate. Usage: NOTARIUM_PROFILE=... python examples/append_and_verify.py "some text"
"""

from __future__ import annotations

import sys

from notarium.client import Client, load_profile


def main(text: str) -> int:
    with Client.from_profile(load_profile()) as ledger:
        done = ledger.append(text, collection="examples")
        receipt = ledger.receipt(done.txid)  # raises VerificationError if it does not verify
        entry = ledger.get(done.txid)
        print(f"{done.txid} {done.status.value}: {entry.contents!r}; receipt verified: {receipt.verified}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "hello from examples/"))
