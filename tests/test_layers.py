"""The import graph of vidmem's packages: no circle, and no import from a lower layer to a higher one.

Every ``import`` and ``from ... import`` counts, wherever it is written: at the top of a module, inside a
function (a lazy import, which may keep torch out of the API process but must still point down), or under
``if TYPE_CHECKING``. A module that no table below places fails the test: a new module must be given its
layer here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PACKAGES: dict[str, int] = {
    "core": 0,
    "stream": 1,
    "model": 1,
    "workers": 2,
    "api": 3,
    "vidmem": 4,
    "bench": 4,
}
"""Each package's layer, bottom (0) to top: settings, logs and errors; the media and the model; the workers;
the HTTP API; the CLI and the benchmarks. A module imports only from its own layer or lower ones."""

WORKERS: dict[str, int] = {
    # leaves: the queues, the stores (one per Redis key family), the answer channel, metric recording
    "queues": 0,
    "lease": 0,
    "records": 0,
    "live_records": 0,
    "stream_state": 0,
    "frames": 0,
    "answers": 0,
    "metrics": 0,
    "tenants": 0,
    "timewindow": 0,
    "models": 0,
    "broker": 0,
    # what a process needs to run a task: Redis, the stores, a dispatcher, the models
    "runtime": 1,
    # the work itself, and what looks at it
    "pipeline": 2,
    "live": 2,
    "live_reader": 2,
    "service": 2,
    "quotas": 2,
    "health": 2,
    "metrics_collect": 2,
    # where the work runs: the dispatchers, the Celery app and its tasks
    "dispatch": 3,
    "celery_app": 3,
    "tasks": 3,
}
"""The sub-layers of ``workers``, bottom to top (``workers.<name>``)."""


def modules() -> dict[str, Path]:
    """Every module of ``PACKAGES``, by dotted name (a package by its own name: ``workers``)."""
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imported(path: Path, name: str) -> Iterator[str]:
    """The modules that ``path`` (module ``name``) imports, anywhere in it, as absolute dotted names."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if is_pkg else name.split(".")[:-1]
                up = here[: len(here) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            yield base
            yield from (f"{base}.{a.name}" for a in node.names)  # ``from workers import pipeline``


def graph() -> dict[str, set[str]]:
    """Module -> the modules of ``PACKAGES`` it imports (other than itself)."""
    mods = modules()
    return {name: {m for m in imported(path, name) if m in mods and m != name} for name, path in mods.items()}


def layer(module: str) -> tuple[int, int] | None:
    """(package layer, sub-layer) of a module; None when no table places it."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if parts[0] != "workers" or len(parts) == 1:
        return (PACKAGES[parts[0]], 0)
    sub = WORKERS.get(parts[1])
    return None if sub is None else (PACKAGES["workers"], sub)


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in modules() if layer(m) is None)
    assert not unplaced, f"modules without a layer (place them in tests/test_layers.py): {unplaced}"


def test_no_import_circle() -> None:
    found = circles(graph())
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_import_points_up() -> None:
    up = []
    for mod, deps in sorted(graph().items()):
        here = layer(mod)
        for dep in sorted(deps):
            there = layer(dep)
            if here is not None and there is not None and there > here:
                up.append(f"{mod} {here} imports {dep} {there}")
    assert not up, "imports from a lower layer to a higher one:\n" + "\n".join(up)


def test_the_walk_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from workers.runtime import Runtime\n"
        "def f():\n    from workers import pipeline\n    import api.main\n"
    )
    got = set(imported(src, "workers.m"))
    assert {"workers.runtime", "workers.pipeline", "api.main"} <= got
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
