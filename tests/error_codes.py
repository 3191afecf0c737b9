"""Every error code the service can answer with, found in its source, with the statuses it comes with.

openapi.yaml documents the codes; ``tests/test_openapi.py`` compares that list with what this
module finds, in both directions. Four kinds of emitter are read:

1. constructors of the error tree (:mod:`app.core.errors`) anywhere in ``app/`` and ``models/``
   with a ``code=`` keyword: a string literal, or a local name whose values the enclosing
   function assigns (literals, either branch of a conditional, or the first element of the
   tuples a module-level function returns, as ``schemas.validation_error`` does);
2. the same constructors without ``code=``: the class's ``default_code``;
3. the HTTP boundary, :func:`app.http.errors.error_response`, probed with each kind of exception
   it handles (Werkzeug's HTTP errors by status, Gunicorn's body framing errors, anything else);
4. the Gunicorn worker's answers to what its parser refuses (:mod:`app.ops.gunicorn_worker`) and
   the JSON bodies of the shipped nginx config (``deploy/nginx.conf``).

The walk refuses what it cannot read (a ``code=`` computed some other way, a constructor it cannot
resolve, the JSON error body built somewhere new) instead of skipping it: a code that the walk
cannot see would be a code the documentation can silently miss.
"""

from __future__ import annotations

import ast
import importlib
import logging
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.core.errors import AttnmapError

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "models")
NGINX_CONF = ROOT / "deploy" / "nginx.conf"

# The two functions that write the JSON error document, and the one module each may be called from:
# a call anywhere else is an emitter this walk does not know.
BODY_WRITERS = {"error_body": "app/http/errors.py", "json_error": "app/ops/gunicorn_worker.py"}

Codes = dict[str, set[int]]


class UnreadableEmitter(AssertionError):
    """A place that emits an error code in a way this walk cannot read (teach it, do not skip it)."""


def _python_files() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"


def _resolve(module: Any, func: ast.expr) -> Any:
    """The object a call's ``func`` names in ``module`` (``Name`` or dotted ``Attribute``), or None."""
    if isinstance(func, ast.Name):
        return getattr(module, func.id, None)
    if isinstance(func, ast.Attribute):
        owner = _resolve(module, func.value)
        return None if owner is None else getattr(owner, func.attr, None)
    return None


def _error_status(cls: type[AttnmapError]) -> int:
    """The HTTP status the boundary answers an instance of ``cls`` with (made without ``__init__``)."""
    from app.http.errors import status_of

    return status_of(cls.__new__(cls))


def _enclosing_functions(tree: ast.Module) -> dict[ast.AST, ast.FunctionDef | ast.AsyncFunctionDef | None]:
    """Each node of the module mapped to the innermost function around it (None at module level)."""
    owner: dict[ast.AST, ast.FunctionDef | ast.AsyncFunctionDef | None] = {}

    def visit(node: ast.AST, function: ast.FunctionDef | ast.AsyncFunctionDef | None) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            owner[child] = inner
            visit(child, inner)

    visit(tree, None)
    return owner


def _returned_first_elements(tree: ast.Module, name: str, where: str) -> set[str]:
    """String literals a module-level function ``name`` returns as the first element of a tuple."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            found: set[str] = set()
            for ret in ast.walk(node):
                if isinstance(ret, ast.Return):
                    value = ret.value
                    if not (isinstance(value, ast.Tuple) and value.elts and isinstance(value.elts[0], ast.Constant)
                            and isinstance(value.elts[0].value, str)):
                        raise UnreadableEmitter(f"{where}: {name}() returns a code that is not a literal")
                    found.add(value.elts[0].value)
            return found
    raise UnreadableEmitter(f"{where}: the code comes from {name}(), which is not a function of this module")


def _literals(expr: ast.expr, variable: str, tree: ast.Module, where: str) -> set[str]:
    """The string values ``expr`` can take when it is assigned to ``variable``."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return {expr.value}
    if isinstance(expr, ast.IfExp):
        return _literals(expr.body, variable, tree, where) | _literals(expr.orelse, variable, tree, where)
    if isinstance(expr, ast.Name) and expr.id == variable:
        return set()  # ``code = ... if ... else code``: the other assignments supply its values
    raise UnreadableEmitter(f"{where}: cannot read the code assigned to {variable!r}: {ast.unparse(expr)}")


def _assigned_codes(function: ast.FunctionDef | ast.AsyncFunctionDef | None, variable: str, tree: ast.Module,
                    where: str) -> set[str]:
    """Every literal the enclosing function assigns to the local ``variable``."""
    if function is None:
        raise UnreadableEmitter(f"{where}: code={variable} at module level")
    found: set[str] = set()
    assigned = False
    for node in ast.walk(function):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            if isinstance(target, ast.Name) and target.id == variable:
                assigned = True
                found |= _literals(node.value, variable, tree, where)
            elif isinstance(target, ast.Tuple) and any(isinstance(e, ast.Name) and e.id == variable for e in target.elts):
                assigned = True
                index = next(i for i, e in enumerate(target.elts) if isinstance(e, ast.Name) and e.id == variable)
                if isinstance(node.value, ast.Tuple):
                    found |= _literals(node.value.elts[index], variable, tree, where)
                elif (isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name) and index == 0):
                    found |= _returned_first_elements(tree, node.value.func.id, where)
                else:
                    raise UnreadableEmitter(f"{where}: cannot read {ast.unparse(node)}")
    if not assigned:
        raise UnreadableEmitter(f"{where}: code={variable} is never assigned in {function.name}() (a parameter?)")
    return found


def _is_super_init(func: ast.expr) -> bool:
    """``super().__init__``: an error class passing its own ``code`` parameter up, not an emitter."""
    return (isinstance(func, ast.Attribute) and func.attr == "__init__" and isinstance(func.value, ast.Call)
            and isinstance(func.value.func, ast.Name) and func.value.func.id == "super")


def _error_class_names(trees: dict[Path, ast.Module]) -> set[str]:
    """Names of the classes that derive, by name, from ``AttnmapError`` (found without importing:
    importing every module would build the app in ``app.wsgi``)."""
    bases = {node.name: {ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases}
             for tree in trees.values() for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    names = {"AttnmapError"}
    while grown := {name for name, parents in bases.items() if parents & names} - names:
        names |= grown
    return names


def source_codes() -> Codes:
    """Codes raised by error constructors in ``app/`` and ``models/`` (kinds 1 and 2), with statuses."""
    from app.core.errors import AttnmapError

    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in _python_files()}
    error_names = _error_class_names(trees)
    codes: Codes = defaultdict(set)
    for path, tree in trees.items():
        owners = _enclosing_functions(tree)
        module: Any = None
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            where = _where(path, node)
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if name in BODY_WRITERS and str(path.relative_to(ROOT)) != BODY_WRITERS[name]:
                raise UnreadableEmitter(f"{where}: {name}() writes an error body outside {BODY_WRITERS[name]}")
            keyword = next((kw for kw in node.keywords if kw.arg == "code"), None)
            if _is_super_init(node.func) or (keyword is None and name not in error_names):
                continue
            module = module or importlib.import_module(_module_name(path))
            target = _resolve(module, node.func)
            is_error = isinstance(target, type) and issubclass(target, AttnmapError)
            if not is_error:
                raise UnreadableEmitter(f"{where}: {ast.unparse(node.func)}(...) is not an error class of this module")
            if keyword is None:
                codes[target.default_code].add(_error_status(target))
                continue
            value = keyword.value
            if isinstance(value, ast.Name):
                found = _assigned_codes(owners.get(node), value.id, tree, where)
            else:  # a literal, or a conditional between literals
                found = _literals(value, "code=", tree, where)
            for code in found:
                codes[code].add(_error_status(target))
    return dict(codes)


def boundary_codes() -> Codes:
    """Codes :func:`app.http.errors.error_response` gives exceptions outside the tree (kind 3)."""
    from flask import Flask
    from gunicorn.http import errors as gunicorn_errors
    from werkzeug.exceptions import default_exceptions

    from app.http.errors import error_response

    probes: list[BaseException] = [exception() for exception in default_exceptions.values()]
    probes += [gunicorn_errors.InvalidChunkSize(b"zz"), gunicorn_errors.NoMoreData(b""), RuntimeError("boom")]
    codes: Codes = defaultdict(set)
    boundary_log = logging.getLogger("attnmap.errors")
    boundary_log.disabled = True  # the probes are not failures worth a traceback in the test output
    try:
        with Flask(__name__).test_request_context():
            for probe in probes:
                response = error_response(probe)
                codes[response.get_json()["error"]["code"]].add(response.status_code)
    finally:
        boundary_log.disabled = False
    return dict(codes)


def worker_codes() -> Codes:
    """Codes the Gunicorn worker answers its parser's refusals with, and its own 500 (kind 4)."""
    from gunicorn.http import errors as gunicorn_errors

    from app.ops import gunicorn_worker

    classes = [value for value in vars(gunicorn_errors).values()
               if isinstance(value, type) and issubclass(value, BaseException)]
    classes.append(type("SSLError", (OSError,), {}))
    codes: Codes = defaultdict(set)
    for cls in classes:
        known = gunicorn_worker.classify(cls.__new__(cls))
        status, _, code, _ = known if known is not None else gunicorn_worker._INTERNAL
        codes[code].add(status)
    return dict(codes)


_NGINX_BODY = re.compile(r"""return\s+(\d{3})\s+'\{"error":\{"code":"([a-z0-9_]+)\"""")
_NGINX_PASS_THROUGH = re.compile(r"error_page\s+((?:\d{3}\s+)+)@upstream_unavailable")


def nginx_codes() -> Codes:
    """Codes in the JSON bodies of ``deploy/nginx.conf`` (kind 4). The upstream page keeps the
    status nginx chose (``error_page`` without ``=``), so it carries each status routed to it."""
    text = NGINX_CONF.read_text(encoding="utf-8")
    codes: Codes = defaultdict(set)
    for status, code in _NGINX_BODY.findall(text):
        codes[code].add(int(status))
    passed = _NGINX_PASS_THROUGH.search(text)
    if passed:
        codes["upstream_unavailable"] |= {int(status) for status in passed.group(1).split()}
    return dict(codes)


def emitted_codes() -> Codes:
    """Every code any part of the service can answer with, each with its statuses."""
    merged: Codes = defaultdict(set)
    for part in (source_codes(), boundary_codes(), worker_codes(), nginx_codes()):
        for code, statuses in part.items():
            merged[code] |= statuses
    return dict(merged)
