"""Rules of the code base that a linter does not check: no module (tests included) uses another
module's private (`_name`) names, the import contracts hold (import-linter, also run by `make test`), and no file of
the change engine grows past its size limits."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("console", "hosts", "changes", "audit", "api", "accounts", "notifications", "metrics", "remote", "simfleet",
            "agent")
DUNDER_OK = {"_meta"}  # Django's documented Model._meta API


def python_files():
    for package in (*PACKAGES, "tests", "benchmarks"):
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                yield path


def is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(current: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def private_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    current = module_name(path)
    ours = {}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = resolve(current, node, path.name == "__init__.py")
            for alias in node.names:
                if alias.name.startswith("_") and source != current and source.split(".")[0] in PACKAGES:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {source}.{alias.name}")
                if source.split(".")[0] in PACKAGES and is_module(f"{source}.{alias.name}"):
                    ours[alias.asname or alias.name] = f"{source}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    ours[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and node.attr not in DUNDER_OK and isinstance(node.value, ast.Name) and node.value.id in ours):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {ours[node.value.id]}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    found = [use for path in python_files() for use in private_uses(path)]
    assert found == []


def test_the_import_contracts_hold():
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(linter), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]


@pytest.mark.parametrize("path", sorted((ROOT / "changes").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_change_engine_files_and_functions_stay_small(path):
    if "migrations" in path.parts:
        return
    text = path.read_text()
    assert len(text.splitlines()) <= 500, f"{path.relative_to(ROOT)} has more than 500 lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            assert length <= 80, f"{path.relative_to(ROOT)}: {node.name} has {length} lines"
