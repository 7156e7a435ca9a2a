#!/usr/bin/env python3
"""The structure gate of ``make lint``: module size, function size and import cycles.

The package promises one job per module and short functions; this keeps the promise checked.

* no module of ``python/tuned_lens`` longer than ``--max-module-lines`` lines (default 500);
* no function or method body longer than ``--max-function-lines`` lines (default 80), counted
  from the ``def`` line to its last line, without the docstring;
* no import cycle between the package's modules through imports that run at import time
  (module level, outside ``if TYPE_CHECKING:``), and with ``--lazy-cycles`` through imports
  inside functions too. Importing ``a.b.c`` also runs the packages ``a`` and ``a.b``, so those
  are edges as well. A lazy import that is a deliberate back-edge (a convenience method that
  forwards to a module above it, such as ``traj.explore()``) carries the comment
  ``# cycle-ok: <why>`` on its line and is not an edge.

Exit status 0 when all hold, 1 otherwise (each violation printed on one line).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "python" / "tuned_lens"
PRAGMA = "# cycle-ok:"


def module_name(path: Path) -> str:
    """``python/tuned_lens/a/b.py`` -> ``tuned_lens.a.b``; packages map to their name."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _docstring_lines(node: ast.AST) -> int:
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        first = body[0]
        if isinstance(first.value.value, str) and first.end_lineno is not None:
            return first.end_lineno - first.lineno + 1
    return 0


def long_functions(tree: ast.AST, limit: int) -> Iterator[tuple[str, int, int]]:
    """``(name, line, length)`` of every function longer than ``limit`` lines."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno:
            length = node.end_lineno - node.lineno + 1 - _docstring_lines(node)
            if length > limit:
                yield node.name, node.lineno, length


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_nodes(body: list[ast.stmt], lazy: bool = False) -> Iterator[ast.stmt]:
    """Statements that run when the module is imported (descending into if/try, not defs).

    With ``lazy``, also the statements of functions and classes (imports made on first use).
    """
    for stmt in body:
        if lazy and isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield from _import_time_nodes(stmt.body, lazy)
            continue
        if isinstance(stmt, ast.If):
            if not _is_type_checking(stmt.test):
                yield from _import_time_nodes(stmt.body, lazy)
            yield from _import_time_nodes(stmt.orelse, lazy)
        elif isinstance(stmt, (ast.Try, ast.With)):
            for block in (stmt.body, *(getattr(stmt, f, []) for f in ("orelse", "finalbody"))):
                yield from _import_time_nodes(block, lazy)
            for handler in getattr(stmt, "handlers", []):
                yield from _import_time_nodes(handler.body, lazy)
        else:
            yield stmt


def imported_modules(
    tree: ast.Module,
    name: str,
    is_package: bool,
    known: set[str],
    *,
    lazy: bool = False,
    pragma_lines: frozenset[int] = frozenset(),
) -> set[str]:
    """Package modules that ``name`` imports at import time (with ``lazy``: at all)."""
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for stmt in _import_time_nodes(tree.body, lazy):
        if pragma_lines.intersection(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1)):
            continue
        if isinstance(stmt, ast.Import):
            targets = [alias.name for alias in stmt.names]
        elif isinstance(stmt, ast.ImportFrom):
            base = stmt.module or ""
            if stmt.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (stmt.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule when there is one.
            targets = [base] + [f"{base}.{alias.name}" for alias in stmt.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
                found.update(_ancestors(target) & known)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def _ancestors(name: str) -> set[str]:
    """Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first: not a cycle edge."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-module-lines", type=int, default=500)
    parser.add_argument("--max-function-lines", type=int, default=80)
    parser.add_argument(
        "--lazy-cycles",
        action="store_true",
        help="also count imports inside functions (lazy imports) as edges of the import graph",
    )
    args = parser.parse_args(argv)

    files = sorted(PACKAGE.rglob("*.py"))
    trees = {path: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in files}
    known = {module_name(path) for path in files}
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    for path, tree in trees.items():
        rel = path.relative_to(ROOT)
        n_lines = len(path.read_text(encoding="utf-8").splitlines())
        if n_lines > args.max_module_lines:
            problems.append(f"{rel}: {n_lines} lines (limit {args.max_module_lines})")
        for func, line, length in long_functions(tree, args.max_function_lines):
            problems.append(
                f"{rel}:{line}: function {func} is {length} lines (limit {args.max_function_lines})"
            )
        name = module_name(path)
        is_package = path.name == "__init__.py"
        source_lines = path.read_text(encoding="utf-8").splitlines()
        pragmas = frozenset(i + 1 for i, line in enumerate(source_lines) if PRAGMA in line)
        edges = imported_modules(
            tree, name, is_package, known, lazy=args.lazy_cycles, pragma_lines=pragmas
        )
        graph[name] = edges - _ancestors(name)
    for component in cycles(graph):
        problems.append("import cycle: " + " <-> ".join(component))
    for problem in problems:
        print(problem)
    if not problems:
        print(f"structure: {len(files)} modules, no size or import-cycle violations")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
