"""The package's architecture, checked from its imports: a shared core that imports no wing, wings
that import the core and never each other's private names, no import cycles, no function-local
imports of our own modules (those hid cycles), and the recipe registry above the wings.

Run alone with ``python -m pytest -q tests/test_layout.py``; the figures it asserts are the ones the
layout promises (see the README's layout section).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_contrastive"
WINGS = (
    "embeddings", "retrieval", "generation", "faithfulness", "relation", "vision", "composition", "continual",
    "classification",
)  # fmt: skip
BOTTOM = ("_version", "_deprecated")
TOP = ("recipes", "quickstart", "cli", "__main__", "__init__")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(module: str, path: Path) -> list[tuple[str, list[str], bool]]:
    """(imported module, imported names, at module level?) for every import of our package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, list[str], bool]] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(
                    (a.name, [], not local) for a in child.names if a.name.startswith("hf_contrastive")
                )
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(module, child, path.name == "__init__.py")
                if target == "hf_contrastive" or target.startswith("hf_contrastive."):
                    names = [a.name for a in child.names]
                    found.append((target, names, not local))
            visit(child, inner)

    visit(tree, False)
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _expand(target: str, names: list[str], modules: dict[str, Path]) -> list[str]:
    """An import `from pkg import sub` names the submodule `pkg.sub`."""
    out = [target]
    out += [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
    return out


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    edges: dict[str, set[str]] = defaultdict(set)
    imports = {}
    for name, path in modules.items():
        imports[name] = _imports(name, path)
        for target, names, top in imports[name]:
            if top:
                for t in _expand(target, names, modules):
                    if t in modules and t != name:
                        edges[name].add(t)
    return modules, imports, edges


def test_core_imports_no_wing_and_nothing_above_it(graph):
    modules, imports, _ = graph
    bad = [
        (m, t)
        for m in modules
        if _layer(m) == "core"
        for t, _, _ in imports[m]
        if _layer(t) not in ("core", *BOTTOM)
    ]
    assert bad == [], f"core modules import from above the core: {bad}"


def test_wings_import_core_and_only_public_names_of_other_wings(graph):
    modules, imports, _ = graph
    bad = []
    for m in modules:
        wing = _layer(m)
        if wing not in WINGS:
            continue
        for target, names, _ in imports[m]:
            layer = _layer(target)
            if layer in ("core", *BOTTOM) or layer == wing:
                continue
            if layer not in WINGS:
                bad.append((m, target, "imports above the wings"))
                continue
            private = [n for n in names if n.startswith("_")] + [
                p for p in target.split(".") if p.startswith("_")
            ]
            if private:
                bad.append((m, target, f"private names {private}"))
    assert bad == [], f"wing imports that break the layering: {bad}"


def test_wing_graph_is_acyclic(graph):
    modules, imports, _ = graph
    wing_edges: dict[str, set[str]] = defaultdict(set)
    for m in modules:
        for target, _, _ in imports[m]:
            a, b = _layer(m), _layer(target)
            if a in WINGS and b in WINGS and a != b:
                wing_edges[a].add(b)
    seen: dict[str, int] = {}

    def dfs(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for nxt in wing_edges[node]:
            assert seen.get(nxt) != 1, f"wings import each other in a circle: {[*stack, node, nxt]}"
            if nxt not in seen:
                dfs(nxt, [*stack, node])
        seen[node] = 2

    for w in WINGS:
        if w not in seen:
            dfs(w, [])


def test_no_module_level_import_cycles(graph):
    modules, _, edges = graph
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            # A package's __init__ re-exporting its own submodules is not a cycle of the code.
            if v == w.rsplit(".", 1)[0] or w == v.rsplit(".", 1)[0]:
                continue
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in modules:
        if v not in index:
            strongconnect(v)
    assert cycles == [], f"import cycles: {cycles}"


def test_no_function_local_imports_of_our_own_modules(graph):
    modules, imports, _ = graph
    local = [(m, t) for m in modules for t, _, top in imports[m] if not top]
    assert local == [], f"function-local imports of hf_contrastive modules (they hide cycles): {local}"


def test_nothing_inside_imports_the_package_face(graph):
    modules, imports, _ = graph
    bad = [
        (m, names)
        for m in modules
        if m not in ("hf_contrastive", "hf_contrastive.__main__")
        for t, names, _ in imports[m]
        if t == "hf_contrastive" and any(n not in ("_version", "_deprecated") for n in names)
    ]
    assert bad == [], f"modules that import the package face (import what you need from its home): {bad}"


def test_the_recipe_registry_sits_above_the_wings(graph):
    modules, imports, _ = graph
    bad = [
        (m, t) for m in modules if _layer(m) in ("core", *WINGS) for t, _, _ in imports[m] if _layer(t) in TOP
    ]
    assert bad == [], f"core or wing modules importing the recipe registry / CLI / face: {bad}"


def test_docstrings_use_one_dialect():
    """The transformers Markdown style: `code`, [`Name`] links, ``name (`type`, *optional*, defaults to `x`):``
    argument entries; no reST roles or ``double`` backticks."""
    import re

    role = re.compile(r":(?:class|func|meth|attr|obj|data|exc|mod):`")
    double = re.compile(r"``[^`\n]+``")
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=False)
                where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'name', '<module>')}"
                if doc and (role.search(doc) or double.search(doc)):
                    bad.append(where)
                cleaned = ast.get_docstring(node)
                if cleaned and "\nArgs:\n" in "\n" + cleaned:
                    section = cleaned.split("Args:\n", 1)[1].split("\n\n", 1)[0]
                    for line in section.splitlines():
                        entry = re.match(r"^    (\*{0,2}\w+)( \(`[^)]*\)| \(\*optional\*[^)]*\))?:", line)
                        if entry and not entry.group(2):
                            bad.append(f"{where} argument {entry.group(1)} has no (`type`)")
    assert bad == [], f"docstrings outside the transformers Markdown style: {bad[:20]} ({len(bad)} in all)"
