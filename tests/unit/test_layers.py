"""The layout tells the architecture: the verification core imports nothing else of notarium."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "notarium"
ALLOWED_IN_VERIFY = {"notarium.errors", "notarium.types"}
THIRD_PARTY_IN_VERIFY = {"cryptography", "cbor2"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_verify_imports_only_stdlib_cryptography_cbor2_and_its_own_types() -> None:
    import sys

    for path in sorted((SRC / "verify").glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "notarium":
                assert name.startswith("notarium.verify") or name in ALLOWED_IN_VERIFY, (path.name, name)
            elif top != "__future__":
                assert top in THIRD_PARTY_IN_VERIFY or top in sys.stdlib_module_names, (path.name, name)


def test_engine_knows_nothing_of_the_cli() -> None:
    for path in sorted((SRC / "ledger").rglob("*.py")):
        assert not any(n.startswith("notarium.cli") for n in _imports(path)), path.name


def test_layers_point_downward() -> None:
    """cli → host → server → cluster → ledger (→ verify): nothing imports a layer above its own."""
    above = {
        "ledger": ("notarium.cluster", "notarium.server", "notarium.host", "notarium.cli"),
        "cluster": ("notarium.server", "notarium.host", "notarium.cli"),
        "server": ("notarium.host", "notarium.cli"),
        "host": ("notarium.cli",),
    }
    for package, forbidden in above.items():
        for path in sorted((SRC / package).rglob("*.py")):
            found = [n for n in _imports(path) if n.startswith(forbidden)]
            assert not found, (path.relative_to(SRC), found)


ALLOWED_IN_PGTRAIL = ("notarium.client", "notarium.errors", "notarium.types", "notarium.verify", "notarium.pgtrail")


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _modules(path: Path) -> set[str]:
    """What a file imports, also ``from notarium import pgtrail`` as ``notarium.pgtrail``."""
    names = _imports(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "notarium":
            names.update(f"notarium.{a.name}" for a in node.names)
    return names - {"notarium"}


def test_pgtrail_is_a_client_of_the_ledger() -> None:
    """The database trail talks to a ledger like any user: of notarium it imports only the client,
    errors, types, the verification core and itself."""
    paths = sorted((SRC / "pgtrail").rglob("*.py"))
    assert paths
    for path in paths:
        found = [n for n in _modules(path) if n.split(".")[0] == "notarium" and not _within(n, ALLOWED_IN_PGTRAIL)]
        assert not found, (path.relative_to(SRC), found)


def test_nothing_below_the_cli_imports_pgtrail() -> None:
    """Only the command line knows the database trail: no layer under it (ledger, cluster, server,
    host, governance, auth, verify, client, nor any other module outside cli/) imports it."""
    for package in ("ledger", "cluster", "server", "host", "governance", "auth", "verify", "client"):
        assert (SRC / package).is_dir(), package
    for path in sorted(SRC.rglob("*.py")):
        part = path.relative_to(SRC).parts[0]
        if part in ("cli", "pgtrail"):
            continue
        found = [n for n in _modules(path) if _within(n, ("notarium.pgtrail",))]
        assert not found, (path.relative_to(SRC), found)


ALLOWED_IN_CONSOLE = (
    "notarium.client",
    "notarium.verify",
    "notarium.host",
    "notarium.errors",
    "notarium.types",
    "notarium.console",
)


def test_console_sits_above_the_client() -> None:
    """The web console is a client of the ledger (and of a host): of notarium it imports only the
    client, the verification core, the host (for --host-dir), errors, types and itself; nothing but
    the command line imports it."""
    paths = sorted((SRC / "console").rglob("*.py"))
    assert paths
    for path in paths:
        found = [n for n in _modules(path) if n.split(".")[0] == "notarium" and not _within(n, ALLOWED_IN_CONSOLE)]
        assert not found, (path.relative_to(SRC), found)
    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).parts[0] in ("cli", "console"):
            continue
        found = [n for n in _modules(path) if _within(n, ("notarium.console",))]
        assert not found, (path.relative_to(SRC), found)


VERIFY_CORE = ("tables", "keys", "cose", "merkle", "leaf", "signature", "receipt", "entry", "chunk")
"""What verifies a receipt (JSON and COSE) and a ledger file, in reading order (notarium.verify's docstring)."""
VERIFY_BEYOND_THE_CORE = ("__init__", "audit", "secrets", "consistency", "standalone")


def test_the_verification_core_is_read_in_one_sitting() -> None:
    """The receipt and ledger-file verifier stays under 1,500 lines, and reads top to bottom: each
    core module imports only core modules before it. A new module of notarium.verify is placed
    on purpose, in the core or beyond it."""
    modules = {path.stem for path in (SRC / "verify").glob("*.py")}
    assert modules == set(VERIFY_CORE) | set(VERIFY_BEYOND_THE_CORE)
    lines = sum(len((SRC / "verify" / f"{name}.py").read_text().splitlines()) for name in VERIFY_CORE)
    assert lines <= 1500, lines
    for i, name in enumerate(VERIFY_CORE):
        used = {n.split(".")[2] for n in _modules(SRC / "verify" / f"{name}.py") if n.startswith("notarium.verify.")}
        used |= {
            a.name
            for node in ast.walk(ast.parse((SRC / "verify" / f"{name}.py").read_text()))
            if isinstance(node, ast.ImportFrom) and node.module == "notarium.verify"
            for a in node.names
        }
        assert used <= set(VERIFY_CORE[:i]), (name, used - set(VERIFY_CORE[:i]))
