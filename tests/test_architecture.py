"""The layout's rules, checked on the source: no import cycles between modules or between
packages, and only the CLI imports a command (docs/ARCHITECTURE.md)."""
from __future__ import annotations

import ast
from pathlib import Path

import simsiam

PACKAGE_ROOT = Path(simsiam.__file__).parent


def _module_name(path: Path) -> str:
    parts = ("simsiam",) + path.relative_to(PACKAGE_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module of the package -> the package's modules it imports (at any depth of its code)."""
    modules = {_module_name(p): p for p in PACKAGE_ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        here = name.split(".") if is_package else name.split(".")[:-1]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = here[:len(here) - (node.level - 1)] if node.level else []
                target = ".".join(base + (node.module.split(".") if node.module else []))
                for alias in node.names:  # `from . import x` names a module; `from .m import f` names m
                    candidate = f"{target}.{alias.name}"
                    found.add(candidate if candidate in modules else target)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as a path, or [] when it has none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_the_module_import_graph_has_no_cycle():
    assert _cycle(_imports()) == []


def test_the_package_import_graph_has_no_cycle():
    """simsiam.config, simsiam.train, ... as nodes; the package root's own __init__ (the public API) aside."""
    packages: dict[str, set[str]] = {}
    for module, targets in _imports().items():
        if module == "simsiam":
            continue
        src = _package(module)
        packages.setdefault(src, set()).update(_package(t) for t in targets if _package(t) != src and t != "simsiam")
    assert _cycle(packages) == []


def test_only_the_cli_imports_a_command():
    offenders = [m for m, targets in _imports().items()
                 if not (m.startswith("simsiam.commands") or m == "simsiam.cli")
                 and any(t.startswith("simsiam.commands") for t in targets)]
    assert offenders == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []
