"""Search tasks from a tool-use environment: generate multi-hop questions over its corpus, pass each through the
filters in order (description, search shortcut, one-hop shortcut, solver, judge), count every filter's rejections,
and wrap the accepted questions as Tasks whose environment record rebuilds the corpus."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

from pydantic import BaseModel, Field

from toolgym.domains.registry import load_domain
from toolgym.envs.environment import Environment, EnvironmentRecord
from toolgym.envs.sample import EnvironmentSampler
from toolgym.search.corpus import CorpusConfig, corpus_for
from toolgym.search.questions import Question, QuestionGenerator
from toolgym.search.roles import gold_calls, judge, one_hop_answer, search_shortcut, solve
from toolgym.tasks.model import Difficulty, Task, UserProfile

FILTERS = ("description", "search_shortcut", "one_hop_shortcut", "solver", "judge")
"""In the order applied: no unique description for the walk; the question's own words find the answer page; a
one-hop solver answers it; the scripted solver cannot; the judge finds it ambiguous or its answer wrong."""


class SearchSynthesisConfig(BaseModel):
    """How questions are drawn: hop counts and their target shares, the corpus, and attempts allowed per question."""

    hops: tuple[int, ...] = (2, 3, 4)
    hop_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    attempts_per_question: int = 40


class SynthesisStats(BaseModel):
    """Per filter: how many questions reached it and how many it rejected; accepted questions per hop count."""

    reached: dict[str, int] = Field(default_factory=lambda: dict.fromkeys(FILTERS, 0))
    rejected: dict[str, int] = Field(default_factory=lambda: dict.fromkeys(FILTERS, 0))
    accepted_by_hops: dict[int, int] = Field(default_factory=dict)

    @property
    def accepted(self) -> int:
        return sum(self.accepted_by_hops.values())

    def rejection_rate(self, name: str) -> float:
        return self.rejected[name] / self.reached[name] if self.reached[name] else 0.0

    def merge(self, other: SynthesisStats) -> None:
        for name in FILTERS:
            self.reached[name] += other.reached[name]
            self.rejected[name] += other.rejected[name]
        self.accepted_by_hops = dict(Counter(self.accepted_by_hops) + Counter(other.accepted_by_hops))


def search_record(env: Environment, corpus: CorpusConfig, question: Question | None = None) -> EnvironmentRecord:
    """The search environment of one question (or of none): the tool-use environment's identity (domain, spec, data
    seed, tools, initial hash) plus the corpus config and the question."""
    params = {"corpus": corpus.model_dump(), **({"question": question.model_dump()} if question else {})}
    return env.record().model_copy(update={
        "id": f"{env.id}-{question.id}" if question else env.id, "family": "search", "params": params})


def next_hops(config: SearchSynthesisConfig, stats: SynthesisStats, rng: random.Random) -> int:
    """The hop count to try next: the one furthest below its share of the accepted questions (longer walks fail
    more often, so drawing by weight alone would under-fill them)."""
    total = sum(config.hop_weights)
    deficit = {h: w / total * (stats.accepted + 1) - stats.accepted_by_hops.get(h, 0)
               for h, w in zip(config.hops, config.hop_weights)}
    most = max(deficit.values())
    return rng.choice([h for h, d in deficit.items() if d == most])


def synthesize_search_tasks(env: Environment, n: int, seed: int, config: SearchSynthesisConfig | None = None,
                            prefix: str = "search") -> tuple[list[Task], SynthesisStats]:
    """Up to `n` validated multi-hop question tasks over `env`'s corpus, and the filters' counts."""
    config = config or SearchSynthesisConfig()
    corpus = corpus_for(search_record(env, config.corpus))
    generator = QuestionGenerator(env.domain, env.reader, corpus)
    rng = random.Random(seed)
    stats, tasks = SynthesisStats(), []
    for attempt in range(n * config.attempts_per_question):
        if len(tasks) == n:
            break
        n_hops = next_hops(config, stats, rng)
        question = generator.generate(rng, n_hops, f"{prefix}-{seed}-{attempt}")
        verdicts = {
            "description": lambda: question is not None,
            "search_shortcut": lambda: not search_shortcut(corpus, question),
            "one_hop_shortcut": lambda: one_hop_answer(corpus, question) != question.answer,
            "solver": lambda: solve(corpus, question) == question.answer,
            "judge": lambda: not judge(env.domain, env.reader, corpus, question),
        }
        for name in FILTERS:
            stats.reached[name] += 1
            if not verdicts[name]():
                stats.rejected[name] += 1
                break
        else:
            stats.accepted_by_hops[question.n_hops] = stats.accepted_by_hops.get(question.n_hops, 0) + 1
            tasks.append(question_task(env, config.corpus, question, seed))
    return tasks, stats


def question_task(env: Environment, corpus_config: CorpusConfig, question: Question, seed: int) -> Task:
    """A Task for an accepted question: the answer is the required fact; the gold chain is the synthesis path. Its
    domain label is `<domain>-search`, so pass rates and oversampling keep search apart from the domain's tool tasks."""
    record = search_record(env, corpus_config, question)
    gold = gold_calls(corpus_for(record), question)
    return Task(id=question.id, domain=f"{env.domain.name}-search", seed=seed, env=record, instruction=question.text,
                user=UserProfile(), gold_chain=gold, expected_changes=[], expected_state_hash="",
                required_answers=[question.answer],
                difficulty=Difficulty(chain_length=len(gold), n_writes=0, n_env_tools=3, n_targets=question.n_hops))


def build_search_suite(domains: list[str], n: int, seed: int = 0, per_env: int = 25,
                       config: SearchSynthesisConfig | None = None,
                       on_env: Callable[[str, int], None] | None = None) -> tuple[list[Task], dict[str, SynthesisStats]]:
    """About `n` validated questions spread evenly over `domains` (each sampled environment gives up to `per_env`),
    with each domain's filter counts. `on_env(domain, tasks_added)` reports progress."""
    rng = random.Random(seed)
    tasks: list[Task] = []
    stats: dict[str, SynthesisStats] = {}
    for i, domain in enumerate(domains):
        want = n // len(domains) + (1 if i < n % len(domains) else 0)
        sampler = EnvironmentSampler(load_domain(domain), seed=rng.getrandbits(32))
        stats[domain], made, barren = SynthesisStats(), [], 0
        while len(made) < want and barren < 3:
            env = sampler.sample()
            try:
                new, env_stats = synthesize_search_tasks(env, min(per_env, want - len(made)), rng.getrandbits(32),
                                                         config, prefix=f"search-{env.id}")
            finally:
                env.close()
            barren = 0 if new else barren + 1
            made += new
            stats[domain].merge(env_stats)
            if on_env:
                on_env(domain, len(new))
        tasks += made
    return tasks, stats
