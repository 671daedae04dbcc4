#!/usr/bin/env python3
"""The layer contract of the project's packages, checked from the source (`make lint` runs it).

Layers, bottom to top (a module may import its own layer and the layers below it, nothing above):

  core       scaling.* except the three below: errors, arms, flops, records, spec, paths, atomic,
             store, ladder, config, plan, collect, tables, host, and scaling.executors (which
             the rest of the core does not import)
  trainer    trainer.*   \\  siblings: neither imports the other
  analysis   analysis.*  /
  workflows  scaling.workflows.*  (run_sweep, measure_frontier: the stages as functions)
  commands   scaling.commands.*, scaling.cli  (thin adapters; nothing below imports them)

Every import counts, also one inside a function. Module-level imports must not form a cycle
(a cycle makes some module fail to import alone). Usage: check_layers.py [ROOT]; exit 1 on a
violation, printing one line per offending import.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ("scaling", "trainer", "analysis")
# layer -> the layers it may import
ALLOWED = {
    "core": {"core"},
    "executors": {"core", "executors"},
    "trainer": {"core", "trainer"},
    "analysis": {"core", "analysis"},
    "workflows": {"core", "executors", "trainer", "analysis", "workflows"},
    "commands": {"core", "executors", "trainer", "analysis", "workflows", "commands"},
}


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] in ("trainer", "analysis"):
        return parts[0]
    if len(parts) > 1 and parts[1] in ("commands", "cli"):
        return "commands"
    if len(parts) > 1 and parts[1] in ("workflows", "executors"):
        return parts[1]
    return "core"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, module: str) -> list[tuple[list[str], int, bool]]:
    """(imported project names, line, at module level) for every import statement in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    deferred = set()  # imports that do not run when the module is imported
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or (
            isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        ):
            deferred.update(id(n) for n in ast.walk(node) if n is not node or isinstance(node, ast.If))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the submodule when there is one
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        names = [n for n in names if n.split(".")[0] in PACKAGES]
        if names:
            found.append((names, node.lineno, id(node) not in deferred))
    return found


def resolve(name: str, modules: set[str]) -> str | None:
    """The longest known module that `name` (a module or a name inside one) refers to."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def check(root: Path) -> list[str]:
    files = {module_name(root, p): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}
    modules = set(files)
    problems: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in files.items():
        for names, line, top in imports(path, module):
            targets = {t for t in (resolve(n, modules) for n in names) if t is not None and t != module}
            # `from a import b` imports a too: report the module it names, not also its package
            for target in {t for t in targets if not any(o.startswith(t + ".") for o in targets)}:
                if top:  # importing a.b.c runs a/__init__ and a/b/__init__ first
                    parts = target.split(".")
                    for ancestor in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
                        if (
                            ancestor in modules
                            and not module.startswith(ancestor + ".")
                            and ancestor != module
                        ):
                            graph[module].add(ancestor)
                if layer(target) not in ALLOWED[layer(module)]:
                    rel = path.relative_to(root)
                    problems.append(
                        f"{rel}:{line}: {module} ({layer(module)}) imports {target} ({layer(target)}): "
                        f"{layer(module)} may import only {', '.join(sorted(ALLOWED[layer(module)]))}"
                    )
    for cycle in cycles(graph):
        problems.append(f"import cycle among {', '.join(cycle)} (module-level imports)")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
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
                    found.append(sorted(component))
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1]
    problems = check(root)
    for p in problems:
        print(p)
    if problems:
        print(f"check_layers: {len(problems)} violation(s) of the layer contract (docstring of {__file__})")
        return 1
    print(
        f"check_layers: {sum(1 for pkg in PACKAGES for _ in (root / pkg).rglob('*.py'))} modules, layers respected, no import cycle"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
