"""Baselines for agentic Heavy Thinking at the same K, over the same forked candidates:

- self-consistency@K: majority vote over the candidates' final database states (`majority_choice`: ties go to the
  most common final answer, then to the lowest index); the winner's actions are committed with its answer.
- best-of-K (oracle): the first candidate that passes the verifier on its own fork (candidate 1 if none does). It
  reads the verifier, which no deployed method can, so it is an upper bound on what choosing a candidate can reach.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from toolgym.agent.rollout import Episode, RolloutConfig
from toolgym.heavy.agentic import Candidate, Decision, HeavyOutcome, commit, majority_choice, task_messages


def oracle_choice(candidates: list[Candidate]) -> int:
    """The first candidate (1-based) that passed the verifier on its own fork; candidate 1 when none did."""
    return next((c.index for c in candidates if c.passed), 1)


def _choose(episodes: Sequence[Episode], candidates: list[list[Candidate]], rule: Callable[[list[Candidate]], int],
            method: str, rollout: RolloutConfig | None, retries: int) -> list[HeavyOutcome]:
    """Commit, per episode, the candidate `rule` picks; the decision reads `<choice>N</choice>` in the record."""
    outcomes = []
    for ep, cands in zip(episodes, candidates):
        chosen = rule(cands)
        outcomes.append(commit(ep, cands, Decision(kind="choice", chosen=chosen), method, task_messages(ep, rollout),
                               f"<choice>{chosen}</choice>", retries))
    return outcomes


def self_consistency(episodes: Sequence[Episode], candidates: list[list[Candidate]],
                     rollout: RolloutConfig | None = None, retries: int = 3) -> list[HeavyOutcome]:
    """Self-consistency@K over given candidates: commit each episode's majority-state candidate."""
    return _choose(episodes, candidates, majority_choice, "self-consistency", rollout, retries)


def best_of_k(episodes: Sequence[Episode], candidates: list[list[Candidate]],
              rollout: RolloutConfig | None = None, retries: int = 3) -> list[HeavyOutcome]:
    """Best-of-K by verifier (oracle upper bound) over given candidates."""
    return _choose(episodes, candidates, oracle_choice, "best-of-k (oracle)", rollout, retries)

