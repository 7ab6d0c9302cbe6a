"""The shape of the package: no import cycles, no reaching into a sibling's private helpers, and the RL
objectives independent of the LLM environment (LEA is the one bridge between them).

Every import statement counts, those inside functions too: an import moved into a function to dodge a
cycle is still a cycle. Imports under ``if TYPE_CHECKING:`` are for type checkers only and never run. The one exception is ``learec/__init__.py``'s lazy ``learec.Recommender``
attribute, a facade that keeps ``import learec`` free of torch.
"""

from __future__ import annotations

import ast
from pathlib import Path

import learec

PACKAGE = Path(learec.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The module that ``name`` (a module, or an attribute of one) lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str) -> list[tuple[str, str]]:
    """``(imported module, imported name)`` of every learec import in ``module``."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    type_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)
                 for statement in node.body for inner in ast.walk(statement)}
    found = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found += [(_owner(a.name), a.name) for a in node.names if a.name.split(".")[0] == "learec"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base.split(".")[0] != "learec":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.append((full if full in MODULES else _owner(base), full))
    return [(target, name) for target, name in found if target is not None and target != module]


def _graph() -> dict[str, set[str]]:
    graph = {module: {target for target, _ in _imports(module)} for module in MODULES}
    graph["learec"] = set()  # the lazy facade (see the module docstring)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_no_module_imports_another_modules_private_names() -> None:
    private = [(module, name) for module in MODULES for target, name in _imports(module)
               if name.rpartition(".")[2].startswith("_") and name != target]
    assert private == []


def test_rl_objectives_do_not_import_the_llm_environment() -> None:
    graph = _graph()
    offending = [(module, target) for module in graph if module.split(".")[:2] == ["learec", "rl"]
                 for target in graph[module] if target.split(".")[:2] in (["learec", "env"], ["learec", "lea"])]
    assert offending == []
