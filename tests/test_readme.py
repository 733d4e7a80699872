"""What the README promises: its Python example runs, `notarium run` does what it says."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from integration.server import clean_env, running
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


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_engine_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (code,) = [b for b in _python_blocks() if "open_ledger" in b]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102  (our own README)
    assert (tmp_path / "my-ledger" / "service_cert.pem").exists()


def test_readme_sdk_example_runs_against_make_run(tmp_path: Path) -> None:
    """The README's Azure SDK snippet, run as written (in the SDK's venv) against `notarium run`."""
    (code,) = [b for b in _python_blocks() if "azure.confidentialledger" in b]
    sdk_python = Path(__file__).resolve().parents[1] / ".venv-acl1" / "bin" / "python"
    assert sdk_python.exists(), "the SDK venv is missing: run `make oracles`"
    with running(tmp_path / "run" / "ledger", command="run") as server:
        script = code.replace("https://127.0.0.1:8443", server.url)
        out = subprocess.run(
            [str(sdk_python), "-I", "-c", script],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert out.returncode == 0, out.stderr
    assert "is committed and its receipt verifies" in out.stdout


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


def test_verbose_serve_writes_json_access_logs(tmp_path: Path) -> None:
    """README: "JSON access logs with -v"."""
    d = tmp_path / "ledger"
    init_service(d)
    with running(d, verbose=True) as server:
        requests.get(f"{server.url}/healthz", verify=str(server.service_cert), timeout=10)
        assert server.stop() == 0
    lines = [line.split("notarium.access: ", 1)[1] for line in server.output if "notarium.access: " in line]
    records = [json.loads(line) for line in lines]
    assert any(r["path"] == "/healthz" and r["status"] == 200 for r in records)


def test_readme_client_example_and_profile(tmp_path: Path) -> None:
    """`make run` prints the profile line; the README's client example runs as written with it."""
    (code,) = [b for b in _python_blocks() if "notarium.client" in b]
    with running(tmp_path / "run" / "ledger", command="run") as server:
        out = "".join(server.output)
        m = re.search(r"export NOTARIUM_PROFILE=(\S+)", out)
        assert m, out
        env = {**clean_env(), "NOTARIUM_PROFILE": m.group(1), "HOME": str(tmp_path)}
        ran = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert ran.returncode == 0, ran.stderr
    assert "committed; receipt verified; trusted tree size" in ran.stdout
    assert json.loads((tmp_path / "run" / "ledger" / "user0_trusted_root.json").read_text())["trusted"]["treeSize"] > 2


# --- the database trail ----------------------------------------------------------------------------

_PG_DSN = re.compile(r"postgresql:///(\w+)")
# what changes from run to run in the example's output: LSNs, TxIds, how many entries the trail has
_VARYING = re.compile(r"[0-9A-F]+/[0-9A-F]+|\b\d+\.\d+\b|\b\d+(?= entries verified)")


def _pg_session() -> list[tuple[str, list[str]]]:
    """The README's ``notarium pg`` shell session: each command line and the output shown after it."""
    (block,) = [b for b in re.findall(r"```console\n(.*?)```", README.read_text(), re.S) if "notarium pg" in b]
    session: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            session.append((line[2:], []))
        elif line.strip():
            session[-1][1].append(line)
    return session


def _shown(line: str) -> re.Pattern[str]:
    """A line of the README's output as a pattern: exact, but for what varies from run to run."""
    pattern, pos = "", 0
    for m in _VARYING.finditer(line):
        varying = m.group()
        generic = r"[0-9A-F]+/[0-9A-F]+" if "/" in varying else r"\d+\.\d+" if "." in varying else r"\d+"
        pattern += re.escape(line[pos : m.start()]) + generic
        pos = m.end()
    return re.compile(pattern + re.escape(line[pos:]))


def test_readme_pg_example_runs_as_written(tmp_path: Path) -> None:
    """The README's database-trail session, command by command, against a real PostgreSQL
    (wal_level = logical) and a real ledger: every command succeeds and prints what the README
    shows (LSNs, TxIds and the number of entries aside). ``createdb`` and ``psql -c`` run their SQL
    on the test's server; ``notarium`` runs as ``python -m notarium`` with the ledger's profile;
    ``postgresql:///NAME`` is that server's database NAME. Like a person at a terminal, the session
    goes on after ``pg capture &`` once the capture agent has taken its baseline."""
    from integration.pgtrail_kit import execute, logical_cluster, stop, trail

    session = _pg_session()
    assert [c.split()[2] for c, _ in session if c.startswith("notarium pg")] == ["init", "capture", "verify"]
    assert any("notarium pg restore" in c for c, _ in session)
    assert [s for c, shown in session if "pg verify" in c for s in shown if ": identical;" in s]
    with logical_cluster() as cluster, trail(cluster, tmp_path, dsn=cluster.dsn("shop")) as t:
        env = dict(t.env)
        agents: list[subprocess.Popen[str]] = []

        def dsn(text: str) -> str:
            return _PG_DSN.sub(lambda m: cluster.dsn(m.group(1)), text)

        def run(argv: list[str], shown: list[str], background: bool) -> None:
            name, *args = argv
            if name == "createdb":
                (db,) = args
                cluster.psql(f'CREATE DATABASE "{db}"')
            elif name == "psql":
                db, *rest = args
                assert rest[::2] == ["-c"] * (len(rest) // 2), argv
                for statement in rest[1::2]:
                    execute(cluster.dsn(db), statement)
            elif name == "export":
                key, _, value = args[0].partition("=")
                env[key] = dsn(value)
            elif name == "notarium":
                command = [sys.executable, "-m", "notarium", *(dsn(a) for a in args)]
                if background:
                    log = (tmp_path / "capture.log").open("a")
                    agents.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True))
                    log.close()
                    dataclasses.replace(t, dsn=env["NOTARIUM_PG_DB"], env=env).wait_baseline()
                    return
                done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
                assert done.returncode == 0, (argv, done.stdout, done.stderr)
                for line in shown:
                    assert _shown(line).search(done.stdout + done.stderr), (line, done.stdout, done.stderr)
                return
            else:
                raise AssertionError(f"the README's session runs a command this test does not know: {argv}")
            assert not shown, (argv, shown)

        try:
            for line, shown in session:
                words = shlex.split(line, comments=True)
                background = words[-1] == "&"
                commands: list[list[str]] = [[]]
                for word in words[:-1] if background else words:
                    if word == "&&":
                        commands.append([])
                    else:
                        commands[-1].append(word)
                for command in commands[:-1]:
                    run(command, [], background=False)
                run(commands[-1], shown, background)
        finally:
            codes = [stop(agent) for agent in agents]
        assert codes == [0], (tmp_path / "capture.log").read_text()
        rows = "SELECT id, item, qty FROM orders ORDER BY id"
        assert execute(cluster.dsn("shop"), rows) == [(1, "tea", 3), (2, "milk", 1)]
        assert execute(cluster.dsn("shop_copy"), rows) == execute(cluster.dsn("shop"), rows)
