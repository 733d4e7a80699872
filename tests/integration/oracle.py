"""Run the independent verifiers ("oracles") in their own virtual environments.

Each oracle is a script in ``tests/oracles/`` run as a subprocess with the interpreter of a
dedicated venv (``make oracles`` creates them): the `ccf` package needs ``cryptography<47`` and
``cbor2<6``, and the two Azure SDK versions share one package name (``mgmt`` holds the management
SDK, azure-mgmt-confidentialledger, and ``mgmtbeta`` its newest beta), so none of them may be imported
into notarium's own environment. A missing venv is an error (the test fails), never a skip.

The interpreters run with ``-I`` (isolated: no ``PYTHON*`` variables such as ``PYTHONOPTIMIZE``,
no user site, no script directory on ``sys.path``) because the oracles check with ``assert``.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
ORACLE_SCRIPTS = REPO_ROOT / "tests" / "oracles"
VENVS = {
    "ccf": ".venv-ccf",
    "acl1": ".venv-acl1",
    "acl2": ".venv-acl2",
    "mgmt": ".venv-mgmt",
    "mgmtbeta": ".venv-mgmtbeta",
}
SDK_VERSIONS = {"acl1": "1.1.1", "acl2": "2.0.0b2"}
MGMT_SDK_VERSION = "1.0.1"  # azure-mgmt-confidentialledger in .venv-mgmt
MGMT_BETA_SDK_VERSION = "2.0.0b6"  # its newest beta, in .venv-mgmtbeta (api-version 2026-05-22-preview)
TIMEOUT = 300.0


class OracleUnavailableError(RuntimeError):
    """An oracle's virtual environment is missing."""


class OracleError(RuntimeError):
    """An oracle script crashed or printed something that is not its JSON report."""


def interpreter(oracle: str) -> Path:
    """The Python interpreter of ``oracle``'s venv; raises if the venv is missing."""
    venv = REPO_ROOT / VENVS[oracle]
    python = venv / "bin" / "python"
    if not python.exists():
        raise OracleUnavailableError(
            f"oracle venv {venv} is missing (no {python}); run `make oracles` in {REPO_ROOT} to create it"
        )
    return python


def _run(oracle: str, script: str, args: Sequence[str], stdin: str = "") -> Any:
    cmd = [str(interpreter(oracle)), "-I", str(ORACLE_SCRIPTS / script), *args]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if proc.returncode != 0:
        raise OracleError(f"{script} in {VENVS[oracle]} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise OracleError(f"{script} printed no JSON report: {proc.stdout[:1000]!r} {proc.stderr[-2000:]}") from exc


# --- ccf.ledger.LedgerValidator ---


@dataclass(frozen=True)
class CcfValidation:
    ok: bool
    error: str | None
    transactions: int
    signature_count: int
    last_verified_txid: str
    service_cert_matches: bool
    signature_txids: list[str]
    node_certificates: int
    chunks: list[str]


def ccf_validate(ledger_dir: Path, service_cert: Path) -> CcfValidation:
    """Validate every committed chunk in ``ledger_dir`` with `ccf` (see tests/oracles/ccf_validate.py)."""
    report = _run("ccf", "ccf_validate.py", [str(ledger_dir), str(service_cert)])
    return CcfValidation(**report)


# --- receipts ---


@dataclass(frozen=True)
class Verdict:
    ok: bool
    error: str | None


@dataclass(frozen=True)
class CoseCase:
    receipt: bytes
    claims_digest: bytes
    service_cert_pem: str | None = None  # overrides the service certificate given to the batch


def ccf_verify_cose_receipts(cases: Sequence[CoseCase], service_cert: Path) -> list[Verdict]:
    """``ccf.cose.verify_receipt`` on each case, in one subprocess."""
    items = [
        {
            "receipt_b64": base64.b64encode(c.receipt).decode(),
            "claims_digest_hex": c.claims_digest.hex(),
            "service_cert_pem": c.service_cert_pem,
        }
        for c in cases
    ]
    results = _run("ccf", "ccf_cose_receipt.py", [str(service_cert)], json.dumps(items))
    if len(results) != len(cases):
        raise OracleError(f"ccf_cose_receipt.py answered {len(results)} of {len(cases)} items")
    return [Verdict(r["ok"], r["error"]) for r in results]


@dataclass(frozen=True)
class JsonCase:
    receipt: dict[str, Any]
    application_claims: list[dict[str, Any]] | None = None
    service_cert_pem: str | None = None  # overrides the service certificate given to the batch


def sdk_verify_receipts(oracle: str, cases: Sequence[JsonCase], service_cert: Path) -> list[Verdict]:
    """``azure.confidentialledger.receipt.verify_receipt`` on each case, in one subprocess.

    ``oracle`` is ``"acl1"`` (SDK 1.1.1) or ``"acl2"`` (SDK 2.0.0b2); the installed version is checked.
    """
    items = [
        {"receipt": c.receipt, "application_claims": c.application_claims, "service_cert_pem": c.service_cert_pem}
        for c in cases
    ]
    report = _run(oracle, "sdk_verify_receipt.py", [str(service_cert)], json.dumps(items))
    if report["sdk_version"] != SDK_VERSIONS[oracle]:
        raise OracleError(
            f"{VENVS[oracle]} holds azure-confidentialledger {report['sdk_version']}, "
            f"expected {SDK_VERSIONS[oracle]}; run `make oracles`"
        )
    results = report["results"]
    if len(results) != len(cases):
        raise OracleError(f"sdk_verify_receipt.py answered {len(results)} of {len(cases)} items")
    return [Verdict(r["ok"], r["error"]) for r in results]
