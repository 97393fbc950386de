"""The project's import graph: no circles between modules, and the layers point one way.

``core`` is the plain library: it imports nothing of ``desktop_app`` (Qt) or
``captiondesk`` (the command line), not even lazily.  Among all project modules the
imports form no cycle — neither those made while a module loads nor the lazy ones inside
functions — and every module imports on its own.  Type-only imports (``if
TYPE_CHECKING:``) never run, but a cycle through one is still a knot a reader meets, so
the design test counts them too (and scripts' and benchmarks' imports of each other).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
PACKAGES = ("core", "captiondesk", "desktop_app")
#: Folders of scripts run by path: a bare ``import x`` in one may name its neighbour x.py.
SCRIPT_FOLDERS = ("scripts", "benchmarks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _project_modules(packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    modules = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:  # Alembic's scripts run inside Alembic, not imported
                continue
            modules[_module_name(path)] = path
    return modules


MODULES = _project_modules()
#: Every module whose imports the design test reads: the packages, scripts and benchmarks.
ALL_MODULES = _project_modules(PACKAGES + SCRIPT_FOLDERS)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path, *, module_level_only: bool, type_only: bool = False,
             modules: dict[str, Path] = MODULES) -> set[str]:
    """The project modules *module* imports (``from pkg import submodule`` counts as
    ``pkg.submodule``); module level only, or anywhere (lazy imports in functions too);
    with *type_only*, the ``if TYPE_CHECKING:`` imports too.  *modules*: the modules that count."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node) and not type_only:
                visit(node.orelse)  # the TYPE_CHECKING branch never runs
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                for alias in node.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and module_level_only:
                continue  # runs when called, not when the module loads
            else:
                visit([child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)])

    visit(tree.body)
    if package in SCRIPT_FOLDERS:  # run by path, with their own folder on sys.path
        found |= {f"{package}.{name}" for name in found if f"{package}.{name}" in modules}
    return {name for name in found if name in modules and name != module}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One example path per cycle found by depth-first search."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_core_imports_nothing_of_the_app_or_the_command_line() -> None:
    offenders = {
        module: sorted(name for name in _imports(module, path, module_level_only=False)
                       if name.split(".")[0] in ("desktop_app", "captiondesk"))
        for module, path in MODULES.items()
        if module.split(".")[0] == "core"
    }
    assert {m: names for m, names in offenders.items() if names} == {}


def test_command_modules_import_only_the_shared_helpers() -> None:
    """``captiondesk.cli`` imports the command modules; they import ``common``, not ``cli``."""
    for module in ("captiondesk.dataset_commands", "captiondesk.training_commands", "captiondesk.selfcheck_command",
                   "captiondesk.restyle_commands"):
        imported = _imports(module, MODULES[module], module_level_only=False)
        assert {name for name in imported if name.startswith("captiondesk")} <= {"captiondesk.common"}, module


@pytest.mark.parametrize("module_level_only", [True, False], ids=["at-load", "with-lazy-imports"])
def test_no_import_cycles_between_project_modules(module_level_only: bool) -> None:
    graph = {module: _imports(module, path, module_level_only=module_level_only) for module, path in MODULES.items()}
    assert _cycles(graph) == []


@pytest.mark.parametrize("packages", [
    pytest.param(("core", "captiondesk") + SCRIPT_FOLDERS, id="core-cli-scripts-benchmarks"),
    pytest.param(PACKAGES + SCRIPT_FOLDERS, id="with-desktop_app"),
])
def test_no_import_cycles_counting_type_only_and_lazy_imports(packages: tuple[str, ...]) -> None:
    """The design knots the runtime test lets through: a cycle that is type-only or lazy in
    one direction (break it with a Protocol or by moving the shared type down a layer)."""
    modules = {m: p for m, p in ALL_MODULES.items() if m.split(".")[0] in packages}
    graph = {module: _imports(module, path, module_level_only=False, type_only=True, modules=modules)
             for module, path in modules.items()}
    assert _cycles(graph) == []


def test_type_only_and_script_imports_are_counted(tmp_path: Path) -> None:
    """The design test sees a ``TYPE_CHECKING`` import and a script's bare import of its neighbour."""
    script, neighbour = tmp_path / "a.py", tmp_path / "b.py"
    script.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from core.x import Y\n"
                      "def f():\n    import b\n", encoding="utf-8")
    neighbour.write_text("", encoding="utf-8")
    modules = {"scripts.a": script, "scripts.b": neighbour, "core.x": neighbour}
    assert _imports("scripts.a", script, module_level_only=False, type_only=True, modules=modules) == {
        "core.x", "scripts.b"}
    assert _imports("scripts.a", script, module_level_only=False, modules=modules) == {"scripts.b"}


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.endswith("__main__")))
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


def _imports_package(top_level: str, path: Path, *, module_level_only: bool) -> bool:
    """Whether the module at *path* imports the package *top_level* (e.g. ``ray``)."""
    def visit(nodes: list[ast.stmt]) -> bool:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                if visit(node.orelse):
                    return True
                continue
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == top_level for a in node.names):
                return True
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == top_level:
                return True
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and module_level_only:
                continue
            if visit([child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)]):
                return True
        return False

    return visit(ast.parse(path.read_text(encoding="utf-8")).body)


def test_ray_is_an_optional_extra_imported_lazily_by_its_backend_only() -> None:
    """Ray (``captiondesk[ray]``) is imported inside functions of core.captioning.ray_backend
    and nowhere else, so CaptionDesk without ``--ray`` never loads (or needs) it."""
    assert {m for m, p in MODULES.items() if _imports_package("ray", p, module_level_only=False)} == {
        "core.captioning.ray_backend"}
    assert {m for m, p in MODULES.items() if _imports_package("ray", p, module_level_only=True)} == set()


def _named_imports(path: Path, package: str) -> list[tuple[int, str, str]]:
    """Every ``from X import name`` of a project module in *path*, lazy and type-only ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join(anchor + ([node.module] if node.module else []))
        if base.split(".")[0] in PACKAGES:
            found.extend((node.lineno, base, alias.name) for alias in node.names if alias.name != "*")
    return found


#: Where a moved name would be imported from: the product, its tests, scripts and benchmarks.
_IMPORTING_FOLDERS = (*PACKAGES, "tests", *SCRIPT_FOLDERS)


@pytest.mark.parametrize("folder", _IMPORTING_FOLDERS)
def test_every_imported_name_exists(folder: str) -> None:
    """A lazy ``from core.x import name`` inside a function fails only when that code runs;
    after a name moves between modules this finds every stale one at once."""
    missing = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        module = _module_name(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for line, base, name in _named_imports(path, package):
            target = importlib.import_module(base)
            if not hasattr(target, name) and f"{base}.{name}" not in MODULES:
                missing.append(f"{path.relative_to(ROOT)}:{line}: {base} has no {name}")
    assert not missing, "\n".join(missing)
