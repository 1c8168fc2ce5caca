"""Sizes a reader can hold: no module of the packages over ``MAX_MODULE_LINES`` lines and no function over
``MAX_FUNCTION_LINES``, unless its docstring (the module's, or the function's) has a line starting with
``Long:`` that says why."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.test_layers import PACKAGES, ROOT

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 50


def _excused(node: ast.Module | ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    doc = ast.get_docstring(node) or ""
    return any(line.strip().startswith("Long:") for line in doc.splitlines())


def _files() -> list[Path]:
    return [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]


def _where(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_no_long_module() -> None:
    long = []
    for path in _files():
        n = len(path.read_text().splitlines())
        if n > MAX_MODULE_LINES and not _excused(ast.parse(path.read_text())):
            long.append(f"{_where(path)}: {n} lines")
    assert not long, f"modules over {MAX_MODULE_LINES} lines, without a 'Long:' reason:\n" + "\n".join(long)


def test_no_long_function() -> None:
    long = []
    for path in _files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None:
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                n = node.end_lineno - first + 1
                if n > MAX_FUNCTION_LINES and not _excused(node):
                    long.append(f"{_where(path)}:{node.lineno} {node.name}: {n} lines")
    why = f"functions over {MAX_FUNCTION_LINES} lines, without a 'Long:' reason:\n"
    assert not long, why + "\n".join(long)


def test_a_long_reason_is_a_docstring_line() -> None:
    fn = ast.parse('def f():\n    """What.\n\n    Long: a table of cases."""\n').body[0]
    assert isinstance(fn, ast.FunctionDef) and _excused(fn)
    fn = ast.parse('def f():\n    """Not Long: here."""\n').body[0]
    assert isinstance(fn, ast.FunctionDef) and not _excused(fn)
