"""DORA-style asynchronous RL: rollout manager, sample queue, trainer, losses, budget, curriculum."""
