"""Time azure-confidentialledger's verify_receipt (run inside .venv-acl2): reads a JSON file of
{"service_cert": PEM, "items": [{"receipt": ..., "applicationClaims": ...}]}; prints seconds for
all items (deep copies made outside the timed calls: the SDK mutates the receipt)."""

import copy
import json
import sys
import time

from azure.confidentialledger.receipt import verify_receipt

with open(sys.argv[1]) as f:
    data = json.load(f)
cert = data["service_cert"]
items = [(copy.deepcopy(i["receipt"]), copy.deepcopy(i.get("applicationClaims"))) for i in data["items"]]
start = time.perf_counter()
for receipt, claims in items:
    verify_receipt(receipt, cert, application_claims=claims)
print(json.dumps({"seconds": time.perf_counter() - start, "receipts": len(items)}))
