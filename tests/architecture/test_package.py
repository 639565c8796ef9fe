"""The package's shape: no import circle (module-level or function-local) and no module over
the size a reader can hold in mind."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MAX_LINES = 400


def module_files(folder: str = "dlas") -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every module of a package folder."""
    mods = {}
    for path in (ROOT / folder).rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(tree: ast.AST, package: str, with_local: bool) -> set[str]:
    """Modules a file imports (TYPE_CHECKING blocks excluded; function bodies if asked)."""
    found: set[str] = set()
    stack: list[tuple[ast.AST, bool]] = [(tree, True)]
    while stack:
        node, top = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if top or with_local:
                if isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                        base = ".".join([*parts, base] if base else parts)
                    found.update(f"{base}.{a.name}" for a in child.names)
                    found.add(base)
                elif isinstance(child, ast.Import):
                    found.update(a.name for a in child.names)
            is_function = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            stack.append((child, top and not is_function))
    return found


def graph(with_local: bool) -> dict[str, set[str]]:
    mods = module_files()
    edges = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = _imports(ast.parse(path.read_text()), package, with_local)
        # `from pkg import sub` names the submodule; `from pkg import obj` the package.
        edges[name] = {m for m in imported if m in mods and m != name}
        edges[name] -= {m for m in edges[name] if any(d.startswith(m + ".") for d in edges[name])}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                found.append([*path[path.index(dep) :], dep])
            elif not state.get(dep):
                visit(dep, path)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if not state.get(node):
            visit(node, [])
    return found


@pytest.mark.parametrize("with_local", [False, True], ids=["module-level", "with-local"])
def test_no_import_circle_inside_the_package(with_local):
    edges = graph(with_local)
    assert len(edges) > 50 and any(edges.values())  # the graph was really built
    found = cycles(edges)
    assert not found, "import circles: " + "; ".join(" -> ".join(c) for c in found)


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_over_the_size_limit():
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for folder in ("dlas", "hydra_plugins")
        for path in module_files(folder).values()
    }
    too_big = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not too_big, f"modules over {MAX_LINES} lines: {too_big}"
