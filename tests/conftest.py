"""Shared fixtures: compiled built-in domains, sampled environments and synthesized tasks (built once a session)."""

from __future__ import annotations

import pytest

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
