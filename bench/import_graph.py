"""Import circles in a package, counting every import: module level, inside functions and under TYPE_CHECKING (issue
16's "Measure and note"), and its largest classes and modules.

    python bench/import_graph.py                  # headscope/
    python bench/import_graph.py --package headscope --top 5

An edge A → B is any `import B` / `from B import x` / `from pkg import B` (B a module of the package) anywhere in A's
source; a parent package that Python imports on the way is not an edge. Prints each circle (strongly connected
component of more than one module, with one shortest cycle through it and where each of its imports stands), then
the largest classes and modules by lines.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ImportSite:
    target: str
    line: int
    where: str  # "module", "function" or "TYPE_CHECKING"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(base: str, level: int, module: str | None, current: str, is_package: bool) -> str:
    if level == 0:
        return module or ""
    package = current.split(".") if is_package else current.split(".")[:-1]
    package = package[: len(package) - (level - 1)]
    return ".".join([*package, module] if module else package)


class _Imports(ast.NodeVisitor):
    def __init__(self, current: str, is_package: bool, modules: set[str]) -> None:
        self.current, self.is_package, self.modules = current, is_package, modules
        self.sites: list[ImportSite] = []
        self._function_depth = 0
        self._type_checking = 0

    def _where(self) -> str:
        if self._type_checking:
            return "TYPE_CHECKING"
        return "function" if self._function_depth else "module"

    def _add(self, target: str, line: int) -> None:
        while target and target not in self.modules:  # `import a.b.c` of a non-module attribute: its module
            target = target.rpartition(".")[0]
        if target and target != self.current:
            self.sites.append(ImportSite(target, line, self._where()))

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._function_depth += 1
        self.generic_visit(node)
        self._function_depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        checking = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
        if checking:
            self._type_checking += 1
            for child in node.body:
                self.visit(child)
            self._type_checking -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve("", node.level, node.module, self.current, self.is_package)
        for alias in node.names:
            full = f"{base}.{alias.name}" if base else alias.name
            self._add(full if full in self.modules else base, node.lineno)


def import_graph(package_dir: Path) -> dict[str, list[ImportSite]]:
    root = package_dir.parent
    files = {module_name(path, root): path for path in sorted(package_dir.rglob("*.py"))}
    modules = set(files)
    graph: dict[str, list[ImportSite]] = {}
    for name, path in files.items():
        visitor = _Imports(name, path.name == "__init__.py", modules)
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        graph[name] = visitor.sites
    return graph


def strongly_connected(graph: dict[str, list[ImportSite]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted({site.target for site in graph[start]})))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted({site.target for site in graph.get(child, [])}))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
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


def shortest_cycle(graph: dict[str, list[ImportSite]], members: list[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first inside the component)."""
    inside, start = set(members), members[0]
    parents: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for site in graph[node]:
            if site.target == start:
                path = [node]
                while path[-1] != start:
                    path.append(parents[path[-1]])
                return [*reversed(path), start]
            if site.target in inside and site.target not in parents:
                parents[site.target] = node
                queue.append(site.target)
    return members


def largest(package_dir: Path, top: int) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    classes, modules = [], []
    for path in sorted(package_dir.rglob("*.py")):
        text = path.read_text()
        relative = str(path.relative_to(package_dir.parent))
        modules.append((len(text.splitlines()), relative))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                classes.append((node.end_lineno - node.lineno + 1, f"{relative}:{node.lineno} {node.name}"))
    return sorted(classes, reverse=True)[:top], sorted(modules, reverse=True)[:top]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", default="headscope", help="a package folder under the repository root")
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    package_dir = ROOT / args.package
    graph = import_graph(package_dir)
    edges = sum(len({site.target for site in sites}) for sites in graph.values())
    kinds = {kind: sum(site.where == kind for sites in graph.values() for site in sites)
             for kind in ("module", "function", "TYPE_CHECKING")}
    print(f"{args.package}: {len(graph)} modules, {edges} import edges "
          f"({kinds['module']} module-level, {kinds['function']} function-level, "
          f"{kinds['TYPE_CHECKING']} TYPE_CHECKING import statements)")
    components = strongly_connected(graph)
    print(f"import circles: {len(components)}")
    for members in components:
        cycle = shortest_cycle(graph, members)
        print(f"  {len(members)} modules: {', '.join(members)}")
        for source, target in itertools.pairwise(cycle):
            sites = sorted({(site.line, site.where) for site in graph[source] if site.target == target})
            print(f"    {source} → {target} ({', '.join(f'line {line}, {where}' for line, where in sites)})")
    classes, modules = largest(package_dir, args.top)
    print("largest classes (lines):")
    for lines, name in classes:
        print(f"  {lines:5d}  {name}")
    print("largest modules (lines):")
    for lines, name in modules:
        print(f"  {lines:5d}  {name}")
    return 1 if components else 0


if __name__ == "__main__":
    sys.exit(main())
