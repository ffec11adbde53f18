"""The longest chain of imports between the modules of a package (static, read with ast).

    python tools/import_chain.py orchestrator

prints the number of edges and the chain. Every import counts, at module level
or inside a function, so a lazy import cannot hide a layer.
"""
from __future__ import annotations

import ast
import functools
import sys
from pathlib import Path


def module_graph(root: Path) -> dict[str, set[str]]:
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    deps.add(target if target in modules else node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in modules and d != name and not modules[d].name == "__init__.py"}
    return graph


def longest_chain(graph: dict[str, set[str]]) -> list[str]:
    @functools.lru_cache(maxsize=None)
    def longest(node: str, stack: frozenset) -> tuple[str, ...]:
        best: tuple[str, ...] = (node,)
        for dep in graph[node]:
            if dep not in stack:
                chain = (node,) + longest(dep, stack | {node})
                best = chain if len(chain) > len(best) else best
        return best

    return list(max((longest(n, frozenset()) for n in graph), key=len))


if __name__ == "__main__":
    chain = longest_chain(module_graph(Path(sys.argv[1] if len(sys.argv) > 1 else "orchestrator")))
    print(f"{len(chain) - 1} edges: " + " > ".join(chain))
