"""Check that the ledger extends what this machine verified before; keep the evidence if not.

The last verified signed root lives in the profile's state file (``"state"``). Run it regularly
(cron): a fork or a rollback by the operator exits 3 and writes the evidence (both signed roots,
and the server's proof if it gave one; each signed root verifies against the service certificate
on its own) to fork-evidence.json. Usage: NOTARIUM_PROFILE=... python examples/detect_fork.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from notarium.client import Client, ForkError, load_profile


def main() -> int:
    with Client.from_profile(load_profile()) as ledger:
        try:
            root = ledger.sync()
        except ForkError as exc:
            Path("fork-evidence.json").write_text(json.dumps(exc.evidence(), indent=2) + "\n")
            print(f"FORK DETECTED ({exc.kind}): {exc}; evidence in fork-evidence.json", file=sys.stderr)
            return 3
    print(f"consistent: the ledger extends what was verified before (now {root.txid}, tree size {root.tree_size})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
