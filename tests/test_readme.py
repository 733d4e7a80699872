"""What the README promises: its Python example runs, `notarium run` does what it says."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import requests

from integration.server import running
from notarium.auditing import audit, find_target
from notarium.cli import main
from notarium.ledger import init_service

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_shows_the_two_commands() -> None:
    text = README.read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["make run", "make test"]


def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None
    monkeypatch.chdir(tmp_path)
    exec(compile(code.group(1), "README.md", "exec"), {})  # noqa: S102  (our own README)
    assert (tmp_path / "my-ledger" / "service_cert.pem").exists()


def test_run_creates_then_serves_the_service(tmp_path: Path) -> None:
    d = tmp_path / "ledger"
    with running(d, command="run") as server:
        out = "".join(server.output)
        assert "created private ledger" in out
        assert "service certificate" in out
        assert "administrator credentials" in out
        r = requests.get(f"{server.url}/healthz", verify=str(server.service_cert), timeout=10)
        assert r.json() == {"status": "alive"}
        assert server.stop() == 0
    assert os.stat(d / "secrets" / "ledger_secret.sealed").st_mode & 0o077 == 0
    with running(d, command="run") as server:
        assert "created" not in "".join(server.output)
        assert server.stop() == 0
    assert audit(find_target(d)).transactions == 2  # genesis and its signature: serving wrote nothing


def test_audit_json_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "ledger"
    init_service(d)
    assert main(["audit", str(d), "--json"]) == 0
    assert '"ok": true' in capsys.readouterr().out
    assert main(["audit", str(d), "--expect", "99.1000"]) == 1
    assert "truncated ledger" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["audit", str(d), "--expect", "not-a-txid"])
    assert exc.value.code == 2
