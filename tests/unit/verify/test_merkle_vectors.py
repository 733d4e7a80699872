"""notarium.verify.merkle against the committed vectors in tests/unit/verify/vectors/merkle/.

The vectors are written by tests/tools/gen_vectors.py from its own naive tree; the first test checks
that regenerating them gives exactly the committed files.
"""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from notarium.ledger.merkle import inclusion_path, perfect_root_over, root_of, serialise_tree
from notarium.verify.merkle import Frontier, PathElement, deserialise_tree, root_from_path

TESTS = Path(__file__).resolve().parents[2]
VECTOR_DIR = TESTS / "unit" / "verify" / "vectors" / "merkle"
GENERATOR = TESTS / "tools" / "gen_vectors.py"


@cache
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("notarium_tests_gen_vectors", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTOR_DIR / name).read_text("utf-8"))
    return doc


def cases(name: str, *, want_err: bool | None = None) -> list[Any]:
    selected = [c for c in load(name)["cases"] if want_err is None or c.get("wantErr", False) == want_err]
    return [pytest.param(c, id=c["desc"].split(":")[0] + f"-{i}") for i, c in enumerate(selected)]


@cache
def leaves(n: int) -> list[bytes]:
    out: list[bytes] = generator().leaves(n)
    return out


def parse_path(path: list[dict[str, str]]) -> list[PathElement]:
    out: list[PathElement] = []
    for element in path:
        ((side, value),) = element.items()
        out.append((side == "left", bytes.fromhex(value)))
    return out


# --- the files are exactly what the generator writes ---


def test_regenerating_gives_the_committed_files() -> None:
    files = generator().generate()
    assert sorted(files) == sorted(p.name for p in VECTOR_DIR.glob("*.json"))
    for name, text in files.items():
        assert (VECTOR_DIR / name).read_text("utf-8") == text, f"{name} is stale: run tests/tools/gen_vectors.py"


def test_generator_check_mode(tmp_path: Path) -> None:
    gen = generator()
    assert gen.main(["--check"]) == 0
    assert gen.main(["--check", "--out", str(tmp_path)]) == 1
    assert gen.main(["--out", str(tmp_path)]) == 0
    assert gen.main(["--check", "--out", str(tmp_path)]) == 0


def test_vector_files_are_small_and_described() -> None:
    total = sum(p.stat().st_size for p in VECTOR_DIR.glob("*.json"))
    assert total < 200_000
    for name in ("roots.json", "inclusion.json", "tree.json"):
        doc = load(name)
        assert doc["desc"]
        assert doc["cases"]
        assert all(c["desc"] for c in doc["cases"])


def test_leaf_rule() -> None:
    assert leaves(2)[1].hex() == "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"


# --- the implementation agrees with the files ---


@pytest.mark.parametrize("case", cases("roots.json"))
def test_roots(case: dict[str, Any]) -> None:
    lv = leaves(case["size"])
    root = bytes.fromhex(case["root"])
    assert root_of(lv) == root
    f = Frontier()
    for leaf in lv:
        f.append(leaf)
    assert f.root() == root


@pytest.mark.parametrize("case", cases("inclusion.json", want_err=False))
def test_inclusion_paths(case: dict[str, Any]) -> None:
    lv = leaves(case["size"])
    path = parse_path(case["path"])
    assert bytes.fromhex(case["leaf"]) == lv[case["index"]]
    assert inclusion_path(case["index"], case["size"], perfect_root_over(lv)) == path
    assert root_from_path(lv[case["index"]], path) == bytes.fromhex(case["root"])


@pytest.mark.parametrize("case", cases("inclusion.json", want_err=True))
def test_inclusion_mutations_do_not_fold_to_the_root(case: dict[str, Any]) -> None:
    leaf = bytes.fromhex(case["leaf"])
    assert root_from_path(leaf, parse_path(case["path"])) != bytes.fromhex(case["root"])


@pytest.mark.parametrize("case", cases("tree.json", want_err=False))
def test_serialised_trees(case: dict[str, Any]) -> None:
    lv = leaves(case["size"])
    flushed = Frontier()
    for leaf in lv[: case["flushed"]]:
        flushed.append(leaf)
    data = bytes.fromhex(case["serialised"])
    assert serialise_tree(flushed, lv[case["flushed"] :]) == data
    assert deserialise_tree(data) == (case["size"], bytes.fromhex(case["root"]))


@pytest.mark.parametrize("case", cases("tree.json", want_err=True))
def test_malformed_serialised_trees(case: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="serialised tree"):
        deserialise_tree(bytes.fromhex(case["serialised"]))
