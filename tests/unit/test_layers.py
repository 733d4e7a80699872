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
