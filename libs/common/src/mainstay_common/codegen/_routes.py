"""A service's HTTP routes, read from its source without running it.

A service builds its FastAPI app inside its start-up (after PostgreSQL and the
broker are up), so there is no OpenAPI document to read without running it.
Its routes are declared statically, though: decorators such as
``@router.get("/tenants/{tenant}/spend")`` on a router made by
``APIRouter(prefix="/v1")``, ``@app.get(...)`` on the app itself, and the odd
``Route("/mcp", ...)`` or ``.mount("/x", ...)`` for a mounted ASGI app. This
module reads exactly those from ``app.py`` and ``handlers/*.py`` with ``ast``,
and the routes every service gets from ``create_http_app`` from
``mainstay_common.http``. A path that is not a literal is an error rather than
a silently missing row.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mainstay_common.codegen._errors import CodegenError

__all__ = ["COMMON_APP_MODULE", "Route", "http_routes", "routes_in_source"]

COMMON_APP_MODULE: Final = "mainstay_common.http._app"
_APP_FACTORY: Final = "create_http_app"
_METHODS: Final = frozenset({"get", "post", "put", "patch", "delete", "head", "options"})
_ANY_METHOD: Final = "*"


@dataclass(frozen=True, order=True)
class Route:
    path: str
    method: str
    summary: str = ""


def http_routes(package_dir: Path) -> list[Route]:
    """Every route of the service whose package is ``package_dir`` (common routes included)."""
    sources = [package_dir / "app.py", *sorted((package_dir / "handlers").glob("*.py"))]
    routes: set[Route] = set()
    uses_common_app = False
    for source in sources:
        if not source.is_file():
            continue
        tree = _parse(source)
        routes.update(_routes(tree, where=str(source)))
        uses_common_app = uses_common_app or _calls(tree, _APP_FACTORY)
    if uses_common_app:
        routes.update(_common_routes())
    return sorted(routes, key=lambda route: (route.path, route.method))


def routes_in_source(text: str, *, where: str = "<source>") -> list[Route]:
    """The routes declared in one module's source text."""
    try:
        tree = ast.parse(text, filename=where)
    except SyntaxError as exc:
        raise CodegenError(f"{where}: cannot parse: {exc}") from exc
    return sorted(_routes(tree, where=where), key=lambda route: (route.path, route.method))


def _common_routes() -> set[Route]:
    spec = importlib.util.find_spec(COMMON_APP_MODULE)
    if spec is None or spec.origin is None:
        raise CodegenError(f"cannot find {COMMON_APP_MODULE} to read the common routes")
    origin = Path(spec.origin)
    return _routes(_parse(origin), where=str(origin))


def _parse(source: Path) -> ast.Module:
    try:
        return ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    except SyntaxError as exc:
        raise CodegenError(f"{source}: cannot parse: {exc}") from exc


def _calls(tree: ast.Module, name: str) -> bool:
    return any(isinstance(node, ast.Call) and _callee(node) == name for node in ast.walk(tree))


def _callee(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


class _Collector(ast.NodeVisitor):
    """Walks a module in source order, so a router's prefix is known before its routes."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.prefixes: dict[str, str] = {}
        self.routes: set[Route] = set()

    def visit_Assign(self, node: ast.Assign) -> None:
        if isinstance(node.value, ast.Call) and _callee(node.value) == "APIRouter":
            prefix = self._keyword(node.value, "prefix") or ""
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.prefixes[target.id] = prefix
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._function(node)

    def visit_Call(self, node: ast.Call) -> None:
        callee = _callee(node)
        if callee == "Route" and isinstance(node.func, ast.Name):
            methods = self._methods(node)
            for method in methods:
                self.routes.add(Route(self._path(node), method))
        elif callee == "mount" and isinstance(node.func, ast.Attribute):
            self.routes.add(Route(self._path(node), _ANY_METHOD))
        self.generic_visit(node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            if not (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)):
                continue
            method = decorator.func.attr
            owner = decorator.func.value
            if method not in _METHODS or not isinstance(owner, ast.Name):
                continue
            prefix = self.prefixes.get(owner.id, "")
            summary = _summary(ast.get_docstring(node) or "")
            self.routes.add(Route(prefix + self._path(decorator), method.upper(), summary))
        self.generic_visit(node)

    def _path(self, call: ast.Call) -> str:
        node = call.args[0] if call.args else _keyword_node(call, "path")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        raise CodegenError(
            f"{self.where}:{call.lineno}: a route path must be a string literal to be documented"
        )

    def _keyword(self, call: ast.Call, name: str) -> str | None:
        node = _keyword_node(call, name)
        if node is None:
            return None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        raise CodegenError(f"{self.where}:{call.lineno}: {name}= must be a string literal")

    def _methods(self, call: ast.Call) -> list[str]:
        node = _keyword_node(call, "methods")
        if node is None:
            return [_ANY_METHOD]
        methods: list[str] = []
        for item in node.elts if isinstance(node, ast.List | ast.Tuple | ast.Set) else [node]:
            if not (isinstance(item, ast.Constant) and isinstance(item.value, str)):
                raise CodegenError(f"{self.where}:{call.lineno}: methods= must be a literal list")
            methods.append(item.value.upper())
        return sorted(methods)


def _keyword_node(call: ast.Call, name: str) -> ast.expr | None:
    return next((keyword.value for keyword in call.keywords if keyword.arg == name), None)


def _routes(tree: ast.Module, *, where: str) -> set[Route]:
    collector = _Collector(where)
    collector.visit(tree)
    return collector.routes


def _summary(docstring: str) -> str:
    """The first paragraph of a docstring on one line, reST literals as Markdown code."""
    paragraph = docstring.strip().split("\n\n", 1)[0]
    return " ".join(paragraph.split()).replace("``", "`")
