"""Environment sampling as in the LongCat-Flash-Thinking-2601 report.

1. Seed chain: pick a target tool (tools already picked by this sampler become less likely) and plan its
   dependency chain; keep it only if it executes on the database.
2. BFS expansion: grow outwards along graph edges, adding only tools whose dependencies are already produced
   by tools in the environment, so every tool stays callable and the database stays consistent.
3. Multi-chain fusion: fuse another executable chain while the environment is structurally simple and other
   valid chains remain easy to find in the rest of the graph.
4. Fallback: top up with satisfiable tools (or more chains) until the environment has at least `min_tools`.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass

import networkx as nx

from toolgym.domains.execute import ToolError
from toolgym.domains.model import Domain
from toolgym.envs.chain import ChainExecutor, ChainFailed, ChainPlan, plan_chain
from toolgym.envs.environment import Environment, ToolCall
from toolgym.envs.graph import UNREACHABLE, ToolGraph


@dataclass(frozen=True)
class SamplerConfig:
    min_tools: int = 20
    target_tools: int = 32
    max_chains: int = 4
    expand_min: int = 3
    expand_max: int = 10
    chain_attempts: int = 40
    execute_attempts: int = 25


class EnvironmentSampler:
    """Samples environments from one domain; deterministic for a given seed and call order."""

    def __init__(self, domain: Domain, seed: int = 0, config: SamplerConfig | None = None, data_seed: int = 0):
        self.domain = domain
        self.seed = seed
        self.config = config or SamplerConfig()
        self.data_seed = data_seed
        self.graph = ToolGraph(domain)
        self.usage: Counter[str] = Counter()
        self.rng = random.Random(seed)
        self.count = 0
        if len(domain.tools) < self.config.min_tools:
            raise ValueError(f"domain {domain.name} has {len(domain.tools)} tools, fewer than min_tools")

    def _targets(self, exclude: set[str]) -> list[str]:
        return [t for t, d in self.graph.depth.items() if 0 < d < UNREACHABLE and t not in exclude]

    def _executable_chain(self, env: Environment, exclude: set[str], rng: random.Random) -> list[ToolCall] | None:
        """Plan chains towards fresh targets until one executes on a fork of `env`."""
        for _ in range(self.config.chain_attempts):
            targets = self._targets(exclude)
            if not targets:
                return None
            target = rng.choices(targets, weights=[1.0 / (1 + self.usage[t]) for t in targets])[0]
            plan = plan_chain(self.graph, target, rng, self.usage)
            calls = execute_plan(env, plan, rng, self.config.execute_attempts)
            if calls is not None:
                self.usage.update(plan.tools)
                return calls
            exclude = exclude | {target}
        return None

    def _expand(self, tools: set[str], rng: random.Random) -> None:
        """Breadth-first growth: only tools whose every dependency is produced inside the environment."""
        budget = rng.randint(self.config.expand_min, self.config.expand_max)
        queue = deque(sorted(tools))
        while queue and budget > 0:
            node = queue.popleft()
            successors = sorted(self.graph.graph.successors(node))
            rng.shuffle(successors)
            for nxt in successors:
                if nxt in tools or budget <= 0:
                    continue
                if self.graph.satisfied_by(nxt, self.graph.outputs_of(tools)):
                    tools.add(nxt)
                    queue.append(nxt)
                    budget -= 1

    def _fuse_probability(self, tools: set[str]) -> float:
        """High while the environment is small and sparse, scaled by how many fresh chains remain available."""
        density = nx.density(self.graph.graph.subgraph(tools))
        complexity = min(1.0, 0.8 * len(tools) / self.config.target_tools + 0.2 * density)
        remaining = self._targets(tools)
        availability = len(remaining) / max(1, len(self.graph.tools) - len(tools))
        return max(0.0, 1.0 - complexity) * availability

    def sample(self) -> Environment:
        rng = random.Random(self.rng.getrandbits(64))
        env_id = f"{self.domain.name}-{self.seed}-{self.count}"
        self.count += 1
        probe = Environment(self.domain, list(self.domain.tools), self.data_seed, env_id)
        chains: list[list[ToolCall]] = []
        tools: set[str] = set()
        try:
            while len(chains) < self.config.max_chains:
                if chains and rng.random() >= self._fuse_probability(tools):
                    break
                calls = self._executable_chain(probe, set(tools), rng)
                if calls is None:
                    break
                chains.append(calls)
                tools.update(c.name for c in calls)
                self._expand(tools, rng)
            if not chains:
                raise RuntimeError(f"no executable tool chain found in domain {self.domain.name}")
            while len(tools) < self.config.min_tools:
                produced = self.graph.outputs_of(tools)
                ready = sorted(t for t in self.graph.tools if t not in tools and self.graph.satisfied_by(t, produced))
                if ready:
                    tools.add(rng.choice(ready))
                    continue
                calls = self._executable_chain(probe, set(tools), rng)
                if calls is None:
                    raise RuntimeError(f"domain {self.domain.name} cannot reach {self.config.min_tools} tools")
                chains.append(calls)
                tools.update(c.name for c in calls)
        finally:
            probe.close()
        return Environment(self.domain, sorted(tools), self.data_seed, env_id, chains)

    def sample_many(self, n: int) -> Iterator[Environment]:
        for _ in range(n):
            yield self.sample()


def execute_plan(env: Environment, plan: ChainPlan, rng: random.Random, attempts: int) -> list[ToolCall] | None:
    """Try concrete executions of `plan` on forks of `env`; the first that succeeds gives the calls."""
    for _ in range(attempts):
        fork = env.fork()
        try:
            steps = ChainExecutor(env.domain, fork.call_or_raise, fork.random_row, rng).run(plan)
        except (ChainFailed, ToolError):
            continue
        finally:
            fork.close()
        return [ToolCall(name=s.tool, arguments=s.args) for s in steps]
    return None
