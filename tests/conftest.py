"""Shared fixtures: compiled built-in domains, sampled environments and synthesized tasks (built once a session)."""

from __future__ import annotations

import pytest
import torch

from toolgym.domains import builtin_names, load_domain
from toolgym.envs.sample import EnvironmentSampler
from toolgym.tasks.synthesize import synthesize_task

DOMAINS = builtin_names()
TASKS_PER_DOMAIN = 12


@pytest.fixture(scope="session")
def sampled():
    """Per domain: a list of sampled environments (seed 7)."""
    return {name: list(EnvironmentSampler(load_domain(name), seed=7).sample_many(TASKS_PER_DOMAIN)) for name in DOMAINS}


@pytest.fixture(scope="session")
def tasks(sampled):
    """Per domain: one synthesized task per sampled environment."""
    return {name: [synthesize_task(env, 100 + i) for i, env in enumerate(envs)] for name, envs in sampled.items()}


@pytest.fixture(scope="session")
def tiny_dir(tasks, tmp_path_factory):
    """A tiny model (random weights) with a tokenizer trained on the session's tasks."""
    from toolgym.policy.tiny import build_tiny_model, corpus_from_tasks

    corpus = list(corpus_from_tasks([t for name in sorted(tasks) for t in tasks[name][:4]]))
    return build_tiny_model(corpus, tmp_path_factory.mktemp("tiny"), vocab_size=1000, hidden_size=64, num_layers=2,
                            num_heads=4, max_position_embeddings=8192)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny-model tests: tiny kernels gain nothing from threads, and on a busy
    machine idle threads stall each op for milliseconds. The previous count is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def switchboard(tmp_path_factory):
    """(the four button tasks, a warmed-up switchboard model dir: 64 habit conversations per button, 30 epochs, on
    one thread), built once a session: it reads the asked button and has the wrong habit (rl.switchboard)."""
    from toolgym.rl.switchboard import warm_switchboard

    return _on_one_thread(lambda: warm_switchboard(tmp_path_factory.mktemp("switchboard"), repeats=64, epochs=30))


@pytest.fixture(scope="session")
def judges(tmp_path_factory):
    """(the four button tasks, a warmed-up judge model dir: 16 copies of every choice and verdict conversation with
    the wrong habit, 20 epochs, on one thread), built once a session (rl.switchboard.warm_judges)."""
    from toolgym.rl.switchboard import warm_judges

    return _on_one_thread(lambda: warm_judges(tmp_path_factory.mktemp("judges"), repeats=16, epochs=20))


def _on_one_thread(build):
    """`build()` with one intra-op thread (a session fixture's warm-up), restoring the thread count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build()
    finally:
        torch.set_num_threads(before)
