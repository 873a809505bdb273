"""ToolGraph: tools as nodes, an edge A->B when an output of A (typed `entity.field`) can fill a parameter of B."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import networkx as nx

from toolgym.domains.model import Domain, Tool

UNREACHABLE = 10**9


class ToolGraph:
    """Dependency graph over a domain's tools (or a subset). User-knowable parameters need no incoming edge."""

    def __init__(self, domain: Domain, tools: Iterable[str] | None = None):
        self.domain = domain
        names = sorted(tools) if tools is not None else sorted(domain.tools)
        self.tools: dict[str, Tool] = {n: domain.tools[n] for n in names}
        self.producers: dict[str, list[str]] = defaultdict(list)
        for t in self.tools.values():
            for semantic in sorted(t.outputs):
                self.producers[semantic].append(t.name)
        self.graph = nx.DiGraph()
        self.graph.add_nodes_from(names)
        for b in self.tools.values():
            for p in b.params:
                for a in self.producers.get(p.semantic or "", []):
                    if a != b.name:
                        if not self.graph.has_edge(a, b.name):
                            self.graph.add_edge(a, b.name, fills=[])
                        self.graph.edges[a, b.name]["fills"].append((p.name, p.semantic))
        self.depth = self._depths()

    def read_producers(self, semantic: str) -> list[str]:
        """Read-only tools that output `semantic` (the only tools chains use to obtain values)."""
        return [t for t in self.producers.get(semantic, []) if not self.tools[t].writes]

    def needs(self, tool: str) -> list[str]:
        """Semantic types a tool must get from another tool before it can run."""
        return sorted({p.semantic for p in self.tools[tool].params if p.needs_producer})

    def satisfied_by(self, tool: str, available: set[str]) -> bool:
        return all(s in available for s in self.needs(tool))

    def outputs_of(self, tools: Iterable[str]) -> set[str]:
        return set().union(*(self.tools[t].outputs for t in tools)) if tools else set()

    def _depths(self) -> dict[str, int]:
        """Fewest dependency levels from user-knowable inputs to each tool (UNREACHABLE if it can never run)."""
        depth = {n: (0 if not self.needs(n) else UNREACHABLE) for n in self.tools}
        changed = True
        while changed:
            changed = False
            for n in self.tools:
                if depth[n] == 0:
                    continue
                best = 0
                for s in self.needs(n):
                    options = [depth[p] for p in self.read_producers(s) if p != n]
                    best = max(best, min(options, default=UNREACHABLE))
                new = best + 1 if best < UNREACHABLE else UNREACHABLE
                if new < depth[n]:
                    depth[n], changed = new, True
        return depth

    def subgraph(self, tools: Iterable[str]) -> ToolGraph:
        return ToolGraph(self.domain, tools)

    def summary(self) -> dict[str, int]:
        return {"tools": self.graph.number_of_nodes(), "edges": self.graph.number_of_edges(),
                "roots": sum(1 for d in self.depth.values() if d == 0),
                "unreachable": sum(1 for d in self.depth.values() if d >= UNREACHABLE)}
