"""The layers hold: each module is imported in a fresh interpreter and its imports are inspected.

The pure core (value types, the error tree, the math), the decoders and the renderers import
neither Flask nor torch; nothing in ``models/`` imports Flask (or Werkzeug), and neither does the
service layer; ``app.core`` imports nothing from ``models``.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEB = ("flask", "werkzeug")


def modules_under(package: str) -> list[str]:
    """Every module of a package directory (the package itself included)."""
    path = ROOT / package.replace(".", "/")
    return [package] + [f"{package}.{info.name}" for info in pkgutil.iter_modules([str(path)])]


def loaded_after_import(module: str) -> set[str]:
    """Top-level package names in ``sys.modules`` after importing ``module`` in a fresh interpreter."""
    code = ("import importlib, json, sys; importlib.import_module(sys.argv[1]); "
            "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))")
    result = subprocess.run([sys.executable, "-c", code, module], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return set(json.loads(result.stdout))


def loaded_after_all(modules: list[str]) -> set[str]:
    """Packages loaded after importing every module of ``modules`` in one fresh interpreter.

    If the union imports none of a set of packages, no single module does: one interpreter per
    layer is enough, and the per-module run below only names the culprit when one is found.
    """
    code = ("import importlib, json, sys\nfor name in sys.argv[1:]: importlib.import_module(name)\n"
            "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))")
    result = subprocess.run([sys.executable, "-c", code, *modules], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return set(json.loads(result.stdout))


def culprits(modules: list[str], forbidden: set[str]) -> list[str]:
    """The modules that, imported alone, load a forbidden package."""
    return [module for module in modules if loaded_after_import(module) & forbidden]


PURE = [*modules_under("app.core"), *modules_under("app.decode"), *modules_under("app.render")]
NO_WEB = [*modules_under("models"), *modules_under("models.families"), *modules_under("app.service")]


def test_pure_modules_import_neither_flask_nor_torch() -> None:
    forbidden = {*WEB, "torch", "transformers"}
    if loaded_after_all(PURE) & forbidden:
        pytest.fail(f"these pure modules import Flask or torch: {culprits(PURE, forbidden)}")


def test_the_core_imports_nothing_from_the_model_side() -> None:
    core = modules_under("app.core")
    if "models" in loaded_after_all(core):
        pytest.fail(f"these core modules import models: {culprits(core, {'models'})}")


def test_model_side_and_service_never_import_flask() -> None:
    if loaded_after_all(NO_WEB) & set(WEB):
        pytest.fail(f"these modules import Flask or Werkzeug: {culprits(NO_WEB, set(WEB))}")


def test_each_model_side_module_imports_on_its_own() -> None:
    """No import cycle hides behind import order: every module imports first in a fresh interpreter."""
    code = ("import importlib, subprocess, sys\nfailed = []\nfor name in sys.argv[1:]:\n"
            "    r = subprocess.run([sys.executable, '-c', f'import {name}'], capture_output=True)\n"
            "    failed += [name] if r.returncode else []\nprint(failed)")
    result = subprocess.run([sys.executable, "-c", code, *NO_WEB, *modules_under("app.core")], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr[-2000:]


def test_every_module_is_listed_in_some_layer() -> None:
    """A new directory under app/ must be placed in a layer (and so in one of the tests above)."""
    layers = {"core", "decode", "render", "service", "http", "ops", "static"}
    directories = {p.name for p in (ROOT / "app").iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert directories <= layers, sorted(directories - layers)
    top_level = {p.stem for p in (ROOT / "app").glob("*.py")}
    assert top_level == {"__init__", "wsgi"}, sorted(top_level)
