#!/usr/bin/env python3
"""Import cycles between the project's own modules, and its longest modules.

    python3 scripts/import_cycles.py [ROOT] [--max-lines N]

Reads every .py file under ROOT (default: the current directory) except tests/,
bench/, migrations/, .venv/ and var/, resolves each `import` and `from ... import`
(also those inside functions: a lazy import still ties the two modules) to a file
of the project, and prints each strongly connected group of files with the names
that tie them. Exits 1 when there is a cycle or a module longer than --max-lines
(default 400; Django settings modules are exempt), 0 otherwise. Standard library only.

This project's copy also checks the layers of docs/ARCHITECTURE.md: an import
from a lower layer into a higher one is reported like a cycle.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

SKIP = {"tests", "bench", "migrations", ".venv", "var", "node_modules", ".git"}


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if SKIP & set(rel.parts):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            found[".".join(parts)] = path
    return found


def imports(path: Path, name: str, mods: dict[str, Path]) -> dict[str, set[str]]:
    """Target module -> the names this file takes from it."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out: dict[str, set[str]] = {}

    def add(target: str, what: str) -> None:
        while target and target not in mods:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.setdefault(target, set()).add(what)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".") if package else []
                anchor = (
                    anchor[: len(anchor) - (node.level - 1)]
                    if node.level > 1
                    else anchor
                )
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                if sub in mods:
                    add(sub, alias.name)
                else:
                    add(base, alias.name)
    return out


#: 1: saas and queues; 2: the domain apps; 3: HTTP, admin, commands, the facade.
DOMAIN_APPS = {"bookings", "messaging", "notifications"}
TOP_MODULES = {"saas.urls", "saas.wsgi", "saas.asgi", "queues.facade"}
TOP_PARTS = {"api", "management"}


def layer(module: str) -> int:
    parts = module.split(".")
    top = any(p in TOP_PARTS or p.startswith("admin") for p in parts[1:])
    if module in TOP_MODULES or top:
        return 3
    if parts[0] in DOMAIN_APPS:
        return 2
    return 1


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, groups, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=".")
    parser.add_argument("--max-lines", type=int, default=400)
    args = parser.parse_args()
    root = Path(args.root).resolve()
    mods = modules(root)
    edges = {name: imports(path, name, mods) for name, path in mods.items()}
    graph = {name: set(targets) for name, targets in edges.items()}
    cycles = strongly_connected(graph)
    for n, group in enumerate(cycles, 1):
        print(f"cycle {n}: {len(group)} modules")
        members = set(group)
        for a in group:
            for b in sorted(graph[a] & members):
                print(f"  {a} -> {b}: {', '.join(sorted(edges[a][b]))}")
    upward = [
        (a, b, names)
        for a, targets in sorted(edges.items())
        for b, names in sorted(targets.items())
        if layer(b) > layer(a)
    ]
    for a, b, names in upward:
        what = ", ".join(sorted(names))
        print(f"upward import: {a} ({layer(a)}) -> {b} ({layer(b)}): {what}")
    long = sorted(
        (
            (sum(1 for _ in path.open(encoding="utf-8")), str(path.relative_to(root)))
            for path in mods.values()
        ),
        reverse=True,
    )
    over = [
        (lines, p)
        for lines, p in long
        if lines > args.max_lines and not p.endswith("settings.py")
    ]
    for lines, p in over:
        print(f"long module: {p} has {lines} lines (over {args.max_lines})")
    print(
        f"{len(mods)} modules, {len(cycles)} import cycles, {len(upward)} upward"
        f" imports, {len(over)} modules over {args.max_lines} lines"
    )
    return 1 if cycles or upward or over else 0


if __name__ == "__main__":
    sys.exit(main())
