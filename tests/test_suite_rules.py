"""Rules that keep the suite a set of specifications, checked on the source (ast) so they cannot drift back.

* Test modules import nothing from other test modules or from conftest: shared helpers live in
  tests/helpers.py (or a support module such as tests/vision_support.py).
* conftest.py holds fixtures only, and the one ``app``/``client`` pair is defined there: test modules
  get other settings or models through ``make_app``, an indirect ``app`` parameter or a named fixture,
  and build no app at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
TEST_MODULES = sorted(TESTS.glob("test_*.py"))
FORBIDDEN = {path.stem for path in TEST_MODULES} | {"conftest"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imported_modules(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, dotted name) of every import anywhere in the module (functions included), names imported from a package too."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ("tests." if node.level else "") + (node.module or "")
            found.append((node.lineno, base.rstrip(".")))
            found.extend((node.lineno, f"{base.rstrip('.')}.{alias.name}") for alias in node.names)
    return found


def _is_test_module_or_conftest(name: str) -> bool:
    """``tests.test_x``, ``tests.conftest`` and their bare forms (tests/ itself is on sys.path under pytest)."""
    parts = name.split(".")
    if parts[0] == "tests":
        parts = parts[1:]
    return bool(parts) and parts[0] in FORBIDDEN


def _is_fixture(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Attribute) and target.attr == "fixture") or (isinstance(target, ast.Name) and target.id == "fixture")


def _builds_an_app(node: ast.AST) -> bool:
    return any(isinstance(call, ast.Call) and (
        (isinstance(call.func, ast.Name) and call.func.id in {"create_app", "app_for"})
        or (isinstance(call.func, ast.Attribute) and call.func.attr in {"create_app", "app_for"}))
        for call in ast.walk(node))


def test_the_rules_see_the_suite():
    assert len(TEST_MODULES) > 20 and Path(__file__) in TEST_MODULES


@pytest.mark.parametrize("path", TEST_MODULES, ids=lambda path: path.name)
def test_no_test_module_imports_another_or_conftest(path: Path):
    offending = [f"line {line}: {name}" for line, name in _imported_modules(_tree(path)) if _is_test_module_or_conftest(name)]
    assert offending == [], f"{path.name} imports test modules or conftest (move shared helpers to tests/helpers.py)"


@pytest.mark.parametrize("path", TEST_MODULES, ids=lambda path: path.name)
def test_app_and_client_fixtures_are_defined_only_in_conftest(path: Path):
    redefined = [node.name for node in ast.walk(_tree(path)) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                 and node.name in {"app", "client"}]
    assert redefined == [], f"{path.name} redefines {redefined}: use the conftest fixtures (make_app, indirect 'app' parameters)"


@pytest.mark.parametrize("path", TEST_MODULES, ids=lambda path: path.name)
def test_no_app_is_built_at_import_time(path: Path):
    module_level = [node for node in _tree(path).body if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
    assert not any(_builds_an_app(node) for node in module_level), f"{path.name} builds an app at import time"


def test_conftest_holds_fixtures_only():
    tree = _tree(TESTS / "conftest.py")
    not_fixtures = [node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                    and not any(_is_fixture(decorator) for decorator in node.decorator_list)]
    assert not_fixtures == [], f"conftest.py defines helpers {not_fixtures}: put them in tests/helpers.py"
    assigned = [target.id for node in tree.body if isinstance(node, ast.Assign)
                for target in node.targets if isinstance(target, ast.Name)]
    assert assigned == [], f"conftest.py defines module-level values {assigned}: put them in tests/helpers.py"
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert {"app", "client", "make_app"} <= defined
