"""The scripts in examples/ run as a user would run them (a profile in NOTARIUM_PROFILE) against
a real server, and do what their README says, including detecting a forked ledger."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from integration.server import clean_env, running
from notarium.client import Client
from notarium.ledger import init_service

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def test_examples(tmp_path: Path) -> None:
    honest, forked = tmp_path / "honest", tmp_path / "forked"
    init_service(honest)
    shutil.copytree(honest, forked)  # the same service identity, about to get another history
    state = tmp_path / "trusted.json"
    with running(honest, "--chunk-size", "4000") as srv:
        env = {**clean_env(), "NOTARIUM_PROFILE": str(honest / "user0_profile.json"), "NOTARIUM_STATE": str(state)}
        run = example("append_and_verify.py", "hello", env=env, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert "Committed: 'hello'; receipt verified: True" in run.stdout
        with Client(srv.url, honest / "service_cert.pem", cert=honest / "user0_combined.pem") as c:
            for i in range(30):
                c.append(f"bulk {i}")
        run = example("audit_export.py", str(tmp_path / "copy"), env=env, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert "exported:" in run.stdout
        run = example("detect_fork.py", env=env, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert "consistent" in run.stdout
    with running(forked) as srv, Client(srv.url, forked / "service_cert.pem", cert=forked / "user0_combined.pem") as c:
        for i in range(40):
            c.append(f"another history {i}")
        env = {**clean_env(), "NOTARIUM_PROFILE": str(forked / "user0_profile.json"), "NOTARIUM_STATE": str(state)}
        run = example("detect_fork.py", env=env, cwd=tmp_path)
    assert run.returncode == 3, run.stdout + run.stderr
    assert "FORK DETECTED" in run.stderr
    evidence = json.loads((tmp_path / "fork-evidence.json").read_text())
    assert evidence["kind"] in ("fork", "rollback")
    assert evidence["trusted"]["treeSize"] > 0
